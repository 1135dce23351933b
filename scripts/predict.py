"""Classify the cells of new images with a model bundle; see aecfe/cli/predict.py."""
from aecfe.cli import run_program
from aecfe.cli.predict import main

raise SystemExit(run_program(main))
