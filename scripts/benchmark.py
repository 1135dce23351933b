"""Former name of scripts/compare.py (every method side by side with costs, one report), kept working."""
from aecfe.cli import run_program
from aecfe.cli.compare import main

raise SystemExit(run_program(main, prog="aecfe-compare"))
