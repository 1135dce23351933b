"""Train the AE-CFE autoencoder on a cell store; see aecfe/cli/train_autoencoder.py."""
from aecfe.cli import run_program
from aecfe.cli.train_autoencoder import main

raise SystemExit(run_program(main))
