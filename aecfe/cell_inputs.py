"""The labelled cells of a cell store as every method's input: one selection for the embedding heads and the
deep baselines, so that both see the same cells, labels, domains and split groups.

* :func:`labelled_cells` — the store rows of the cells that have a label, their labels and domains (the
  heads' cells: ``evaluate_cross_domain``'s :func:`~aecfe.cli.evaluate_cross_domain.load_features` uses it).
* :func:`load_cell_crops` — those cells' crops as a :class:`classifiers.dg.crops.CropDataset` for the deep
  baselines, relabelled into a scheme like the heads' labels (cells the scheme drops are left out, in the same
  order as the heads leave them out) and grouped by :meth:`aecfe.store.CellStore.cell_groups`, so
  :func:`aecfe.evaluation.evaluate_cross_domain` with the same seeds draws the same splits for both.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from aecfe.errors import InputError

logger = logging.getLogger(__name__)


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


def load_cell_crops(path: str | Path, *, scheme: str | None = None, label_dataset: str | None = "canonical",
                    size: int | None = None, groups: bool = True):
    """``(CropDataset, labels (N,) str, domains (N,) str)``: the crops of the labelled cells of the store at
    ``path`` (:func:`labelled_cells`), kept in memory resized to ``size`` pixels (None: the store's side).

    ``scheme``: relabel first (:func:`aecfe.taxonomy.relabel` with ``label_dataset``'s class map for every
    domain, default ``canonical``: the labels an extraction from class folders writes; None: each domain's own
    map), leaving out the cells it drops. ``groups``: attach :meth:`~aecfe.store.CellStore.cell_groups` (the
    image content hash of each cell) as the dataset's ``groups``.
    """
    from aecfe.store import CellStore
    from aecfe.taxonomy import relabel
    from classifiers.dg.crops import crop_dataset

    with CellStore.open(path, mode="r") as store:
        index, labels, domains = labelled_cells(store)
        keys = store.cell_groups()[index] if groups else None
        if scheme:
            labels = relabel(labels, domains, scheme, label_dataset)
            keep = np.array([label is not None for label in labels], dtype=bool)
            index, labels, domains = index[keep], labels[keep], domains[keep]
            keys = None if keys is None else keys[keep]
            if len(index) == 0:
                raise InputError(f"{path}: scheme {scheme!r} drops every labelled cell")
        labels = labels.astype(str)
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
