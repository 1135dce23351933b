"""Image datasets and the step-indexed batch plan of the DG training loop.

* :class:`ImageDataset` — images (arrays or files) with class and domain labels and a transform (one for all,
  or one per domain); items are (x float (3, H, W) in [0, 1], class id, domain id).
* :class:`BatchPlan` — which samples step t reads: one minibatch per training domain (domain-balanced, as
  DomainBed's infinite per-domain loaders) or one pooled minibatch, optionally class-balanced within each domain
  (weight 1 / (n_class · C), METHODS §2.4). The plan is a pure function of (seed, step), so a resumed run reads
  exactly what an uninterrupted one would, and each of W processes reads its own share of the same global batch
  (W processes at batch B = one process at batch W·B).
* :func:`step_loader` — a ``DataLoader`` over the plan from a start step; every item is transformed under its
  own seed (a function of (seed, step, position)), whatever the number of workers.
* :class:`TrainingData` — what the algorithms' hooks see of their training set (class counts, full passes).
* :func:`preload_images` — every image read once and resized, to keep a dataset in memory.
* :func:`few_shot_indices` — at most k labelled samples per class (class-stratified), for fine-tuning.
* :func:`steps_for_epochs` — epochs -> steps; :func:`synthetic_dataset` — the synthetic labs as a dataset.

>>> import numpy as np
>>> images = np.zeros((6, 8, 8, 3), np.uint8)
>>> data = ImageDataset(images, ["a", "b"] * 3, ["x", "x", "x", "y", "y", "y"])
>>> data.classes, data.domain_names, data[4][1:]
(('a', 'b'), ('x', 'y'), (0, 1))
>>> [len(part) for part in BatchPlan.for_dataset(data, batch_size=2).step_indices(0)]
[2, 2]
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from aecfe.errors import InputError
from aecfe.io import read_image

Transform = Callable[[Tensor], Tensor]


def to_float_image(image: Any) -> Tensor:
    """uint8 (H, W, 3) array -> float (3, H, W) in [0, 1]; a (3, H, W) tensor is returned as float in [0, 1]."""
    if isinstance(image, Tensor) and image.ndim == 3 and image.shape[0] == 3:
        return image.float() / 255 if image.dtype == torch.uint8 else image.float()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InputError(f"expected a uint8 RGB image (H, W, 3), got {array.dtype} {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255


class ImageDataset(Dataset):
    """Images with labels and domains.

    Args:
        images: N uint8 (H, W, 3) arrays (a list or an (N, H, W, 3) array), or N image paths (read on access with
            :func:`aecfe.io.read_image`).
        labels: (N,) class labels; ``classes`` orders them (default: sorted unique labels) -> ``targets``.
        domains: (N,) domain names; ``domain_names`` orders them (default sorted) -> ``domain_ids``.
        transform: applied to the float (3, H, W) image: one callable, or ``{domain name: callable}`` (domains
            absent from the mapping get none).
        keys: optional (N,) content keys of the images (the SHA-1 of each file, as a cell store's
            ``cell_groups``): the few-shot workflow then draws its shots with the shared selection
            (:func:`aecfe.splits.few_shot_selection`), the same images the embedding heads get.

    ``dataset[i]`` is (x, class id, domain id); ``dataset[index_array]`` is a :meth:`subset`.

    Attributes:
        targets (N,) int64, domain_ids (N,) int64, classes, domain_names, keys ((N,) object or None).
    """

    def __init__(self, images: Sequence[Any] | np.ndarray, labels: Sequence[Any], domains: Sequence[Any], *,
                 classes: Sequence[Any] | None = None, domain_names: Sequence[str] | None = None,
                 transform: Transform | Mapping[str, Transform] | None = None, keys: Sequence[Any] | None = None):
        labels, domains = np.asarray(labels), np.asarray(domains).astype(str)
        if keys is not None and len(keys) != len(labels):
            raise InputError(f"keys has {len(keys)} entries for {len(labels)} images")
        self.keys = None if keys is None else np.asarray(keys, dtype=object)
        if not len(images) == len(labels) == len(domains):
            raise InputError(f"images, labels and domains differ in length: {len(images)}, {len(labels)}, "
                             f"{len(domains)}")
        self.images = images
        self.classes = tuple(np.unique(labels).tolist()) if classes is None else tuple(classes)
        self.domain_names = tuple(np.unique(domains).tolist()) if domain_names is None else tuple(domain_names)
        self.targets = _encode(labels, self.classes, "class")
        self.domain_ids = _encode(domains, self.domain_names, "domain")
        if isinstance(transform, Mapping):
            unknown = sorted(set(transform) - set(self.domain_names))
            if unknown:
                raise InputError(f"transforms given for unknown domains {unknown}; domains: {self.domain_names}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Tensor:
        """Image ``index`` as float (3, H, W) in [0, 1], untransformed."""
        image = self.images[index]
        if isinstance(image, (str, Path)):
            image = read_image(image)
        return to_float_image(image)

    def __getitem__(self, index):
        """Item ``index`` (x, class id, domain id); an integer array or list of indices gives :meth:`subset`
        (so the dataset can be the ``X`` of :func:`aecfe.evaluation.evaluate_cross_domain`)."""
        if isinstance(index, (np.ndarray, list)):
            return self.subset(index)
        domain = int(self.domain_ids[index])
        transform = self.transform
        if isinstance(transform, Mapping):
            transform = transform.get(self.domain_names[domain])
        x = self.image(index)
        return (transform(x) if transform is not None else x), int(self.targets[index]), domain

    def subset(self, indices: Sequence[int] | np.ndarray, transform: Any = "same") -> "ImageDataset":
        """The samples ``indices`` (same classes and domain names), with ``transform`` (default: this one's)."""
        indices = np.asarray(indices, dtype=np.int64)
        images = self.images[indices] if isinstance(self.images, np.ndarray) else [self.images[i] for i in indices]
        return ImageDataset(images, np.asarray(self.classes, dtype=object)[self.targets[indices]],
                            np.asarray(self.domain_names)[self.domain_ids[indices]], classes=self.classes,
                            domain_names=self.domain_names,
                            transform=self.transform if isinstance(transform, str) and transform == "same"
                            else transform, keys=None if self.keys is None else self.keys[indices])

    def class_counts(self) -> np.ndarray:
        """(n_domains, n_classes) int64 sample counts."""
        counts = np.zeros((len(self.domain_names), len(self.classes)), dtype=np.int64)
        np.add.at(counts, (self.domain_ids, self.targets), 1)
        return counts


def _encode(values: np.ndarray, vocabulary: tuple, what: str) -> np.ndarray:
    lookup = {value: i for i, value in enumerate(vocabulary)}
    unknown = sorted({str(v) for v in values.tolist() if v not in lookup})
    if unknown:
        raise InputError(f"{what} labels {unknown[:10]} are not in the given {what} list {list(vocabulary)}")
    return np.array([lookup[v] for v in values.tolist()], dtype=np.int64)


class BatchPlan:
    """Samples of every step, a pure function of (seed, step) (see the module docstring).

    Args:
        groups: per minibatch, the dataset indices it draws from (one group per training domain, or one pooled
            group). batch_size: per group and per process. class_labels: (len(dataset),) class ids, to
            class-balance inside each group. seed; rank, world_size: this process's share.

    Without class balance group g is read as the concatenation of its permutations
    ``default_rng([seed, g, epoch]).permutation(group)``, global batch t taking positions
    [t·B·W, (t+1)·B·W) (every sample once per group epoch). With class balance each global batch draws B·W samples
    with replacement, sample weight 1 / (n_class · C_g), from ``default_rng([seed, g, t, 1])``.
    """

    def __init__(self, groups: Sequence[np.ndarray], batch_size: int, *, class_labels: np.ndarray | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or not 0 <= rank < world_size:
            raise InputError(f"bad batch plan: batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.groups = [np.asarray(g, dtype=np.int64) for g in groups]
        if not self.groups or any(len(g) == 0 for g in self.groups):
            raise InputError("every minibatch group needs at least one sample")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.weights = None if class_labels is None else [_balanced_weights(class_labels[g]) for g in self.groups]

    @classmethod
    def for_dataset(cls, dataset: ImageDataset, batch_size: int, *, domain_balanced: bool = True,
                    class_balanced: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1) -> "BatchPlan":
        """One group per domain present in ``dataset`` (in domain-id order), or one pooled group."""
        if domain_balanced:
            groups = [np.flatnonzero(dataset.domain_ids == d) for d in np.unique(dataset.domain_ids)]
        else:
            groups = [np.arange(len(dataset))]
        return cls(groups, batch_size, class_labels=dataset.targets if class_balanced else None, seed=seed,
                   rank=rank, world_size=world_size)

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def _global_group_batch(self, group: int, step: int) -> np.ndarray:
        indices, size = self.groups[group], self.global_batch_size
        if self.weights is not None:
            rng = np.random.default_rng([self.seed, group, step, 1])
            return rng.choice(indices, size=size, replace=True, p=self.weights[group])
        n = len(indices)
        positions = np.arange(step * size, (step + 1) * size)
        out = np.empty(size, dtype=np.int64)
        for epoch in np.unique(positions // n):
            at = positions // n == epoch
            out[at] = np.random.default_rng([self.seed, group, int(epoch)]).permutation(indices)[positions[at] % n]
        return out

    def step_indices(self, step: int) -> list[np.ndarray]:
        """This process's dataset indices per group at ``step`` (``batch_size`` each)."""
        return [self._global_group_batch(g, step)[self.rank::self.world_size] for g in range(len(self.groups))]

    def step_items(self, step: int) -> list[tuple[int, int]]:
        """(dataset index, item seed) of this process at ``step``, groups concatenated in order."""
        seeds = np.random.SeedSequence([self.seed, step]).generate_state(len(self.groups) * self.global_batch_size)
        seeds = seeds.reshape(len(self.groups), self.global_batch_size)[:, self.rank::self.world_size]
        return [(int(i), int(s)) for indices, item_seeds in zip(self.step_indices(step), seeds)
                for i, s in zip(indices, item_seeds)]


def _balanced_weights(labels: np.ndarray) -> np.ndarray:
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / (counts[inverse] * len(classes))
    return weights / weights.sum()


class SeededItems(Dataset):
    """``dataset[index]`` computed under ``torch.manual_seed(seed)`` for items ``(index, seed)`` (the global RNG of
    the calling process is restored afterwards), so random transforms do not depend on workers or resumption."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class _StepBatches:
    """Batch sampler: the items of steps ``start`` .. ``stop`` − 1 of a plan."""

    def __init__(self, plan: BatchPlan, start: int, stop: int):
        self.plan, self.start, self.stop = plan, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield self.plan.step_items(step)


def step_loader(dataset: ImageDataset, plan: BatchPlan, start: int, stop: int, num_workers: int = 0) -> DataLoader:
    """Batches (x, y, d) of steps ``start`` .. ``stop`` − 1, groups concatenated (split them with
    ``x.split(plan.batch_size)``)."""
    return DataLoader(SeededItems(dataset), batch_sampler=_StepBatches(plan, start, stop), num_workers=num_workers,
                      persistent_workers=False)


@dataclass
class TrainingData:
    """What the algorithms' hooks may use: the training set, the dataset domain ids of the minibatch positions
    (``domains``), the (M, C) class counts in that order, the number of steps and the run's seed and rank."""

    dataset: ImageDataset
    domains: tuple[int, ...]
    class_counts: np.ndarray
    steps: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0

    def full_pass(self, batch_size: int, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Batches (x, y, domain position) over this process's share of every training sample, with the
        training transforms (each item seeded from (seed, step)), e.g. for BoDA's centroids."""
        lookup = torch.full((len(self.dataset.domain_names),), -1, dtype=torch.long)
        lookup[list(self.domains)] = torch.arange(len(self.domains))
        indices = np.arange(len(self.dataset))[self.rank::self.world_size]
        seeds = np.random.SeedSequence([self.seed, step, 2]).generate_state(len(self.dataset))[indices]
        items = [(int(i), int(s)) for i, s in zip(indices, seeds)]
        batches = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
        for x, y, d in DataLoader(SeededItems(self.dataset), batch_sampler=batches, num_workers=self.num_workers):
            yield x, y, lookup[d]


def preload_images(paths: Sequence[str | Path], size: int, progress: bool = True) -> np.ndarray:
    """(N, size, size, 3) uint8: every image read (:func:`aecfe.io.read_image`) and resized (bilinear, PIL), to
    keep an :class:`ImageDataset` in memory instead of reading the files at every access."""
    from PIL import Image
    from tqdm.auto import tqdm

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=f"reading images at {size} px", unit="image", disable=not progress)):
        out[i] = np.asarray(Image.fromarray(read_image(path)).resize((size, size), Image.BILINEAR))
    return out


def few_shot_indices(labels: Sequence[Any], shots_per_class: int, seed: int = 0,
                     candidates: Sequence[int] | None = None, keys: Sequence[Any] | None = None) -> np.ndarray:
    """Sorted indices of at most ``shots_per_class`` samples of every class (all of a rarer class) among
    ``candidates`` (default: all).

    With ``keys`` (N,) (group keys, e.g. the image content hash of each crop): the shared selection
    :func:`aecfe.splits.few_shot_selection` (k groups per class ranked by a hash of seed and key, independent of
    the data's order: the same cells the embedding heads and ``aecfe-adapt`` get). Without keys (whole images):
    drawn uniformly without replacement by ``default_rng(seed)`` (depends on the dataset's order).
    """
    if shots_per_class < 1:
        raise InputError(f"shots_per_class must be >= 1, got {shots_per_class}")
    if keys is not None:
        from aecfe.splits import few_shot_selection

        return few_shot_selection(labels, shots_per_class, seed, keys=keys, candidates=candidates)
    labels = np.asarray(labels)
    pool = np.arange(len(labels)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(pool[labels[pool] == c])[:shots_per_class] for c in np.unique(labels[pool])]
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def steps_for_epochs(n_samples: int, batch_size: int, epochs: int, world_size: int = 1) -> int:
    """epochs · ⌈n_samples / (batch_size · world_size)⌉ (pooled batches)."""
    return epochs * max(1, math.ceil(n_samples / (batch_size * world_size)))


def synthetic_dataset(n_per_domain: int, size: int = 32, seed: int = 0, domains: Sequence[Any] | None = None,
                      transform: Transform | Mapping[str, Transform] | None = None) -> ImageDataset:
    """Single-cell images of the synthetic labs (:func:`aecfe.synthetic.default_domains` by default) as an
    :class:`ImageDataset` (for demos and tests; classes are the labels that occur)."""
    from aecfe.synthetic import default_domains, make_single_cell_images

    images, labels, names = [], [], []
    for domain in domains if domains is not None else default_domains():
        for cell in make_single_cell_images(domain, n_per_domain, seed=seed, size=size):
            images.append(cell.image)
            labels.append(cell.labels[0])
            names.append(domain.name)
    return ImageDataset(np.stack(images), labels, names, transform=transform)
