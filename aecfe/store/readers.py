"""The evaluation's reader: a store's labelled cells as ``(X, y, domains[, groups])`` arrays.

``features`` is an embedding name of the store, or ``roi`` / ``crops`` (:data:`STAGES`) for the flattened RoI
features / crops. Cells without a label are left out (the count is logged).
"""
from __future__ import annotations

import logging
import os

import numpy as np

from aecfe.errors import InputError
from aecfe.store.core import CellStore

logger = logging.getLogger(__name__)

STAGES = ("roi", "crops")
"""``features`` values that name the store's per-cell stages instead of an embedding."""


def load_features(store: CellStore, features: str | None, *, with_groups: bool = False) -> tuple[np.ndarray, ...]:
    """``(X (N, D) float32, y (N,) object, domains (N,) str)`` of the labelled cells of an open store, and
    with ``with_groups`` also ``groups`` (N,): each cell's :meth:`~aecfe.store.CellStore.cell_groups` key.

    ``features``: an embedding name, ``"roi"`` / ``"crops"`` (flattened), or None for the store's only
    embedding. Cells whose label is missing are left out (logged).
    """
    cells = store.cells()
    labels = cells["label"].astype(object).where(cells["label"].notna(), None).to_numpy()
    labelled = np.flatnonzero([label is not None and label != "" for label in labels])
    if len(labelled) < len(cells):
        logger.info("%s: %d of %d cells have no label and are left out", store.path, len(cells) - len(labelled),
                    len(cells))
    if len(labelled) == 0:
        raise InputError(f"{store.path}: no labelled cells to evaluate")
    if features is None:
        names = store.embedding_names()
        if len(names) != 1:
            raise InputError(f"{store.path}: choose the features with --features: embeddings {names} or "
                             f"{' / '.join(STAGES)}")
        features = names[0]
    if features == "roi":
        X = store.roi(labelled)
    elif features == "crops":
        X = store.crops(labelled)
    else:
        X = store.embedding(features, labelled)
    X = np.asarray(X, dtype=np.float32).reshape(len(labelled), -1)
    logger.info("%s: features %r, %d labelled cells x %d dims (%.1f MB)", store.path, features, X.shape[0],
                X.shape[1], X.nbytes / 2**20)
    loaded = X, labels[labelled], cells["domain"].to_numpy(dtype=str)[labelled]
    return (*loaded, store.cell_groups()[labelled]) if with_groups else loaded


def read_features(store_path: str | os.PathLike, features: str | None, *,
                  with_groups: bool = False) -> tuple[np.ndarray, ...]:
    """:func:`load_features` of the store at ``store_path`` (opened read-only, then closed)."""
    with CellStore.open(store_path, "r") as store:
        return load_features(store, features, with_groups=with_groups)
