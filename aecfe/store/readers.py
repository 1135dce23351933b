"""The labelled cells of a store as every method's input: one selection (:func:`labelled_cells`) for the
embedding heads and the deep baselines, so that both see the same cells, labels, domains and split groups.

* :func:`load_features` / :func:`read_features` — the heads' ``(X, y, domains[, groups])`` arrays; ``features``
  is an embedding name of the store, or ``roi`` / ``crops`` (:data:`STAGES`) for the flattened RoI features /
  crops. Cells without a label are left out (the count is logged).
* :func:`load_cell_crops` — those cells' crops as a :class:`classifiers.dg.crops.CropDataset` for the deep
  baselines, relabelled into a scheme like the heads' labels (cells the scheme drops are left out, in the same
  order as the heads leave them out) and grouped by :meth:`aecfe.store.CellStore.cell_groups`, so
  :func:`aecfe.evaluation.evaluate_cross_domain` with the same seeds draws the same splits for both.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from aecfe.errors import InputError
from aecfe.store.core import CellStore

logger = logging.getLogger(__name__)

STAGES = ("roi", "crops")
"""``features`` values that name the store's per-cell stages instead of an embedding."""


def labelled_cells(store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(index (N,) int64, labels (N,) object, domains (N,) str)`` of the cells of an open
    :class:`~aecfe.store.CellStore` that have a label (store row order); the unlabelled ones are counted in the
    log. :class:`InputError` when no cell has a label."""
    cells = store.cells()
    labels = cells["label"].astype(object).where(cells["label"].notna(), None).to_numpy()
    index = np.flatnonzero([label is not None and label != "" for label in labels]).astype(np.int64)
    if len(index) < len(cells):
        logger.info("%s: %d of %d cells have no label and are left out", store.path, len(cells) - len(index),
                    len(cells))
    if len(index) == 0:
        raise InputError(f"{store.path}: no labelled cells to evaluate")
    return index, labels[index], cells["domain"].to_numpy(dtype=str)[index]


def load_features(store: CellStore, features: str | None, *, with_groups: bool = False) -> tuple[np.ndarray, ...]:
    """``(X (N, D) float32, y (N,) object, domains (N,) str)`` of the labelled cells of an open store, and
    with ``with_groups`` also ``groups`` (N,): each cell's :meth:`~aecfe.store.CellStore.cell_groups` key.

    ``features``: an embedding name, ``"roi"`` / ``"crops"`` (flattened), or None for the store's only
    embedding. Cells whose label is missing are left out (logged).
    """
    labelled, labels, domains = labelled_cells(store)
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
    loaded = X, labels, domains
    return (*loaded, store.cell_groups()[labelled]) if with_groups else loaded


def read_features(store_path: str | os.PathLike, features: str | None, *,
                  with_groups: bool = False) -> tuple[np.ndarray, ...]:
    """:func:`load_features` of the store at ``store_path`` (opened read-only, then closed)."""
    with CellStore.open(store_path, "r") as store:
        return load_features(store, features, with_groups=with_groups)


def labelled_in_scheme(store: CellStore, scheme: str | None, label_dataset: str | None = "canonical"
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(index (N,) int64, labels (N,) str, domains (N,) str)``: :func:`labelled_cells` relabelled into ``scheme``
    (:func:`aecfe.taxonomy.relabel` with ``label_dataset``'s class map for every domain; None: each domain's own
    map), leaving out the cells it drops; ``scheme`` None keeps the stored labels. :class:`InputError` when the
    scheme drops every labelled cell."""
    from aecfe.taxonomy import relabel

    index, labels, domains = labelled_cells(store)
    if scheme:
        labels = relabel(labels, domains, scheme, label_dataset)
        keep = np.array([label is not None for label in labels], dtype=bool)
        index, labels, domains = index[keep], labels[keep], domains[keep]
        if len(index) == 0:
            raise InputError(f"{store.path}: scheme {scheme!r} drops every labelled cell")
    return index, labels.astype(str), domains


def load_cell_crops(path: str | Path, *, scheme: str | None = None, label_dataset: str | None = "canonical",
                    size: int | None = None, groups: bool = True):
    """``(CropDataset, labels (N,) str, domains (N,) str)``: the crops of the labelled cells of the store at
    ``path`` (:func:`labelled_in_scheme`), kept in memory resized to ``size`` pixels (None: the store's side).

    ``scheme``: relabel first (:func:`aecfe.taxonomy.relabel` with ``label_dataset``'s class map for every
    domain, default ``canonical``: the labels an extraction from class folders writes; None: each domain's own
    map), leaving out the cells it drops. ``groups``: attach :meth:`~aecfe.store.CellStore.cell_groups` (the
    image content hash of each cell) as the dataset's ``groups``.
    """
    from classifiers.dg.crops import crop_dataset

    with CellStore.open(path, mode="r") as store:
        index, labels, domains = labelled_in_scheme(store, scheme, label_dataset)
        keys = store.cell_groups()[index] if groups else None
        data = crop_dataset(_Rows(store, index), labels, domains, groups=keys, size=size)
    logger.info("%s: %d cell crops at %s px from %d domains", path, len(data), data.images.shape[1],
                len(data.domain_names))
    return data, labels, domains


class _Rows:
    """The crops of the store rows ``index`` as an array-like: ``rows[i:j]`` reads rows ``index[i:j]``."""

    def __init__(self, store, index: np.ndarray):
        self.store, self.index = store, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.store.crops(self.index[rows])
