"""Train a Mask R-CNN white-cell detector; see aecfe/cli/train_detector.py."""
from aecfe.cli import run_program
from aecfe.cli.train_detector import main

raise SystemExit(run_program(main))
