"""Benchmark AE-CFE autoencoder training and encoding; see aecfe/cli/benchmark_autoencoder.py."""
from aecfe.cli import run_program
from aecfe.cli.benchmark_autoencoder import main

raise SystemExit(run_program(main))
