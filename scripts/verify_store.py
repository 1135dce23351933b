"""Check cell stores for damage; see aecfe/cli/verify_store.py."""
from aecfe.cli import run_program
from aecfe.cli.verify_store import main

raise SystemExit(run_program(main))
