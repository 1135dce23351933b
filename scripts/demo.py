"""The embedded default end to end (``make demo``); see aecfe/cli/demo.py."""
from aecfe.cli import run_program
from aecfe.cli.demo import main

raise SystemExit(run_program(main))
