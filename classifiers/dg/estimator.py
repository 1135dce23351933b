"""A scikit-learn-style classifier over images that trains a DG algorithm: the deep baselines in the same
cross-domain protocols, splits, metrics and tables as the embedding heads.

``X`` is an :class:`~classifiers.dg.data.ImageDataset` (its domains are read from it; it can be indexed by
integer arrays), ``y`` the class labels. With ``holdout_fraction`` > 0, :meth:`DGClassifier.fit` holds out that
fraction of every training domain for validation (SWAD, logging) with :func:`aecfe.evaluation.domain_splits`
and the same seed; since those splits depend only on (seed, domain, the domain's labels), training on whole
source domains reproduces DomainBed exactly: the model trains on each source's 80 % part and validates on its
20 % part. So::

    result = evaluate_cross_domain(images, labels, domains, head=DGClassifier,
                                   head_params={"algorithm": "SADA", "hparams": {...}},
                                   protocols=["lodo"], lodo_variants=["whole_domain"], seeds=(0, 1, 2))

trains on the sources' 80 % parts, validates on their 20 % parts and scores the whole held-out domain
(METHODS §8.13's choice for new work). The ``domainbed`` variant scores the held-out domain's 80 % part (to
compare with the SADA/BoDA tables) but then trains on 64 % of each source. The ``matrix`` protocol's
diagonal is the oracle (trained on the target's own training part, scored on its test part).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from torch.utils.data import DataLoader

from aecfe.errors import InputError
from aecfe.evaluation import domain_splits
from classifiers.dg.algorithms import build_algorithm
from classifiers.dg.data import ImageDataset
from classifiers.dg.hparams import get_hparams
from classifiers.dg.training import TrainConfig, predict_dataset, train
from classifiers.dg.transforms import eval_transform, train_transform

logger = logging.getLogger(__name__)


class DGClassifier(ClassifierMixin, BaseEstimator):
    """Train ``algorithm`` (a name of :data:`~classifiers.dg.algorithms.ALGORITHMS`) on images.

    Args:
        algorithm: algorithm name. hparams: overrides of its defaults (:mod:`classifiers.dg.hparams`).
        holdout_fraction: fraction of each training domain held out for validation (0: none; SWAD needs one).
        degrade_domains: domains whose training images get the few-shot resolution/zoom degradation.
        random_state: seed of the holdout split, the batches and the augmentations.
        num_workers, device, progress: as :class:`~classifiers.dg.training.TrainConfig`.
        out_dir: if set, each fit writes its checkpoints under ``out_dir/seed<random_state>_<domains>``.
        batch_size: prediction batch size.

    Fitted attributes: ``classes_``, ``algorithm_`` (the final model), ``history_``, ``train_indices_`` and
    ``validation_indices_`` (positions in ``X``).
    """

    def __init__(self, algorithm: str = "ERM", hparams: Mapping[str, Any] | None = None,
                 holdout_fraction: float = 0.2, degrade_domains: Sequence[str] = (), random_state: int = 0,
                 num_workers: int = 0, device: str | None = None, progress: bool = False,
                 out_dir: str | Path | None = None, batch_size: int = 64):
        self.algorithm = algorithm
        self.hparams = hparams
        self.holdout_fraction = holdout_fraction
        self.degrade_domains = degrade_domains
        self.random_state = random_state
        self.num_workers = num_workers
        self.device = device
        self.progress = progress
        self.out_dir = out_dir
        self.batch_size = batch_size

    def fit(self, X: ImageDataset, y) -> "DGClassifier":
        if not isinstance(X, ImageDataset):
            raise InputError(f"DGClassifier needs an ImageDataset as X, got {type(X).__name__}")
        y = np.asarray(y)
        if len(y) != len(X):
            raise InputError(f"X has {len(X)} images but y has {len(y)} labels")
        self.classes_ = np.unique(y)
        hp = get_hparams(self.algorithm, self.hparams)
        domains = np.asarray(X.domain_names)[X.domain_ids]
        data = ImageDataset(X.images, y, domains, classes=tuple(self.classes_.tolist()),
                            domain_names=X.domain_names)
        train_index, val_index = np.arange(len(y)), np.empty(0, dtype=np.int64)
        if self.holdout_fraction > 0:
            splits = domain_splits(y, domains, self.random_state, self.holdout_fraction).values()
            train_index = np.sort(np.concatenate([s.train for s in splits]))
            val_index = np.sort(np.concatenate([s.test for s in splits]))
        augmentation, size = hp["augmentation"], hp["image_size"]
        transform = {name: train_transform(augmentation, size, degrade=name in self.degrade_domains)
                     for name in X.domain_names}
        train_set = data.subset(train_index, transform=transform)
        val_set = data.subset(val_index, transform=eval_transform(augmentation, size)) if len(val_index) else None
        present = sorted({X.domain_names[d] for d in np.unique(train_set.domain_ids)})
        n_domains = len(present) if hp["domain_balanced"] else 1
        algorithm = build_algorithm(self.algorithm, len(self.classes_), n_domains, self.hparams)
        out_dir = None if self.out_dir is None else Path(self.out_dir) / (
            f"seed{self.random_state}_{'+'.join(present)}")
        config = TrainConfig(seed=self.random_state, out_dir=out_dir, num_workers=self.num_workers,
                             device=self.device, progress=self.progress)
        result = train(algorithm, train_set, val_set, config)
        self.algorithm_, self.history_ = result.algorithm, result.history
        self.train_indices_, self.validation_indices_ = train_index, val_index
        return self

    def predict(self, X: ImageDataset) -> np.ndarray:
        """Predicted class labels (N,) from ``classes_``."""
        if not hasattr(self, "algorithm_"):
            raise InputError("DGClassifier is not fitted: call fit first")
        hp = self.algorithm_.hparams
        images = X.subset(np.arange(len(X)), transform=eval_transform(hp["augmentation"], hp["image_size"]))
        loader = DataLoader(images, batch_size=self.batch_size, num_workers=self.num_workers)
        _, predicted = predict_dataset(self.algorithm_, loader)
        return self.classes_[predicted]
