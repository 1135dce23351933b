"""Training-step benchmark of the deep DG algorithms on CPU; see aecfe/cli/benchmark_dg.py."""
from aecfe.cli import run_program
from aecfe.cli.benchmark_dg import main

raise SystemExit(run_program(main))
