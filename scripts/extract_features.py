"""Extract cell features into an HDF5 cell store; see aecfe/cli/extract_features.py."""
from aecfe.cli import run_program
from aecfe.cli.extract_features import main

raise SystemExit(run_program(main))
