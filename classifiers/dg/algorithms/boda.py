"""BoDA (balanced domain-class distribution alignment, METHODS §2.2-2.3) and its decoupled "Ours⁺" (§2.4, CRT)."""
from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F

from aecfe.errors import InputError
from classifiers.dg.algorithms.base import Algorithm, register, split_minibatches
from classifiers.dg.losses import boda_loss, pairwise_mean_cov

if TYPE_CHECKING:
    from classifiers.dg.data import TrainingData

logger = logging.getLogger(__name__)


@register
class BoDA(Algorithm):
    """L = mean_e CE_e + macro_weight · L_macro + boda_weight · L_BoDA (the last from ``boda_start_step``).

    * L_macro: CORAL mean_cov penalty between every pair of domain minibatches (always on; in the reference
      code, not in the Umer paper).
    * L_BoDA: :func:`~classifiers.dg.losses.boda_loss` with the count table n (M, C) of the training set
      (``+inf`` for absent domain-class pairs, buffer ``counts``) and the centroids ψ (M, C, D) (buffer
      ``centroids``).
    * Centroids: every ``feat_update_freq`` steps (step > 0, before the update) a full pass over the training
      set (eval mode, no gradient, training transforms) gives the per-pair mean features ψ_now and
      ψ ← (1 − m)·ψ_now + m·ψ_old with m = ``momentum``; the first update is a copy. Pairs without samples in the
      pass keep their value.

    The training loop must call :meth:`setup` (count table) and :meth:`before_update` (full passes).
    """

    def __init__(self, num_classes, num_domains, hparams=None, featurizer=None):
        super().__init__(num_classes, num_domains, hparams, featurizer)
        dim = self.featurizer.n_outputs
        self.register_buffer("counts", torch.full((num_domains, num_classes), float("inf")))
        self.register_buffer("centroids", torch.zeros(num_domains, num_classes, dim))
        self.register_buffer("centroids_initialised", torch.zeros((), dtype=torch.bool))
        self.optimizer = self.adam(self.parameters())

    def set_counts(self, counts) -> None:
        """Training samples per (domain, class), (M, C); zeros become +inf (absent pairs)."""
        counts = torch.as_tensor(counts, dtype=torch.float32)
        if tuple(counts.shape) != tuple(self.counts.shape):
            raise InputError(f"counts must have shape {tuple(self.counts.shape)}, got {tuple(counts.shape)}")
        self.counts.copy_(torch.where(counts > 0, counts, torch.full_like(counts, float("inf"))))

    def setup(self, data: "TrainingData") -> None:
        self.set_counts(data.class_counts)

    def before_update(self, data: "TrainingData") -> None:
        step = int(self.update_count)
        if step > 0 and step % self.hparams["feat_update_freq"] == 0:
            sums, sizes = self._feature_sums(data.full_pass(self.hparams["feature_batch_size"], step))
            self.update_centroids(sums, sizes)

    @torch.no_grad()
    def _feature_sums(self, batches) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = self.training
        self.eval()
        sums = torch.zeros_like(self.centroids)
        sizes = torch.zeros(self.centroids.shape[:2], device=self.device)
        for x, y, domain in batches:
            x, y, domain = x.to(self.device), y.to(self.device), domain.to(self.device)
            features = self.featurizer(x)
            sums.index_put_((domain, y), features, accumulate=True)
            sizes.index_put_((domain, y), torch.ones_like(y, dtype=sizes.dtype), accumulate=True)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums)
            dist.all_reduce(sizes)
        self.train(was_training)
        return sums, sizes

    @torch.no_grad()
    def update_centroids(self, sums: torch.Tensor, sizes: torch.Tensor) -> None:
        """ψ ← (1 − m)·sums/sizes + m·ψ for pairs with samples (a copy the first time)."""
        seen = sizes > 0
        current = sums / sizes.clamp_min(1)[..., None]
        momentum = self.hparams["momentum"] if bool(self.centroids_initialised) else 0.0
        updated = (1 - momentum) * current + momentum * self.centroids
        self.centroids.copy_(torch.where(seen[..., None], updated, self.centroids))
        self.centroids_initialised.fill_(True)

    def update(self, minibatches) -> dict[str, float]:
        step = self._count_step()
        xs, ys, ds = split_minibatches(minibatches, self.device)
        features = self.featurizer(torch.cat(xs))
        per_domain = list(features.split([len(x) for x in xs]))
        ce = torch.stack([F.cross_entropy(self.classifier(f), y) for f, y in zip(per_domain, ys)]).mean()
        macro = pairwise_mean_cov(per_domain)
        loss = ce + self.hparams["macro_weight"] * macro
        logged = {"ce": ce.item(), "macro": macro.item()}
        if step >= self.hparams["boda_start_step"]:
            calibrated = boda_loss(features, torch.cat(ds), torch.cat(ys), self.centroids, self.counts,
                                   self.hparams["nu"], self.hparams["temperature"])
            loss = loss + self.hparams["boda_weight"] * calibrated
            logged["boda"] = calibrated.item()
        self.optimize(loss, self.optimizer)
        return {"loss": loss.item(), **logged}


@register
class CRT(Algorithm):
    """Classifier re-training (BoDA's decoupled "Ours⁺", METHODS §2.4): the featurizer (e.g. of a trained BoDA,
    see :meth:`from_algorithm`) is frozen (no gradient, BatchNorm in eval mode) and only a freshly initialised
    linear classifier is trained with Adam on CE; the training loop samples class-balanced batches
    (``class_balanced`` is on by default)."""

    def __init__(self, num_classes, num_domains, hparams=None, featurizer=None):
        super().__init__(num_classes, num_domains, hparams, featurizer)
        self.featurizer.requires_grad_(False)
        self.optimizer = self.adam(self.classifier.parameters())

    @classmethod
    def from_algorithm(cls, stage1: Algorithm, hparams=None) -> "CRT":
        """A CRT whose featurizer is a copy of ``stage1``'s (its classifier is not carried over)."""
        merged = {key: value for key, value in stage1.hparams.items() if key in
                  ("backbone", "freeze_bn", "dropout", "include_top", "normalize", "image_size")}
        crt = cls(stage1.num_classes, stage1.num_domains, {**merged, **(hparams or {})},
                  featurizer=copy.deepcopy(stage1.featurizer))
        return crt.to(stage1.device)

    def train(self, mode: bool = True) -> "CRT":
        super().train(mode)
        self.featurizer.eval()
        return self

    def update(self, minibatches) -> dict[str, float]:
        self._count_step()
        xs, ys, _ = split_minibatches(minibatches, self.device)
        with torch.no_grad():
            features = self.featurizer(torch.cat(xs))
        loss = F.cross_entropy(self.classifier(features), torch.cat(ys))
        self.optimize(loss, self.optimizer)
        return {"loss": loss.item()}
