"""Benchmark the extraction path; see aecfe/cli/benchmark_extraction.py."""
from aecfe.cli.benchmark_extraction import main

raise SystemExit(main())
