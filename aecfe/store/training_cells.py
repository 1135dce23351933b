"""A cell store's cells as autoencoder training data (the store's training reader): in memory when they fit,
streamed from the store otherwise.

Both kinds serve :class:`extractors.trainer.AutoencoderTrainer` through the same interface: ``len``, ``domains``
(N,) int64 tensor, ``labels`` (N,) int64 (−1 unlabelled), ``n_domains``, ``batch(indices)`` -> (roi float32
(B,256,14,14), crops uint8 (B,3,128,128), domains (B,)) and ``features(indices)`` -> (roi, None, domains).

* :class:`~extractors.trainer.RoiCropDataset` holds the RoI features (float16, as stored) and crops in memory:
  ~150 KB per cell (15 GB at 100k cells).
* :class:`StoreCells` keeps only the per-cell domain and label ids in memory and reads every batch's rows from the
  store (h5py reads the rows' chunks: one cell per chunk, gzip). Memory does not grow with the number of cells;
  a batch of 64 reads ~10 MB. The cheap path (``features``) reads no crops.

:func:`load_training_cells` picks one by the ``max_memory_gb`` budget. :func:`load_joined_training_cells` joins a
source store's cells and a new lab's store (one more domain, labels hidden) as one set (:class:`JoinedCells`), the
training data of ``aecfe-adapt``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aecfe.errors import InputError
from aecfe.shapes import CROP_SHAPE, ROI_SHAPE
from aecfe.store.core import CellStore
from extractors.trainer import RoiCropDataset

logger = logging.getLogger(__name__)

READ_BLOCK = 1024
"""Cells read from the store at a time when loading into memory."""
BYTES_PER_CELL = 2 * int(np.prod(ROI_SHAPE)) + int(np.prod(CROP_SHAPE))
"""Memory of one cell held by :class:`~extractors.trainer.RoiCropDataset`: float16 RoI features + uint8 crop."""


def domain_ids(names, source: str | None) -> tuple[np.ndarray, list[str]]:
    """Domain names (N,) -> ids (N,) and the ordered list of names: the source first, the rest sorted."""
    names = np.asarray(names).astype(str)
    present = sorted(set(names.tolist()))
    source = present[0] if source is None else source
    if source not in present:
        raise InputError(f"source domain {source!r} is not in the store; domains: {present}")
    order = [source] + [name for name in present if name != source]
    lookup = {name: i for i, name in enumerate(order)}
    return np.array([lookup[name] for name in names], dtype=np.int64), order


class StoreCells:
    """The cells ``rows`` (sorted cell ids) of the store at ``path``, read batch by batch (see the module).

    ``domains`` and ``labels`` are per row of ``rows``; ``indices`` given to :meth:`batch` count in ``rows``.
    The store is opened read-only on first use (so a process of a data-parallel run opens its own handle).
    """

    def __init__(self, path: str | Path, rows: np.ndarray, domains: np.ndarray, labels: np.ndarray):
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.domains = torch.as_tensor(np.asarray(domains, dtype=np.int64))
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.rows) == 0:
            raise InputError(f"{self.path}: the training set has no cells")
        self._store: CellStore | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_domains(self) -> int:
        return int(self.domains.max()) + 1

    def _open(self) -> CellStore:
        if self._store is None:
            self._store = CellStore.open(self.path, "r")
        return self._store

    def features(self, indices) -> tuple[Tensor, None, Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        roi = torch.from_numpy(self._open().roi(self.rows[index]))
        return roi, None, self.domains[torch.as_tensor(index)]

    def batch(self, indices) -> tuple[Tensor, Tensor, Tensor]:
        roi, _, domains = self.features(indices)
        crops = torch.from_numpy(self._open().crops(self.rows[np.asarray(indices, dtype=np.int64)]))
        return roi, crops, domains

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def load_training_cells(store_path: str | Path, *, max_cells: int | None = None, source: str | None = None,
                        seed: int = 0, exclude_domains=(), max_memory_gb: float = 2.0,
                        stream: bool | None = None) -> tuple[RoiCropDataset | StoreCells, list[str]]:
    """(training data, domain names in id order) from a cell store.

    ``max_cells``: a seeded random subset of that many cells. ``exclude_domains``: domains left out of training
    (e.g. the held-out lab of a leave-one-lab-out fold). ``source``: the alignment source (id 0; default the first
    name in sorted order). The cells' labels (ids of the sorted label names, −1 when missing) go with them for the
    trainer's linear probe. ``stream``: True -> :class:`StoreCells`, False -> in memory, None -> in memory when the
    cells take at most ``max_memory_gb`` (:data:`BYTES_PER_CELL` each).
    """
    store_path = Path(store_path)
    with CellStore.open(store_path, "r") as store:
        cells = store.cells()
        store.roi(slice(0, 0)), store.crops(slice(0, 0))  # a StoreError naming the file when a stage is missing
    domain_names = cells["domain"].to_numpy(dtype=str)
    label_names = cells["label"].fillna("").to_numpy(dtype=str)
    unknown = sorted(set(exclude_domains) - set(domain_names.tolist()))
    if unknown:
        raise InputError(f"{store_path}: cannot leave out domains {unknown}: not in the store "
                         f"(domains: {sorted(set(domain_names.tolist()))})")
    if source in exclude_domains:
        logger.warning("the alignment source %r is left out of training: the first remaining domain is the source",
                       source)
        source = None
    rows = np.flatnonzero(~np.isin(domain_names, list(exclude_domains)))
    if len(rows) == 0:
        raise InputError(f"{store_path}: the store holds no cells" + (" outside the left-out domains"
                                                                       if len(exclude_domains) else ""))
    if max_cells is not None and max_cells < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_cells, replace=False))
    domains, order = domain_ids(domain_names[rows], source)
    classes = sorted(set(label_names.tolist()) - {""})
    lookup = {name: i for i, name in enumerate(classes)}
    labels = np.array([lookup.get(name, -1) for name in label_names[rows]], dtype=np.int64)
    needed_gb = len(rows) * BYTES_PER_CELL / 1e9
    if stream is None:
        stream = needed_gb > max_memory_gb
    if stream:
        logger.info("streaming %d cells from %s (%.1f GB would not fit the %.1f GB budget in memory)", len(rows),
                    store_path, needed_gb, max_memory_gb)
        return StoreCells(store_path, rows, domains, labels), order
    roi = np.empty((len(rows), *ROI_SHAPE), dtype=np.float16)
    with CellStore.open(store_path, "r") as store:
        for start in range(0, len(rows), READ_BLOCK):
            block = slice(start, start + READ_BLOCK)
            roi[block] = store.roi(rows[block])
        crops = store.crops(rows)
    return RoiCropDataset(roi, crops, domains, labels), order


class JoinedCells:
    """Several training sets (:class:`~extractors.trainer.RoiCropDataset` / :class:`StoreCells`, e.g. of two
    stores) as one, with the domain and label ids given here (``domains`` / ``labels``: one (n_i,) int64 array per
    part, replacing the parts' own). Rows count through the parts in order; :meth:`batch` / :meth:`features`
    return the rows in the order asked, whatever parts they come from. Same interface as the parts."""

    def __init__(self, parts, domains, labels):
        self.parts = list(parts)
        sizes = [len(part) for part in self.parts]
        if [len(d) for d in domains] != sizes or [len(l) for l in labels] != sizes:
            raise InputError(f"domain and label ids must match the parts' sizes {sizes}")
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.domains = torch.as_tensor(np.concatenate(domains).astype(np.int64))
        self.labels = np.concatenate(labels).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_domains(self) -> int:
        return int(self.domains.max()) + 1

    def _gather(self, indices, crops: bool) -> tuple[Tensor, Tensor | None, Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        part_of = np.searchsorted(self.offsets, index, side="right") - 1
        roi, crop = [None] * len(index), [None] * len(index)
        for p in np.unique(part_of):
            where = np.flatnonzero(part_of == p)
            local = index[where] - self.offsets[p]
            r, c, _ = self.parts[p].batch(local) if crops else self.parts[p].features(local)
            for j, position in enumerate(where):
                roi[position] = r[j]
                crop[position] = c[j] if crops else None
        return (torch.stack(roi).float(), torch.stack(crop) if crops else None,
                self.domains[torch.as_tensor(index)])

    def batch(self, indices) -> tuple[Tensor, Tensor, Tensor]:
        return self._gather(indices, True)

    def features(self, indices) -> tuple[Tensor, None, Tensor]:
        return self._gather(indices, False)

    def close(self) -> None:
        for part in self.parts:
            if isinstance(part, StoreCells):
                part.close()


def load_joined_training_cells(source_path: str | Path, target_path: str | Path, *, source: str | None = None,
                               target_domain: str = "target", max_memory_gb: float = 2.0,
                               stream: bool | None = None, seed: int = 0) -> tuple[JoinedCells, list[str]]:
    """The cells of a source store (its domains, ``source`` first as id 0, the rest sorted, labelled for the
    probe) and every cell of a target store as one more domain ``target_domain`` (id K, the last; its labels
    are hidden: −1), as one training set (:class:`JoinedCells`); returns it and the domain names in id order.
    The memory budget is split between the two stores in proportion to their cells."""
    with CellStore.open(source_path, "r") as store_s, CellStore.open(target_path, "r") as store_t:
        n_s, n_t = len(store_s), len(store_t)
    if n_t == 0:
        raise InputError(f"{target_path}: the store holds no cells to adapt to")
    share = n_s / max(n_s + n_t, 1)
    source_part, names = load_training_cells(source_path, source=source, seed=seed, stream=stream,
                                             max_memory_gb=max_memory_gb * share)
    target_part, _ = load_training_cells(target_path, seed=seed, stream=stream,
                                         max_memory_gb=max_memory_gb * (1 - share))
    if target_domain in names:
        raise InputError(f"{target_path}: the new domain's name {target_domain!r} is a domain of {source_path}")
    domains = [source_part.domains.numpy(), np.full(len(target_part), len(names), dtype=np.int64)]
    labels = [np.asarray(source_part.labels), np.full(len(target_part), -1, dtype=np.int64)]
    return JoinedCells([source_part, target_part], domains, labels), [*names, target_domain]
