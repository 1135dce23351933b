"""Deep domain-generalization baselines on cell images, one small module per job.

* :mod:`~classifiers.dg.hparams` — every algorithm's hyper-parameter defaults (METHODS' reference values).
* :mod:`~classifiers.dg.backbones` — torchvision featurizers (frozen BN, last conv map, weights enum / file).
* :mod:`~classifiers.dg.algorithms` — ERM, Oracle, DANN, CORAL, Mixup, SelfReg, BoDA, CRT, SADA, FewShot,
  FewShotFinetune: ``update(minibatches) -> dict``, ``predict(x) -> logits``, found by name in ``ALGORITHMS``.
* :mod:`~classifiers.dg.losses`, :mod:`~classifiers.dg.stain`, :mod:`~classifiers.dg.color` — loss terms, SADA's
  stain augmentation, Reinhard colour transfer and per-image colour jitter.
* :mod:`~classifiers.dg.data`, :mod:`~classifiers.dg.transforms` — image datasets, resumable batch plans,
  training/evaluation transforms; :mod:`~classifiers.dg.crops` — the detector's cell crops as a dataset.
* :mod:`~classifiers.dg.training` — the one training loop (checkpoints, resume, SWAD, torchrun) and
  ``predict_dataset``; :mod:`~classifiers.dg.swad` — SWAD with LossValley.
* :mod:`~classifiers.dg.estimator` — :class:`DGClassifier`, to run the algorithms in
  :func:`aecfe.evaluation.evaluate_cross_domain` (same splits, metrics and tables as the embedding heads);
  :mod:`~classifiers.dg.workflows` — the few-shot workflow end to end.

Example::

    from classifiers.dg import ImageDataset, TrainConfig, build_algorithm, train, train_transform
    train_set = ImageDataset(images, labels, domains, transform=train_transform("domainbed", 224))
    algorithm = build_algorithm("BoDA", len(train_set.classes), len(train_set.domain_names))
    model = train(algorithm, train_set, val_set, TrainConfig(out_dir="runs/boda")).algorithm
"""
from classifiers.dg.algorithms import (ALGORITHMS, CORAL, CRT, DANN, ERM, SADA, Algorithm, BoDA, FewShot,
                                       FewShotFinetune, Mixup, Oracle, SelfReg, build_algorithm, get_algorithm,
                                       register)
from classifiers.dg.backbones import BACKBONES, Featurizer, build_featurizer
from classifiers.dg.color import REFERENCE_MEAN, REFERENCE_STD, ReinhardTransform, color_jitter, reinhard
from classifiers.dg.crops import CropDataset, crop_dataset
from classifiers.dg.data import (BatchPlan, ImageDataset, few_shot_indices, steps_for_epochs,
                                 synthetic_dataset)
from classifiers.dg.estimator import DGClassifier
from classifiers.dg.hparams import ALGORITHM_DEFAULTS, COMMON, get_hparams
from classifiers.dg.stain import stain_augment
from classifiers.dg.swad import SWAD
from classifiers.dg.training import (TrainConfig, TrainingData, TrainResult, load_algorithm, predict_dataset,
                                     train, validate)
from classifiers.dg.transforms import AUGMENTATIONS, eval_transform, train_transform
from classifiers.dg.workflows import FewShotResult, few_shot_workflow

__all__ = [
    "ALGORITHMS", "ALGORITHM_DEFAULTS", "AUGMENTATIONS", "Algorithm", "BACKBONES", "BatchPlan", "BoDA", "COMMON",
    "CORAL", "CRT", "DANN", "DGClassifier", "ERM", "Featurizer", "FewShot", "FewShotFinetune", "FewShotResult",
    "ImageDataset", "Mixup", "Oracle", "REFERENCE_MEAN", "REFERENCE_STD", "ReinhardTransform", "SADA", "SWAD",
    "SelfReg", "TrainConfig", "TrainResult", "TrainingData", "build_algorithm", "build_featurizer",
    "color_jitter", "eval_transform", "few_shot_indices", "few_shot_workflow", "get_algorithm", "get_hparams",
    "load_algorithm", "predict_dataset", "register", "reinhard", "stain_augment", "steps_for_epochs",
    "synthetic_dataset", "train", "train_transform", "validate",
]
__all__ += ["CropDataset", "crop_dataset"]  # the cell-crop input (classifiers.dg.crops)
