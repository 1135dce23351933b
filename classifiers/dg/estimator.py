"""A scikit-learn-style classifier over images that trains a DG algorithm: the deep baselines in the same
cross-domain protocols, splits, metrics and tables as the embedding heads.

``X`` is an :class:`~classifiers.dg.data.ImageDataset` (its domains are read from it; it can be indexed by
integer arrays), ``y`` the class labels. With ``holdout_fraction`` > 0, :meth:`DGClassifier.fit` holds out that
fraction of every training domain for validation (SWAD, logging) with :func:`aecfe.splits.domain_splits`
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

``X`` may be a :class:`~classifiers.dg.crops.CropDataset` of the detector's cell crops: the training
transforms are then the crop versions (:mod:`classifiers.dg.transforms`) and the validation holdout keeps
the crops' ``groups`` together, as ``evaluate_cross_domain(..., groups=X.groups)`` does with its splits.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from torch.utils.data import DataLoader

from aecfe.errors import InputError
from aecfe.splits import domain_splits
from classifiers.dg.algorithms import CRT, build_algorithm
from classifiers.dg.crops import dataset_groups, is_crop_dataset
from classifiers.dg.data import ImageDataset
from classifiers.dg.hparams import get_hparams
from classifiers.dg.training import TrainConfig, predict_dataset, train
from classifiers.dg.transforms import eval_transform, train_transform

logger = logging.getLogger(__name__)

STAGE1_KEYS = ("backbone", "weights", "freeze_bn", "dropout", "normalize", "image_size", "steps", "epochs",
               "checkpoint_every", "batch_size", "lr", "weight_decay")
"""Keys of a CRT's ``hparams`` that its stage-1 BoDA inherits (unless ``stage1_hparams`` sets them)."""


