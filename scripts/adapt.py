"""Adapt a model bundle to a new lab; see aecfe/cli/adapt.py."""
from aecfe.cli import run_program
from aecfe.cli.adapt import main

raise SystemExit(run_program(main))
