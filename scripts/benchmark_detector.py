"""Benchmark Detector.detect against the bare model forward; see aecfe/cli/benchmark_detector.py."""
from aecfe.cli.benchmark_detector import main

raise SystemExit(main())
