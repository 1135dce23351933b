"""Benchmark Detector.detect against the bare model forward; see aecfe/cli/benchmark_detector.py."""
from aecfe.cli import run_program
from aecfe.cli.benchmark_detector import main

raise SystemExit(run_program(main))
