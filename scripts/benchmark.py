"""Every method side by side with costs, one report; see aecfe/cli/benchmark.py."""
from aecfe.cli import run_program
from aecfe.cli.benchmark import main

raise SystemExit(run_program(main))
