"""Benchmark the extraction path; see aecfe/cli/benchmark_extraction.py."""
from aecfe.cli import run_program
from aecfe.cli.benchmark_extraction import main

raise SystemExit(run_program(main))
