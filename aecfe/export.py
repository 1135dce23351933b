"""Export a cell store's cells and one embedding to AnnData (``.h5ad``), for scanpy and the single-cell tools.

The ``.h5ad`` holds (N cells, D embedding dimensions):

* ``X`` (N, D) float32: the embedding; also in ``obsm["X_<embedding>"]`` (scanpy's convention for a
  representation: ``sc.pp.neighbors(adata, use_rep="X_ae")``);
* ``obs`` (one row per cell, index the store's ``cell_id`` as text): ``image_path``, ``domain`` and ``label``
  (categorical; label missing for unlabelled cells), ``cell_index``, the box ``x1 y1 x2 y2``, detector ``score``,
  ``mask_area`` and ``image_group`` (the image's content hash, :meth:`aecfe.store.CellStore.cell_groups`);
* ``var`` index ``<embedding>_0 .. <embedding>_{D-1}``;
* ``uns["aecfe"]``: the store path, the embedding name, its attributes and the store's provenance (as JSON
  text) and the aecfe version.

``anndata`` is an optional extra (``pip install aecfe[anndata]``); :func:`anndata_parts` builds the pieces
without it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from aecfe import __version__
from aecfe.errors import InputError
from aecfe.store import CellStore


def anndata_parts(store_path: str | os.PathLike, embedding: str) -> dict:
    """``{"X", "obs", "var", "obsm", "uns"}`` for ``anndata.AnnData(**parts)`` (module docstring)."""
    with CellStore.open(store_path) as store:
        X = np.ascontiguousarray(store.embedding(embedding), dtype=np.float32)
        cells = store.cells()
        groups = store.cell_groups()
        attrs = store.embedding_attrs(embedding)
        provenance = store.provenance
    obs = cells.drop(columns=["cell_id"]).copy()
    obs.index = pd.Index(cells["cell_id"].astype(str), name="cell_id")
    obs["image_path"] = obs["image_path"].astype(str)
    for column in ("domain", "label"):
        obs[column] = pd.Categorical(obs[column].astype(object).where(obs[column].notna(), None))
    obs["image_group"] = np.asarray(groups, dtype=str)
    var = pd.DataFrame(index=pd.Index([f"{embedding}_{i}" for i in range(X.shape[1])], name="dimension"))
    uns = {"aecfe": {"store": str(Path(store_path).resolve()), "embedding": embedding, "aecfe_version": __version__,
                     "embedding_attrs_json": json.dumps(attrs, sort_keys=True, default=str),
                     "store_provenance_json": json.dumps(provenance, sort_keys=True, default=str)}}
    return {"X": X, "obs": obs, "var": var, "obsm": {f"X_{embedding}": X.copy()}, "uns": uns}


def export_anndata(store_path: str | os.PathLike, embedding: str, out: str | os.PathLike) -> Path:
    """Write the store's cells and ``embedding`` as ``out`` (``.h5ad``, gzip-compressed); returns ``out``."""
    try:
        import anndata
    except ImportError as error:
        raise InputError("AnnData export needs the optional package anndata: pip install 'aecfe[anndata]'") from error
    adata = anndata.AnnData(**anndata_parts(store_path, embedding))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out, compression="gzip")
    return out
