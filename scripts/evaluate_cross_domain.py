"""Cross-domain evaluation of classifier heads on a cell store; see aecfe/cli/evaluate_cross_domain.py."""
from aecfe.cli import run_program
from aecfe.cli.evaluate_cross_domain import main

raise SystemExit(run_program(main))
