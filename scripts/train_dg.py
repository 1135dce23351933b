"""Deep domain-generalization baselines on image domains; see aecfe/cli/train_dg.py."""
from aecfe.cli.train_dg import main

raise SystemExit(main())
