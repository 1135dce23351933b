"""Export a cell store's cells and one embedding to AnnData; see aecfe/cli/export_anndata.py."""
from aecfe.cli import run_program
from aecfe.cli.export_anndata import main

raise SystemExit(run_program(main))
