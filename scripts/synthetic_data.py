"""The synthetic labs on disk (class folders and COCO fields); see aecfe/cli/synthetic_data.py."""
from aecfe.cli import run_program
from aecfe.cli.synthetic_data import main

raise SystemExit(run_program(main))