class DGClassifier(ClassifierMixin, BaseEstimator):
    """Train ``algorithm`` (a name of :data:`~classifiers.dg.algorithms.ALGORITHMS`) on images.

    Args:
        algorithm: algorithm name. hparams: overrides of its defaults (:mod:`classifiers.dg.hparams`).
        holdout_fraction: fraction of each training domain held out for validation (0: none; SWAD needs one).
        degrade_domains: domains whose training images get the few-shot resolution/zoom degradation.
        random_state: seed of the holdout split, the batches and the augmentations.
        num_workers, device, progress: as :class:`~classifiers.dg.training.TrainConfig`.
        out_dir: if set, each fit writes its checkpoints under ``out_dir/<run_name>`` (:meth:`run_name`: the
            algorithm, seed, training domains and a fingerprint of the hyper-parameters and training data), so a
            fit whose run finished earlier is loaded instead of retrained, and different trainings on the same
            domains (the matrix's 80 % part, the whole domain) never share a folder.
        batch_size: prediction batch size.
        stage1_hparams: ``CRT`` only: overrides of the stage-1 ``BoDA`` whose featurizer CRT freezes (default:
            the network and length keys of ``hparams``, see :data:`STAGE1_KEYS`). The stage-1 run is itself a
            run of ``out_dir``, so a BoDA fit of the same settings is reused.

    Fitted attributes: ``classes_``, ``algorithm_`` (the final model), ``history_``, ``train_indices_`` and
    ``validation_indices_`` (positions in ``X``), ``crops_`` (whether ``X`` held cell crops), ``train_seconds_``
    (wall time of the training, both stages for CRT, summed over the processes that ran it: a fit that loads a
    finished run reports that run's time, NaN when its checkpoint predates the record).
    """

    def __init__(self, algorithm: str = "ERM", hparams: Mapping[str, Any] | None = None,
                 holdout_fraction: float = 0.2, degrade_domains: Sequence[str] = (), random_state: int = 0,
                 num_workers: int = 0, device: str | None = None, progress: bool = False,
                 out_dir: str | Path | None = None, batch_size: int = 64,
                 stage1_hparams: Mapping[str, Any] | None = None):
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
        self.stage1_hparams = stage1_hparams

    def fit(self, X: ImageDataset, y) -> "DGClassifier":
        if not isinstance(X, ImageDataset):
            raise InputError(f"DGClassifier needs an ImageDataset as X, got {type(X).__name__}")
        y = np.asarray(y)
        if len(y) != len(X):
            raise InputError(f"X has {len(X)} images but y has {len(y)} labels")
        self.classes_ = np.unique(y)
        get_hparams(self.algorithm, self.hparams)  # fail early on an unknown algorithm or hyper-parameter
        domains = np.asarray(X.domain_names)[X.domain_ids]
        self.crops_ = is_crop_dataset(X)
        classes = tuple(self.classes_.tolist())
        data = X.with_labels(y, classes) if self.crops_ else ImageDataset(X.images, y, domains, classes=classes,
                                                                          domain_names=X.domain_names)
        train_index, val_index = np.arange(len(y)), np.empty(0, dtype=np.int64)
        if self.holdout_fraction > 0:
            splits = domain_splits(y, domains, self.random_state, self.holdout_fraction,
                                   dataset_groups(X)).values()
            train_index = np.sort(np.concatenate([s.train for s in splits]))
            val_index = np.sort(np.concatenate([s.test for s in splits]))
        if self.algorithm == "CRT":
            stage1 = self._fit_stage(data, train_index, val_index, "BoDA", self._stage1_hparams(), None)
            result = self._fit_stage(data, train_index, val_index, "CRT", self.hparams, stage1.algorithm)
            self.train_seconds_ = stage1.seconds + result.seconds
        else:
            result = self._fit_stage(data, train_index, val_index, self.algorithm, self.hparams, None)
            self.train_seconds_ = result.seconds
        self.algorithm_, self.history_ = result.algorithm, result.history
        self.train_indices_, self.validation_indices_ = train_index, val_index
        return self

    def _stage1_hparams(self) -> dict[str, Any]:
        inherited = {key: value for key, value in (self.hparams or {}).items() if key in STAGE1_KEYS}
        return {**inherited, **(self.stage1_hparams or {})}

    def _fit_stage(self, data: ImageDataset, train_index: np.ndarray, val_index: np.ndarray, name: str,
                   overrides: Mapping[str, Any] | None, stage1):
        """Train algorithm ``name`` (a CRT on top of the trained ``stage1``) on ``data[train_index]``."""
        present = sorted({data.domain_names[d] for d in np.unique(data.domain_ids[train_index])})
        if stage1 is not None:
            algorithm = CRT.from_algorithm(stage1, overrides)
        else:
            n_domains = len(present) if get_hparams(name, overrides)["domain_balanced"] else 1
            algorithm = build_algorithm(name, len(self.classes_), n_domains, overrides)
        hp = algorithm.hparams
        augmentation, size = hp["augmentation"], hp["image_size"]
        transform = {domain: train_transform(augmentation, size, degrade=domain in self.degrade_domains,
                                             crops=self.crops_) for domain in data.domain_names}
        train_set = data.subset(train_index, transform=transform)
        val_set = data.subset(val_index, transform=eval_transform(augmentation, size)) if len(val_index) else None
        out_dir = None if self.out_dir is None else Path(self.out_dir) / self.run_name(
            name, hp, train_set, present)
        config = TrainConfig(seed=self.random_state, out_dir=out_dir, num_workers=self.num_workers,
                             device=self.device, progress=self.progress)
        return train(algorithm, train_set, val_set, config)

    def run_name(self, name: str, hparams: Mapping[str, Any], train_set: ImageDataset, domains: Sequence[str]
                 ) -> str:
        """``<algorithm>_seed<random_state>_<domains>_<fingerprint>``: the fingerprint (12 hex digits of a
        SHA-256) covers the full hyper-parameters, the holdout fraction, the degraded domains, the training
        labels and domains and the training images (their pixels, or their paths), for CRT its stage 1, and
        for cell crops the input (their augmentations differ)."""
        digest = hashlib.sha256()
        settings = {"hparams": dict(hparams), "holdout_fraction": self.holdout_fraction,
                    "degrade_domains": sorted(self.degrade_domains), "classes": [str(c) for c in self.classes_]}
        if name == "CRT":
            settings["stage1"] = get_hparams("BoDA", self._stage1_hparams())
        if getattr(self, "crops_", False):
            settings["input"] = "crop"
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        digest.update(np.ascontiguousarray(train_set.targets).tobytes())
        digest.update(np.ascontiguousarray(train_set.domain_ids).tobytes())
        images = train_set.images
        if isinstance(images, np.ndarray):
            digest.update(np.ascontiguousarray(images).tobytes())
        else:
            for image in images:
                digest.update(str(image).encode() if isinstance(image, (str, Path))
                              else np.ascontiguousarray(image).tobytes())
        return f"{name}_seed{self.random_state}_{'+'.join(domains)}_{digest.hexdigest()[:12]}"

    def predict(self, X: ImageDataset) -> np.ndarray:
        """Predicted class labels (N,) from ``classes_``."""
        if not hasattr(self, "algorithm_"):
            raise InputError("DGClassifier is not fitted: call fit first")
        hp = self.algorithm_.hparams
        images = X.subset(np.arange(len(X)), transform=eval_transform(hp["augmentation"], hp["image_size"]))
        loader = DataLoader(images, batch_size=self.batch_size, num_workers=self.num_workers)
        _, predicted = predict_dataset(self.algorithm_, loader)
        return self.classes_[predicted]
