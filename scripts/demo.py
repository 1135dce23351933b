"""The embedded default end to end (``make demo``); see aecfe/cli/demo.py."""
from aecfe.cli.demo import main

raise SystemExit(main())
