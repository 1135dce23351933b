"""The few-shot domain adaptation workflow end to end (METHODS §5, §8.16-8.18).

1. Source training of :class:`~classifiers.dg.algorithms.FewShot` on the pooled source domains, every image
   Reinhard-normalised to the fixed reference statistics, ``degrade_domains`` (the high-quality source) degraded
   in resolution and zoom.
2. At most ``shots_per_class`` labelled target images per class, drawn class-stratified
   (:func:`~classifiers.dg.data.few_shot_indices`; with content keys — a crop dataset's groups, or whole images
   loaded with their SHA-1 (:func:`aecfe.dg_baselines.load_image_domains`) — the shared selection
   :func:`aecfe.splits.few_shot_selection`: the same images as the embedding heads' few-shot rows and
   ``aecfe-adapt --shots``; without keys a seeded draw over the dataset's order); fine-tuning of a copy of the
   source model on them (``trainable="all"``, the repo setting, or ``"head"``).
3. Prediction on every other target image, by the source model (no fine-tuning) and the fine-tuned one, scored
   with :func:`aecfe.metrics.classification_scores`.

On cell crops (:class:`~classifiers.dg.crops.CropDataset`) the transforms are the crop versions (the
degradation keeps its resolution loss, drops its zoom: :mod:`classifiers.dg.transforms`), and a target cell
that shares its group (its image, or a byte-identical copy) with a shot is not scored; whole images with content
keys likewise (a byte-identical copy of a shot is not scored).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch.utils.data import DataLoader

from aecfe.errors import InputError
from aecfe.metrics import classification_scores
from classifiers.dg.algorithms import Algorithm, FewShotFinetune, build_algorithm
from classifiers.dg.crops import is_crop_dataset, shot_keys
from classifiers.dg.data import ImageDataset, few_shot_indices
from classifiers.dg.hparams import get_hparams
from classifiers.dg.training import TrainConfig, predict_dataset, train
from classifiers.dg.transforms import eval_transform, train_transform


@dataclasses.dataclass
class FewShotResult:
    """Models, the target samples used (dataset indices) and predictions (class ids) on the target test part.

    ``scores`` maps ``"source_only"`` and ``"finetuned"`` to :func:`aecfe.metrics.classification_scores`.
    """

    source: Algorithm
    finetuned: Algorithm
    finetune_indices: np.ndarray
    test_indices: np.ndarray
    y_true: np.ndarray
    y_pred_source: np.ndarray
    y_pred: np.ndarray
    scores: dict[str, dict[str, Any]]


def few_shot_workflow(dataset: ImageDataset, sources: Sequence[str], target: str, *,
                      shots_per_class: int | None = None, trainable: str = "all",
                      degrade_domains: Sequence[str] = (), source_hparams: Mapping[str, Any] | None = None,
                      finetune_hparams: Mapping[str, Any] | None = None, seed: int = 0,
                      config: TrainConfig | None = None, batch_size: int = 64,
                      source: Algorithm | None = None) -> FewShotResult:
    """Run the workflow of the module docstring on ``dataset`` (its own transform is ignored).

    ``shots_per_class`` defaults to the ``FewShotFinetune`` hyper-parameter; ``config.out_dir`` (if any)
    receives ``source/`` and ``finetune/`` run folders; ``seed`` draws the fine-tuning set and seeds training.
    ``source``: a source model already trained on ``sources`` (e.g. ``result.source`` of a run with another
    ``shots_per_class``): step 1 is skipped.
    """
    names = list(dataset.domain_names)
    unknown = sorted((set(sources) | {target} | set(degrade_domains)) - set(names))
    if unknown or target in sources or not sources:
        raise InputError(f"sources {list(sources)} and target {target!r} must be distinct known domains "
                         f"{names} (unknown: {unknown})")
    config = config or TrainConfig(progress=False)
    finetune_defaults = get_hparams("FewShotFinetune", finetune_hparams)
    shots = shots_per_class or finetune_defaults["shots_per_class"]
    size = get_hparams("FewShot", source_hparams)["image_size"]
    source_ids = [names.index(s) for s in sources]
    source_index = np.flatnonzero(np.isin(dataset.domain_ids, source_ids))
    target_index = np.flatnonzero(dataset.domain_ids == names.index(target))
    crops, groups = is_crop_dataset(dataset), shot_keys(dataset)

    def run_config(name: str) -> TrainConfig:
        out_dir = None if config.out_dir is None else Path(config.out_dir) / name
        return dataclasses.replace(config, seed=seed, out_dir=out_dir)

    if source is None:
        source_set = dataset.subset(source_index, transform={
            name: train_transform("fewshot", size, degrade=name in degrade_domains, crops=crops)
            for name in names})
        source = build_algorithm("FewShot", len(dataset.classes), 1, source_hparams)
        source = train(source, source_set, None, run_config("source")).algorithm

    finetune_index = few_shot_indices(dataset.targets, shots, seed, candidates=target_index, keys=groups)
    test_index = np.setdiff1d(target_index, finetune_index)
    if groups is not None:  # no scored cell or image from the image (or an identical copy) of a shot
        test_index = test_index[~np.isin(groups[test_index], groups[finetune_index])]
    finetuned = FewShotFinetune.from_algorithm(source, {"trainable": trainable, **(finetune_hparams or {})})
    finetune_set = dataset.subset(finetune_index, transform=train_transform("fewshot_target", size, crops=crops))
    finetuned = train(finetuned, finetune_set, None, run_config("finetune")).algorithm

    loader = DataLoader(dataset.subset(test_index, transform=eval_transform("fewshot", size)),
                        batch_size=batch_size, num_workers=config.num_workers)
    y_true, y_pred_source = predict_dataset(source, loader)
    _, y_pred = predict_dataset(finetuned, loader)
    classes = np.asarray(dataset.classes, dtype=object)
    seen = {"source_only": np.unique(dataset.targets[source_index]),
            "finetuned": np.union1d(dataset.targets[source_index], dataset.targets[finetune_index])}
    scores = {name: classification_scores(classes[y_true], classes[predicted], classes[seen[name]])
              for name, predicted in (("source_only", y_pred_source), ("finetuned", y_pred))} if len(y_true) else {}
    return FewShotResult(source, finetuned, finetune_index, test_index, y_true, y_pred_source, y_pred, scores)
