"""Export a cell store's cells and one embedding to AnnData (.h5ad) for scanpy (needs ``pip install aecfe[anndata]``).

Usage::

    aecfe-export-anndata runs/cells.h5 --embedding ae --out runs/cells.h5ad

Then, in Python: ``adata = anndata.read_h5ad("runs/cells.h5ad"); sc.pp.neighbors(adata, use_rep="X_ae")``.
The embedding is ``X`` and ``obsm["X_<embedding>"]``; the cells' image, domain, label, box and score are ``obs``
(see :mod:`aecfe.export`).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aecfe.cli import command, run_program


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("store", type=Path, help="cell store (HDF5)")
    parser.add_argument("--embedding", required=True, help="embedding name in the store")
    parser.add_argument("--out", type=Path, required=True, help=".h5ad file to write")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    from aecfe.export import export_anndata

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = export_anndata(args.store, args.embedding, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program(main))
