"""Benchmark the HDF5 cell store (see aecfe/cli/benchmark_store.py)."""
from aecfe.cli import run_program
from aecfe.cli.benchmark_store import main

raise SystemExit(run_program(main))
