"""Every method side by side with costs, one report; see aecfe/cli/compare.py."""
from aecfe.cli import run_program
from aecfe.cli.compare import main

raise SystemExit(run_program(main))
