"""SelfReg (METHODS §3.2), with the reference code's quirk kept."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from classifiers.dg.algorithms.base import Algorithm, register, split_minibatches

FEATURE_WEIGHT = 0.3
"""Weight of the feature terms relative to the logit terms (fixed in the reference)."""


@register
class SelfReg(Algorithm):
    """CE plus in-class self-supervised regularisers.

    Projector p = Linear → BN → ReLU → Linear → BN → ReLU → Linear → BN (hidden width n_outputs if it is 2048,
    else 2·n_outputs). With λ ~ Beta(0.5, 0.5) and two random permutations π₁, π₂ inside each class of the
    batch, logits o and projections q = p(f): o₂ = o[π₁], q₂ = q[π₁], o₃ = λ·o[π₁] + (1 − λ)·o[π₂], q₃ likewise;
    L_ind = MSE(o, o₂) + 0.3·MSE(f, q₂), L_hdl = MSE(o, o₃) + 0.3·MSE(f, q₃) and
    L = CE + min(CE, 1)·(λ·L_ind + (1 − λ)·L_hdl) with the scale min(CE, 1) detached.

    Quirk of the reference, kept: the *un-projected* features f are compared with the *projected*, permuted
    ones q₂, q₃ (the projector is pulled towards the identity on features of the same class).
    The sort by label is dropped: permuting inside each class is the same thing. The projector's BatchNorm needs
    batches of 2 or more samples in training.
    """

    def __init__(self, num_classes, num_domains, hparams=None, featurizer=None):
        super().__init__(num_classes, num_domains, hparams, featurizer)
        width = self.featurizer.n_outputs
        hidden = width if width == 2048 else 2 * width
        self.projector = nn.Sequential(
            nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, width), nn.BatchNorm1d(width))
        self.optimizer = self.adam(self.parameters())

    @staticmethod
    def _permutation_within_classes(y: torch.Tensor) -> torch.Tensor:
        """Indices π with y[π] = y and π a uniformly random permutation inside each class."""
        order = torch.argsort(y.double() + torch.rand(len(y), dtype=torch.float64, device=y.device) * 0.5)
        groups = torch.argsort(y, stable=True)
        permutation = torch.empty_like(order)
        permutation[groups] = order
        return permutation

    def update(self, minibatches) -> dict[str, float]:
        self._count_step()
        xs, ys, _ = split_minibatches(minibatches, self.device)
        x, y = torch.cat(xs), torch.cat(ys)
        lam = float(torch.distributions.Beta(torch.tensor(0.5), torch.tensor(0.5)).sample())
        features = self.featurizer(x)
        projections = self.projector(features)
        logits = self.classifier(features)
        first, second = self._permutation_within_classes(y), self._permutation_within_classes(y)
        logits_2, projections_2 = logits[first], projections[first]
        logits_3 = lam * logits[first] + (1 - lam) * logits[second]
        projections_3 = lam * projections[first] + (1 - lam) * projections[second]
        individual = F.mse_loss(logits, logits_2) + FEATURE_WEIGHT * F.mse_loss(features, projections_2)
        heterogeneous = F.mse_loss(logits, logits_3) + FEATURE_WEIGHT * F.mse_loss(features, projections_3)
        class_loss = F.cross_entropy(logits, y)
        scale = min(class_loss.item(), 1.0)
        loss = class_loss + scale * (lam * individual + (1 - lam) * heterogeneous)
        self.optimize(loss, self.optimizer)
        return {"loss": loss.item(), "class_loss": class_loss.item()}
