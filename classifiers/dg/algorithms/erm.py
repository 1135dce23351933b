"""ERM and the oracle (METHODS §3.2, §1.9): cross-entropy on the concatenated multi-domain batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from classifiers.dg.algorithms.base import Algorithm, register, split_minibatches


@register
class ERM(Algorithm):
    """Empirical risk minimisation: L = CE(g(f(x)), y) over the concatenated minibatches; Adam."""

    def __init__(self, num_classes, num_domains, hparams=None, featurizer=None):
        super().__init__(num_classes, num_domains, hparams, featurizer)
        self.optimizer = self.adam(self.parameters())

    def update(self, minibatches) -> dict[str, float]:
        self._count_step()
        xs, ys, _ = split_minibatches(minibatches, self.device)
        loss = F.cross_entropy(self.predict(torch.cat(xs)), torch.cat(ys))
        self.optimize(loss, self.optimizer)
        return {"loss": loss.item()}


@register
class Oracle(ERM):
    """ERM trained on the *target* domain's own training split (the upper reference of a transfer). The algorithm
    is ERM; the difference is the data: the diagonal of the ``matrix`` protocol of
    :func:`aecfe.evaluation.evaluate_cross_domain` with :class:`~classifiers.dg.estimator.DGClassifier`
    (trained on a domain's training part, scored on its test part)."""
