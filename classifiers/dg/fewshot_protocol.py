"""The few-shot protocol: the few-shot workflow (:func:`~classifiers.dg.workflows.few_shot_workflow`) leave one
domain out, for every seed, held-out domain and number of shots k.

Per seed and held-out (target) domain, the source model is trained once on the other domains and shared by every
k; each k fine-tunes a copy on at most k labelled target images per class and predicts the rest of the target
domain. The source model also predicts the *whole* target domain (the ``shots = 0`` row: no target labels).

Run folders: ``<runs_dir>/FewShot_seed<seed>_<target>-heldout_<fingerprint>/k<k>/{source,finetune}``, the
fingerprint (:func:`protocol_fingerprint`) naming the settings and the dataset's labels, so a changed setting
trains anew and an unchanged one loads the finished trainings (:func:`~classifiers.dg.training.train` resumes).

Returns plain predictions (:class:`FewShotFold`); scoring them in the cross-domain tables is the caller's
(:mod:`aecfe.dg_baselines`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch.utils.data import DataLoader

from aecfe.errors import InputError
from aecfe.splits import SHOT_SELECTION
from classifiers.dg.crops import shot_keys
from classifiers.dg.data import ImageDataset
from classifiers.dg.hparams import get_hparams
from classifiers.dg.training import TrainConfig, predict_dataset
from classifiers.dg.transforms import eval_transform
from classifiers.dg.workflows import few_shot_workflow

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FewShotFold:
    """One (seed, held-out domain, shots) of the protocol.

    ``shots`` 0: the source model on the whole target domain; k > 0: the model fine-tuned on at most k labelled
    target images per class, on the other target images. ``test_indices`` (n,) dataset indices, ``y_pred`` (n,)
    predicted class ids, ``train_classes`` the class ids the model was trained on (sources, plus the fine-tuning
    shots), ``n_train`` the number of training images (sources, plus the shots).
    """

    seed: int
    sources: tuple[str, ...]
    target: str
    shots: int
    test_indices: np.ndarray
    y_pred: np.ndarray
    train_classes: np.ndarray
    n_train: int


def protocol_fingerprint(dataset: ImageDataset, source_hparams: Mapping[str, Any] | None,
                         finetune_hparams: Mapping[str, Any] | None, trainable: str,
                         degrade_domains: Sequence[str]) -> str:
    """12 hex digits of sha256(settings as sorted-key JSON + the dataset's class ids (N,) int64 bytes), the
    settings being the full ``FewShot`` and ``FewShotFinetune`` hyper-parameters, ``trainable``, the sorted
    degraded domains and, for keyed images and crops (:func:`classifiers.dg.crops.shot_keys`),
    :data:`aecfe.splits.SHOT_SELECTION` (their shots' rule)."""
    settings = {"source": get_hparams("FewShot", source_hparams),
                "finetune": get_hparams("FewShotFinetune", finetune_hparams),
                "trainable": trainable, "degrade": sorted(degrade_domains)}
    if shot_keys(dataset) is not None:  # keyed images and crops draw their shots by the shared selection
        settings["shot_selection"] = SHOT_SELECTION
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()
                          + np.ascontiguousarray(dataset.targets).tobytes()).hexdigest()[:12]


def few_shot_lodo(dataset: ImageDataset, shots: Sequence[int], runs_dir: str | Path, *, seeds: Sequence[int] = (0,),
                  source_hparams: Mapping[str, Any] | None = None,
                  finetune_hparams: Mapping[str, Any] | None = None, trainable: str = "all",
                  degrade_domains: Sequence[str] = (), progress: bool = True,
                  batch_size: int = 64, device: str | None = None) -> list[FewShotFold]:
    """The protocol of the module docstring on ``dataset`` (>= 2 domains; its own transform is ignored).

    ``device``: where the networks train and predict (None: this process's GPU if any, else the CPU).
    Returns, per seed and held-out domain (in ``dataset.domain_names`` order), one fold per k of ``shots`` (each
    >= 1) and then the ``shots = 0`` fold of the source model.
    """
    names = list(dataset.domain_names)
    if len(names) < 2:
        raise InputError(f"the few-shot protocol holds out one domain of several; the dataset has {names}")
    if not shots or min(shots) < 1:
        raise InputError(f"shots per class must be >= 1, got {list(shots)}")
    fingerprint = protocol_fingerprint(dataset, source_hparams, finetune_hparams, trainable, degrade_domains)
    size = get_hparams("FewShot", source_hparams)["image_size"]
    folds = []
    for seed in seeds:
        for target in names:
            sources = tuple(d for d in names if d != target)
            in_sources = np.isin(dataset.domain_ids, [names.index(d) for d in sources])
            target_index = np.flatnonzero(dataset.domain_ids == names.index(target))
            n_source = int(in_sources.sum())
            seen = np.unique(dataset.targets[in_sources])
            run_dir = Path(runs_dir) / f"FewShot_seed{seed}_{target}-heldout_{fingerprint}"
            source = None
            for k in shots:
                logger.info("few-shot, seed %d: %s -> %s, %d shots per class", seed, "+".join(sources), target, k)
                result = few_shot_workflow(dataset, list(sources), target, shots_per_class=k, trainable=trainable,
                                           degrade_domains=degrade_domains, source_hparams=source_hparams,
                                           finetune_hparams=finetune_hparams, seed=seed,
                                           config=TrainConfig(out_dir=run_dir / f"k{k}", progress=progress,
                                                              device=device),
                                           source=source)
                source = result.source
                folds.append(FewShotFold(seed, sources, target, k, result.test_indices, result.y_pred,
                                         np.union1d(seen, dataset.targets[result.finetune_indices]),
                                         n_source + len(result.finetune_indices)))
            loader = DataLoader(dataset.subset(target_index, transform=eval_transform("fewshot", size)),
                                batch_size=batch_size)
            _, y_pred = predict_dataset(source, loader)
            folds.append(FewShotFold(seed, sources, target, 0, target_index, y_pred, seen, n_source))
    return folds
