"""Deep domain-generalization baselines on image domains; see aecfe/cli/train_dg.py."""
from aecfe.cli import run_program
from aecfe.cli.train_dg import main

raise SystemExit(run_program(main))
