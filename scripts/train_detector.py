"""Train a Mask R-CNN white-cell detector; see aecfe/cli/train_detector.py."""
from aecfe.cli.train_detector import main

raise SystemExit(main())
