"""Every method side by side with costs, one report; see aecfe/cli/benchmark.py."""
from aecfe.cli.benchmark import main

raise SystemExit(main())
