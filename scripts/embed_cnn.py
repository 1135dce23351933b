"""The ResNet-RF baseline: CNN features of every crop of a cell store; see aecfe/cli/embed_cnn.py."""
from aecfe.cli import run_program
from aecfe.cli.embed_cnn import main

raise SystemExit(run_program(main))
