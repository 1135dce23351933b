"""The few-shot domain adaptation workflow's network and training (METHODS §5.4-5.6, §8.15, §8.17).

Source training: :class:`FewShot` on the pooled source images (Reinhard-normalised, the high-quality source
degraded: :mod:`classifiers.dg.transforms`). Fine-tuning: :meth:`FewShotFinetune.from_algorithm` copies the
trained network and trains it on at most k labelled target images per class
(:func:`classifiers.dg.data.few_shot_indices`), every parameter (``trainable="all"``) or the head only
(``trainable="head"``).
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecfe.errors import InputError
from classifiers.dg.algorithms.base import Algorithm, register, split_minibatches

if TYPE_CHECKING:
    from classifiers.dg.data import TrainingData

TRAINABLE = ("all", "head")
SCHEDULES = ("constant", "one_cycle")


def fastai_head(n_inputs: int, hidden: int, n_classes: int, dropouts: tuple[float, float]) -> nn.Sequential:
    """fastai ``create_head`` without pooling: BN(n_in) → Dropout → Linear(n_in, hidden, no bias) → ReLU →
    BN(hidden) → Dropout → Linear(hidden, C, no bias); BatchNorm weight 1, bias 1e-3 (fastai's init)."""
    head = nn.Sequential(nn.BatchNorm1d(n_inputs), nn.Dropout(dropouts[0]), nn.Linear(n_inputs, hidden, bias=False),
                         nn.ReLU(inplace=True), nn.BatchNorm1d(hidden), nn.Dropout(dropouts[1]),
                         nn.Linear(hidden, n_classes, bias=False))
    for module in head:
        if isinstance(module, nn.BatchNorm1d):
            nn.init.ones_(module.weight)
            nn.init.constant_(module.bias, 1e-3)
    return head


@register
class FewShot(Algorithm):
    """Encoder = featurizer (EfficientNet-B0 *with* its ImageNet dropout + 1280→1000 top) → Linear(·, 256) (the
    image embedding, :meth:`features`); head = :func:`fastai_head` (256 → 512 → C).

    Loss: CE with label smoothing ε (``label_smoothing``; fastai's LabelSmoothingCrossEntropy). Optimiser: AdamW
    (decoupled weight decay, fastai's Adam) with ``betas``; ``lr_schedule="one_cycle"`` is fastai's
    ``fit_one_cycle`` (OneCycleLR: 25 % warm-up, div 25, final div 1e5, cosine, β₁ cycled 0.95 → 0.85 → 0.95)
    over the run's steps. ``trainable="head"`` freezes the encoder (no gradient, eval mode).
    """

    def __init__(self, num_classes, num_domains, hparams=None, featurizer=None):
        super().__init__(num_classes, num_domains, hparams, featurizer)
        hp = self.hparams
        if hp["trainable"] not in TRAINABLE or hp["lr_schedule"] not in SCHEDULES:
            raise InputError(f"trainable must be one of {TRAINABLE} and lr_schedule one of {SCHEDULES}, got "
                             f"{hp['trainable']!r}, {hp['lr_schedule']!r}")
        self.embedding = nn.Linear(self.featurizer.n_outputs, hp["embedding_dim"])
        self.classifier = fastai_head(hp["embedding_dim"], hp["head_hidden"], num_classes, tuple(hp["head_dropout"]))
        if hp["trainable"] == "head":
            self.featurizer.requires_grad_(False)
            self.embedding.requires_grad_(False)
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=hp["lr"], weight_decay=hp["weight_decay"],
                                           betas=tuple(hp["betas"]))
        self.optimizers.append(self.optimizer)

    def train(self, mode: bool = True) -> "FewShot":
        super().train(mode)
        if self.hparams["trainable"] == "head":
            self.featurizer.eval()
            self.embedding.eval()
        return self

    def setup(self, data: "TrainingData") -> None:
        if self.hparams["lr_schedule"] == "one_cycle":
            self.schedulers = [torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=self.hparams["lr"], total_steps=max(data.steps, 2), pct_start=0.25,
                div_factor=25.0, final_div_factor=1e5, anneal_strategy="cos", base_momentum=0.85,
                max_momentum=0.95)]

    def features(self, x: Tensor) -> Tensor:
        return self.embedding(self.featurizer(x))

    def update(self, minibatches) -> dict[str, float]:
        self._count_step()
        xs, ys, _ = split_minibatches(minibatches, self.device)
        logits = self.predict(torch.cat(xs))
        loss = F.cross_entropy(logits, torch.cat(ys), label_smoothing=self.hparams["label_smoothing"])
        self.optimize(loss, self.optimizer)
        for scheduler in self.schedulers:
            if scheduler.last_epoch + 1 < scheduler.total_steps:
                scheduler.step()
        return {"loss": loss.item(), "lr": self.optimizer.param_groups[0]["lr"]}

    @classmethod
    def from_algorithm(cls, source: "FewShot", hparams=None) -> "FewShot":
        """A new algorithm of this class with ``source``'s trained weights (encoder, embedding and head) and its
        network hyper-parameters, a fresh optimiser and ``hparams`` on top (e.g. ``{"trainable": "head"}``)."""
        keys = ("backbone", "freeze_bn", "dropout", "include_top", "normalize", "embedding_dim", "head_hidden",
                "head_dropout", "image_size")
        merged = {**{key: source.hparams[key] for key in keys}, **(hparams or {})}
        new = cls(source.num_classes, source.num_domains, merged, featurizer=copy.deepcopy(source.featurizer))
        new.embedding.load_state_dict(source.embedding.state_dict())
        new.classifier.load_state_dict(source.classifier.state_dict())
        return new.to(source.device)


@register
class FewShotFinetune(FewShot):
    """:class:`FewShot` with the fine-tuning defaults (repo setting: Adam 7e-5, batch 5, 50 epochs, plain CE,
    every parameter trainable); build it from a source-trained model with :meth:`FewShot.from_algorithm`."""
