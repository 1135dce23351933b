"""Deep CORAL, DomainBed's "mean_cov" version (METHODS §3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from classifiers.dg.algorithms.base import register, split_minibatches
from classifiers.dg.algorithms.erm import ERM
from classifiers.dg.losses import pairwise_mean_cov


@register
class CORAL(ERM):
    """L = mean_e CE_e + γ · mean_{a<b} [mean((μ_a − μ_b)²) + mean((C_a − C_b)²)] over the domain minibatches
    (:func:`~classifiers.dg.losses.mean_cov_distance`), γ = ``mmd_gamma``."""

    def update(self, minibatches) -> dict[str, float]:
        self._count_step()
        xs, ys, _ = split_minibatches(minibatches, self.device)
        features = self.featurizer(torch.cat(xs)).split([len(x) for x in xs])
        objective = torch.stack([F.cross_entropy(self.classifier(f), y) for f, y in zip(features, ys)]).mean()
        penalty = pairwise_mean_cov(list(features))
        self.optimize(objective + self.hparams["mmd_gamma"] * penalty, self.optimizer)
        return {"loss": objective.item(), "penalty": penalty.item()}
