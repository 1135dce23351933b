"""Inter-domain Mixup, DomainBed version (METHODS §3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from classifiers.dg.algorithms.base import register, split_minibatches
from classifiers.dg.algorithms.erm import ERM


@register
class Mixup(ERM):
    """Permute the domain minibatches, pair each with the next (cyclically), truncate to the shorter; per pair
    λ ~ Beta(α, α), x̃ = λ·x_i + (1 − λ)·x_j and loss λ·CE(f(x̃), y_i) + (1 − λ)·CE(f(x̃), y_j); sum over pairs / M.
    α = ``mixup_alpha``. One domain is paired with itself."""

    def update(self, minibatches) -> dict[str, float]:
        self._count_step()
        xs, ys, _ = split_minibatches(minibatches, self.device)
        alpha = torch.tensor(float(self.hparams["mixup_alpha"]))
        beta = torch.distributions.Beta(alpha, alpha)
        order = torch.randperm(len(xs)).tolist()
        objective = 0.0
        for i, j in zip(order, order[1:] + order[:1]):
            n = min(len(xs[i]), len(xs[j]))
            lam = float(beta.sample())
            logits = self.predict(lam * xs[i][:n] + (1 - lam) * xs[j][:n])
            objective = objective + lam * F.cross_entropy(logits, ys[i][:n]) \
                + (1 - lam) * F.cross_entropy(logits, ys[j][:n])
        objective = objective / len(xs)
        self.optimize(objective, self.optimizer)
        return {"loss": objective.item()}
