"""Deep domain-generalization baselines on cell images, one small module per job.

* :mod:`~classifiers.dg.hparams` — every algorithm's hyper-parameter defaults (METHODS' reference values).
* :mod:`~classifiers.dg.backbones` — torchvision featurizers (frozen BN, last conv map, weights enum / file).
* :mod:`~classifiers.dg.algorithms` — ERM, Oracle, DANN, CORAL, Mixup, SelfReg, BoDA, CRT, SADA, FewShot,
  FewShotFinetune: ``update(minibatches) -> dict``, ``predict(x) -> logits``, found by name in ``ALGORITHMS``.
* :mod:`~classifiers.dg.losses`, :mod:`~classifiers.dg.stain`, :mod:`~classifiers.dg.color` — loss terms, SADA's
  stain augmentation, Reinhard colour transfer and per-image colour jitter.
* :mod:`~classifiers.dg.data`, :mod:`~classifiers.dg.transforms` — image datasets (and preloading), resumable
  batch plans, what the algorithms' hooks see of their training set (``TrainingData``), training/evaluation
  transforms; :mod:`~classifiers.dg.crops` — the detector's cell crops as a dataset.
* :mod:`~classifiers.dg.training` — the one training loop (checkpoints, resume, SWAD, torchrun) and
  ``predict_dataset``; :mod:`~classifiers.dg.swad` — SWAD with LossValley.
* :mod:`~classifiers.dg.estimator` — :class:`DGClassifier`, to run the algorithms in
  :func:`aecfe.evaluation.evaluate_cross_domain` (same splits, metrics and tables as the embedding heads);
  :mod:`~classifiers.dg.workflows` — the few-shot workflow end to end.

Names are imported on first use (PEP 562), so ``classifiers.dg.hparams`` (the defaults and
:data:`~classifiers.dg.hparams.ALGORITHM_NAMES`) loads without torch; ``from classifiers.dg import X`` works as
usual.

Example::

    from classifiers.dg import ImageDataset, TrainConfig, build_algorithm, train, train_transform
    train_set = ImageDataset(images, labels, domains, transform=train_transform("domainbed", 224))
    algorithm = build_algorithm("BoDA", len(train_set.classes), len(train_set.domain_names))
    model = train(algorithm, train_set, val_set, TrainConfig(out_dir="runs/boda")).algorithm
"""
import importlib

_EXPORTS: dict[str, tuple[str, ...]] = {
    "algorithms": ("ALGORITHMS", "Algorithm", "BoDA", "CORAL", "CRT", "DANN", "ERM", "FewShot", "FewShotFinetune",
                   "Mixup", "Oracle", "SADA", "SelfReg", "build_algorithm", "get_algorithm", "register"),
    "backbones": ("BACKBONES", "Featurizer", "build_featurizer"),
    "crops": ("CropDataset", "crop_dataset"),
    "color": ("REFERENCE_MEAN", "REFERENCE_STD", "ReinhardTransform", "color_jitter", "reinhard"),
    "data": ("BatchPlan", "ImageDataset", "TrainingData", "few_shot_indices", "preload_images", "steps_for_epochs",
             "synthetic_dataset"),
    "estimator": ("DGClassifier",),
    "fewshot_protocol": ("FewShotFold", "few_shot_lodo"),
    "hparams": ("ALGORITHM_DEFAULTS", "ALGORITHM_NAMES", "COMMON", "get_hparams"),
    "stain": ("stain_augment",),
    "swad": ("SWAD",),
    "training": ("TrainConfig", "TrainResult", "load_algorithm", "predict_dataset", "train", "validate"),
    "transforms": ("AUGMENTATIONS", "eval_transform", "train_transform"),
    "workflows": ("FewShotResult", "few_shot_workflow"),
}
"""Submodule -> the names this package re-exports from it."""
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    """``classifiers.dg.X``: the re-exported name X (its submodule imported now), or the submodule X."""
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    elif name in _EXPORTS:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME) | set(_EXPORTS))
