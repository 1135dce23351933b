"""Training-step benchmark of the deep DG algorithms on CPU; see aecfe/cli/benchmark_dg.py."""
from aecfe.cli.benchmark_dg import main

raise SystemExit(main())
