"""The synthetic labs on disk (class folders and COCO fields); see aecfe/cli/synthetic_data.py."""
from aecfe.cli.synthetic_data import main

raise SystemExit(main())
