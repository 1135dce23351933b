"""The detector's cell crops as the input of the deep baselines, beside whole images.

A cell store (``aecfe.store``) keeps one crop per detected cell: uint8 (N, 3, S, S), channels first, the cell's
box plus a margin resized to S = 128. :class:`CropDataset` is an :class:`~classifiers.dg.data.ImageDataset` of
such crops, so every algorithm, :class:`~classifiers.dg.DGClassifier`, the few-shot workflow and
:func:`aecfe.evaluation.evaluate_cross_domain` take it unchanged; two things differ from whole images:

* ``groups`` (N,) — one key per cell (e.g. the content hash of its image, ``CellStore.cell_groups``): the
  cells of one image, and of byte-identical copies of it, stay on one side of every split that
  :class:`~classifiers.dg.DGClassifier` (its validation holdout) and the few-shot workflow (shots vs scored
  cells) make, as the evaluation's own splits do with the same groups. Kept by :meth:`CropDataset.subset`.
* the training transforms are the crop versions (:func:`~classifiers.dg.transforms.train_transform` with
  ``crops=True``: no random resized crop, no centre zoom); :func:`is_crop_dataset` tells them apart.

This module reads no store: the application passes the crops (an array, or anything that gives uint8
(n, 3, S, S) arrays for slices ``crops[i:j]``, such as an open HDF5 dataset), labels, domains and groups.

>>> import numpy as np
>>> crops = np.zeros((4, 3, 16, 16), np.uint8)
>>> data = crop_dataset(crops, ["a", "b", "a", "b"], ["x", "x", "y", "y"], groups=["g0", "g0", "g1", "g2"], size=8)
>>> data.images.shape, data[np.array([0, 3])].groups.tolist()
((4, 8, 8, 3), ['g0', 'g2'])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from aecfe.errors import InputError
from classifiers.dg.data import ImageDataset


class CropDataset(ImageDataset):
    """An :class:`~classifiers.dg.data.ImageDataset` of cell crops (uint8 (N, H, W, 3) channels last, as
    :func:`crop_dataset` makes them) with optional per-cell ``groups`` (N,) (module docstring)."""

    def __init__(self, images, labels, domains, *, groups: Sequence[Any] | None = None, **options):
        super().__init__(images, labels, domains, **options)
        if groups is not None and len(groups) != len(self):
            raise InputError(f"groups has {len(groups)} entries for {len(self)} crops")
        self.groups = None if groups is None else np.asarray(groups, dtype=object)

    def subset(self, indices, transform: Any = "same") -> "CropDataset":
        """The crops ``indices`` with their groups (same classes and domain names), with ``transform``."""
        indices = np.asarray(indices, dtype=np.int64)
        base = super().subset(indices, transform)
        return CropDataset(base.images, np.asarray(self.classes, dtype=object)[base.targets],
                           np.asarray(self.domain_names)[base.domain_ids], classes=self.classes,
                           domain_names=self.domain_names, transform=base.transform,
                           groups=None if self.groups is None else self.groups[indices])

    def with_labels(self, labels: Sequence[Any], classes: Sequence[Any]) -> "CropDataset":
        """The same crops, domains and groups with new ``labels`` ordered by ``classes``, no transform."""
        return CropDataset(self.images, labels, np.asarray(self.domain_names)[self.domain_ids], classes=classes,
                           domain_names=self.domain_names, groups=self.groups)


def is_crop_dataset(dataset) -> bool:
    """Whether ``dataset`` holds cell crops (its training transforms are the crop versions)."""
    return isinstance(dataset, CropDataset)


def dataset_groups(dataset) -> np.ndarray | None:
    """The (N,) group keys of a :class:`CropDataset` (None for whole images or crops without groups)."""
    return getattr(dataset, "groups", None) if is_crop_dataset(dataset) else None


def shot_keys(dataset) -> np.ndarray | None:
    """The (N,) keys the few-shot workflow selects and excludes its shots by: a crop dataset's groups, else the
    images' content ``keys`` (:class:`~classifiers.dg.data.ImageDataset`), None when neither is known."""
    groups = dataset_groups(dataset)
    return groups if groups is not None else getattr(dataset, "keys", None)


def resize_crops(crops: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 (n, 3, S, S) channels first -> uint8 (n, size, size, 3) channels last (bilinear with antialiasing,
    rounded; ``size`` None or S: only transposed)."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.dtype != np.uint8:
        raise InputError(f"expected uint8 crops (n, 3, H, W), got {crops.dtype} {crops.shape}")
    if size is None or (size == crops.shape[2] == crops.shape[3]) or len(crops) == 0:
        return np.ascontiguousarray(crops.transpose(0, 2, 3, 1))
    x = torch.from_numpy(np.ascontiguousarray(crops)).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def crop_dataset(crops, labels: Sequence[Any], domains: Sequence[Any], *, groups: Sequence[Any] | None = None,
                 size: int | None = None, chunk: int = 512, **options) -> CropDataset:
    """A :class:`CropDataset` of ``crops`` (uint8 (N, 3, S, S), read ``chunk`` rows at a time and kept in memory
    resized to ``size`` pixels, see :func:`resize_crops`), ``labels`` (N,), ``domains`` (N,) and ``groups``;
    ``options``: ``classes``, ``domain_names``, ``transform`` of :class:`~classifiers.dg.data.ImageDataset`."""
    n = len(labels)
    if len(crops) != n:
        raise InputError(f"{len(crops)} crops for {n} labels")
    parts = [resize_crops(crops[start:start + chunk], size) for start in range(0, n, chunk)]
    if not parts:
        raise InputError("no crops given")
    return CropDataset(np.concatenate(parts), labels, domains, groups=groups, **options)
