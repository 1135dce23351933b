"""Hyper-parameter defaults of every deep domain-generalization algorithm, in one place.

Values are the reference defaults of METHODS.md (§2.3 BoDA, §3 DomainBed baselines and SWAD, §4.5 SADA,
§5 few-shot workflow) with the choices of §8 where paper and code disagree. ``COMMON`` applies to every
algorithm; ``ALGORITHM_DEFAULTS[name]`` adds or overrides keys for one algorithm; a user's dict overrides both
(unknown keys are an error, so a typo cannot silently fall back to a default).

Keys read by the training loop (:mod:`classifiers.dg.training`) rather than by the algorithm:
``batch_size`` (per domain and per process when ``domain_balanced``, else per process), ``steps``, ``epochs``
(when not None it replaces ``steps``: epochs x batches per epoch of the training set),
``checkpoint_every`` (steps between validation / checkpoints / SWAD segment ends), ``domain_balanced`` (one
minibatch per training domain per step, else one pooled minibatch), ``class_balanced`` (sample each example
with weight 1 / (n_class · C) inside its domain), ``swad`` (dense weight averaging with LossValley selection)
and its ``swad_*`` settings. ``augmentation`` and ``image_size`` name the training transform the algorithm
expects (:func:`classifiers.dg.transforms.train_transform`).

A run's overrides (:func:`algorithm_hparams`): the settings shared by every algorithm of a run (backbone, image
size, learning rate, batch size), the run length with the schedule scaled to it (:data:`SCHEDULE_KEYS`), then
``ALGO.KEY=VALUE`` overrides grouped per algorithm (:func:`split_overrides`).

>>> get_hparams("BoDA")["boda_weight"], get_hparams("BoDA", {"nu": 1.0})["nu"]
(0.1, 1.0)
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Mapping

from aecfe.errors import InputError

COMMON: dict[str, Any] = {
    # backbone (METHODS §3.1, §8.14: torchvision ImageNet ResNet-50, frozen BN, feature dropout 0)
    "backbone": "resnet50",
    "weights": None,
    "freeze_bn": True,
    "dropout": 0.0,
    "include_top": False,
    "normalize": True,  # ImageNet mean/std inside the featurizer (inputs stay [0, 1] images)
    # optimisation (Adam, lr 5e-5, weight decay 0)
    "lr": 5e-5,
    "weight_decay": 0.0,
    # training loop
    "batch_size": 32,
    "steps": 5001,
    "epochs": None,
    "checkpoint_every": 100,
    "domain_balanced": True,
    "class_balanced": False,
    "swad": False,
    "swad_n_converge": 4,
    "swad_n_tolerance": 6,
    "swad_tolerance_ratio": 0.3,
    # data
    "augmentation": "domainbed",
    "image_size": 224,
}

ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "ERM": {},
    # §3.2: alternating min-max, Adam betas (beta1, 0.9) for both optimisers.
    "DANN": {"lambda": 1.0, "d_steps_per_g": 1, "grad_penalty": 0.0, "mlp_width": 256, "mlp_depth": 3,
             "mlp_dropout": 0.0, "beta1": 0.5, "lr_d": 5e-5, "lr_g": 5e-5, "weight_decay_d": 0.0,
             "weight_decay_g": 0.0},
    "CORAL": {"mmd_gamma": 1.0},
    "Mixup": {"mixup_alpha": 0.2},
    "SelfReg": {},
    # §2.3 (MDLT reference, non-DomainNet) and §8.8/§8.9.
    "BoDA": {"boda_weight": 0.1, "temperature": 1.0, "nu": 0.5, "momentum": 0.2, "feat_update_freq": 120,
             "boda_start_step": 500, "macro_weight": 1.0, "feature_batch_size": 64, "batch_size": 24,
             "augmentation": "boda"},
    # §2.4 "Ours+": frozen featurizer, class-balanced sampling, classifier-only retraining.
    "CRT": {"class_balanced": True, "batch_size": 24, "augmentation": "boda"},
    # §4.5 with the §8.10 choices (paper: DISC, LA weight 0.1) and §8.11 (stage 2 trains everything).
    "SADA": {"stage1_steps": 4000, "steps": 8001, "checkpoint_every": 400, "swad": True,
             "n_clusters": 3, "n_stains": 2, "snmf_iterations": 10, "snmf_sparsity": 1e-4,
             "background_percentile": 1.0, "density_percentile": 99.0, "dark_threshold": 0.05,
             "kmeans_restarts": 5, "kmeans_iterations": 100,
             "jitter": (0.2, 0.25, 0.25, 0.15), "contrastive": "disc", "temperature": 0.1, "la_weight": 0.1,
             "projection_size": 128, "local_projection_size": 128, "augmentation": "sada"},
    # §5.4-5.5, §8.15, §8.17: EfficientNet-B0 with its ImageNet top, 256-d embedding, fastai head, label
    # smoothing 0.1, Adam(W) wd 0.01 betas (0.9, 0.99), one-cycle, bs 16, pooled source batches; no ImageNet
    # normalisation (§5.3: the code feeds Reinhard-normalised [0, 1] images).
    "FewShot": {"backbone": "efficientnet_b0", "include_top": True, "freeze_bn": False, "normalize": False,
                "embedding_dim": 256, "head_hidden": 512, "head_dropout": (0.25, 0.5), "label_smoothing": 0.1,
                "lr": 1e-4, "weight_decay": 0.01, "betas": (0.9, 0.99), "lr_schedule": "one_cycle",
                "trainable": "all", "batch_size": 16, "epochs": 15, "domain_balanced": False,
                "augmentation": "fewshot"},
    # §5.6 / §8.17 fixed repo setting: all parameters, Adam 7e-5, bs 5, 50 epochs, plain CE.
    "FewShotFinetune": {"backbone": "efficientnet_b0", "include_top": True, "freeze_bn": False, "normalize": False,
                        "embedding_dim": 256, "head_hidden": 512, "head_dropout": (0.25, 0.5),
                        "label_smoothing": 0.0, "lr": 7e-5, "weight_decay": 0.0, "betas": (0.9, 0.999),
                        "lr_schedule": "constant", "trainable": "all", "batch_size": 5, "epochs": 50,
                        "shots_per_class": 20, "domain_balanced": False, "augmentation": "fewshot_target"},
    # ERM trained and scored in the target domain itself (an upper bound).
    "Oracle": {},
}
"""Per-algorithm keys on top of :data:`COMMON`, one entry per registered algorithm
(:data:`classifiers.dg.algorithms.ALGORITHMS`), in table order. ``shots_per_class`` is read by the few-shot
workflow when it draws the labelled target set (:func:`classifiers.dg.data.few_shot_indices`), not by the
algorithm."""

ALGORITHM_NAMES: tuple[str, ...] = tuple(name for name in ALGORITHM_DEFAULTS if name != "FewShotFinetune")
"""The algorithms a user runs, in table order: every registered one but the few-shot workflow's second stage
(``FewShotFinetune``, trained inside ``FewShot``'s workflow). The choices of ``aecfe-train-dg --algorithm``
(``all``: every one) and the deep baselines of the comparison; importing it pulls in no torch."""


def get_hparams(algorithm: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hyper-parameters of ``algorithm``: :data:`COMMON`, its :data:`ALGORITHM_DEFAULTS`, then
    ``overrides`` (keys must exist in the first two). Returns a fresh dict (safe to mutate)."""
    if algorithm not in ALGORITHM_DEFAULTS:
        raise InputError(f"no hyper-parameter defaults for algorithm {algorithm!r}; known: "
                         f"{', '.join(sorted(ALGORITHM_DEFAULTS))}")
    hparams = copy.deepcopy({**COMMON, **ALGORITHM_DEFAULTS[algorithm]})
    unknown = sorted(set(overrides or {}) - set(hparams))
    if unknown:
        raise InputError(f"unknown hyper-parameter(s) {unknown} for {algorithm}; known: {', '.join(sorted(hparams))}")
    hparams.update(copy.deepcopy(dict(overrides or {})))
    return hparams


SCHEDULE_KEYS = ("stage1_steps", "boda_start_step")
"""Step positions that keep their fraction of the run when its length (``steps``) changes."""


def split_overrides(items: Iterable[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """``[("BoDA.feat_update_freq", 50), ...]`` -> ``{"BoDA": {"feat_update_freq": 50}}``, lists made tuples
    (as the defaults). Each key is checked now (:class:`InputError` for an unknown algorithm or key), not after
    hours of training.

    >>> split_overrides([("SADA.jitter", [0.1, 0.1, 0.1, 0.1]), ("BoDA.nu", 1.0)])
    {'SADA': {'jitter': (0.1, 0.1, 0.1, 0.1)}, 'BoDA': {'nu': 1.0}}
    """
    params: dict[str, dict[str, Any]] = {}
    for item, value in items:
        name, dot, key = item.partition(".")
        if not dot or not key or not name:
            raise InputError(f"hyper-parameter {item}={value!r}: expected ALGO.KEY=VALUE, e.g. "
                             "BoDA.feat_update_freq=50")
        if name not in ALGORITHM_DEFAULTS:
            raise InputError(f"hyper-parameter {item}={value!r}: unknown algorithm {name!r}; known: "
                             f"{', '.join(sorted(ALGORITHM_DEFAULTS))}")
        params.setdefault(name, {})[key] = tuple(value) if isinstance(value, list) else value
        get_hparams(name, params[name])
    return params


def algorithm_hparams(name: str, common: Mapping[str, Any], steps: int | None, checkpoint_every: int | None,
                      explicit: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides of algorithm ``name`` in a run of several.

    In order: ``common`` (keys the algorithm has, None = its default: backbone, weights, image size, learning
    rate (DANN: both optimisers ``lr_d``/``lr_g``), batch size (domain-balanced algorithms only: it is per
    domain; pooled batches keep their default); ``include_top`` off for the ``tiny`` test CNN); the length
    ``steps`` (with ``epochs`` off), each of :data:`SCHEDULE_KEYS` scaled to keep its fraction of the reference
    run, ``round(default · steps / default steps)`` and at least 1 (BoDA's ``boda_start_step`` never before its
    first centroid pass at ``feat_update_freq``), and ``checkpoint_every`` (default ⌈steps / 10⌉); then
    ``explicit`` (wins over everything).
    """
    defaults = get_hparams(name)
    overrides = {key: value for key, value in common.items() if value is not None and key in defaults}
    if not defaults["domain_balanced"]:
        overrides.pop("batch_size", None)
    if "lr" in overrides:
        overrides.update({key: overrides["lr"] for key in ("lr_d", "lr_g") if key in defaults})
    if overrides.get("backbone") == "tiny" and defaults["include_top"]:
        overrides["include_top"] = False  # the test CNN has no ImageNet top
    if steps is not None:
        overrides.update(steps=steps, epochs=None)
        for key in SCHEDULE_KEYS:
            if key in defaults:
                overrides[key] = max(1, round(defaults[key] * steps / defaults["steps"]))
        if "boda_start_step" in overrides:
            frequency = explicit.get("feat_update_freq", defaults["feat_update_freq"])
            overrides["boda_start_step"] = max(overrides["boda_start_step"], frequency)
        overrides["checkpoint_every"] = checkpoint_every or max(1, math.ceil(steps / 10))
    elif checkpoint_every is not None:
        overrides["checkpoint_every"] = checkpoint_every
    overrides.update(explicit)
    return overrides
