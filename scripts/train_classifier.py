"""Train a classifier head on a store's embedding into a model bundle; see aecfe/cli/train_classifier.py."""
from aecfe.cli import run_program
from aecfe.cli.train_classifier import main

raise SystemExit(run_program(main))
