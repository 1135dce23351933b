"""Named autoencoder training recipes: the published reference, and this package's default.

* ``"reference"`` — METHODS §1.5–1.7 as the reference code trains: the 128-px image decoder from the first step,
  the raw moment matching (``mmd``) at β = 5, Adam at a constant lr 1e-3, 150 epochs. On real cells its code
  collapses to a constant within two epochs (DESIGN, "Lessons about the autoencoder"); kept exactly, by name.
* ``"aecfe"`` (default) — the same encoder, feature decoder and moment matching, trained so that it learns on a
  CPU budget (the measurements behind each choice: ``docs/autoencoder_training.md``):

  - a linear path on the top 50 principal axes of the scaled maps beside the convolutions, fitted before the first
    step so that training starts from the PCA code instead of the mean cell (:mod:`extractors.linear_path`): on the
    shared labs it reconstructs the maps better after 5 cheap-path epochs (FVU 0.31) than the reference
    architecture after the full 60 (0.38), and its code no longer trails its PCA-50 yardstick in-lab;
  - the feature reconstruction is the fraction of variance unexplained
    (:class:`~extractors.losses.UnexplainedVarianceLoss`): a constant code costs 1 there, more than the moment
    matching of a live code can ever save (~0.01–0.03 per unit of β), so collapsing no longer pays;
  - β = 5 (the sweep's best leave-one-lab-out F1 at an unchanged in-lab F1; β = 1 aligns too little, β = 20 starts
    to shrink the code), rising from 0 over the first tenth of training (reconstruction first);
  - the first 80 % of the epochs train the cheap path (encoder + feature decoder, ~20x faster per cell); the
    light 64-px image decoder joins for the last 20 %;
  - one-cycle learning rate peaking at 1e-3, domain-balanced batches of 64.

``recipe_configs(name, model=..., trainer=...)`` returns the (model, trainer) configs with overrides applied; when
``epochs`` is overridden, the fractions above (image phase, warm-up) follow it unless given explicitly.
"""
from __future__ import annotations

import math
from typing import Any

from aecfe.errors import InputError
from extractors.autoencoder import AutoencoderConfig
from extractors.trainer import TrainerConfig

BETA = 5.0
"""Alignment weight of the ``aecfe`` recipe, from the β sweep on the shared labs (docs/autoencoder_training.md)."""

RECIPES: dict[str, dict[str, Any]] = {
    "reference": {"model": {}, "trainer": {}},
    "aecfe": {
        "model": {"image_decoder": "light", "linear_path": 50},
        "trainer": {"epochs": 60, "alignment": "mmd", "beta": BETA, "feature_loss": "fvu", "lr_schedule": "onecycle",
                    "balance_domains": True},
        "fractions": {"image_from_epoch": 0.8, "beta_warmup_epochs": 0.1},
    },
}
DEFAULT_RECIPE = "aecfe"


def recipe_configs(name: str = DEFAULT_RECIPE, *, model: dict[str, Any] | None = None,
                   trainer: dict[str, Any] | None = None) -> tuple[AutoencoderConfig, TrainerConfig]:
    """(AutoencoderConfig, TrainerConfig) of recipe ``name`` with ``model`` / ``trainer`` field overrides.

    Fields the recipe gives as a fraction of the epochs (``image_from_epoch``, ``beta_warmup_epochs``) are computed
    from the final ``epochs`` unless overridden. ``alignment_options`` given in ``trainer`` are merged into the
    recipe's when the alignment is unchanged, and replace them otherwise.

    Example:
        >>> _, trainer = recipe_configs("aecfe", trainer={"epochs": 10})
        >>> trainer.epochs, trainer.image_from_epoch, trainer.beta_warmup_epochs
        (10, 8, 1.0)
    """
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES)}")
    recipe, model, trainer = RECIPES[name], dict(model or {}), dict(trainer or {})
    values = {**recipe["trainer"], **trainer}
    same_alignment = values.get("alignment", "mmd") == recipe["trainer"].get("alignment", "mmd")
    recipe_options = recipe["trainer"].get("alignment_options", {}) if same_alignment else {}
    values["alignment_options"] = {**recipe_options, **trainer.get("alignment_options", {})}
    epochs = values.get("epochs", TrainerConfig.epochs)
    for field, fraction in recipe.get("fractions", {}).items():
        if field not in trainer:
            amount = fraction * epochs
            values[field] = math.floor(amount) if field == "image_from_epoch" else round(amount, 3)
    return AutoencoderConfig(**{**recipe["model"], **model}), TrainerConfig(**values)
