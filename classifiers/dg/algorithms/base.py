"""The :class:`Algorithm` interface, the registry and the pieces every algorithm shares.

An algorithm is an ``nn.Module`` holding its networks, optimisers and state (buffers), with

* ``update(minibatches) -> dict[str, float]`` — one optimisation step. ``minibatches`` is a list with one entry
  per training domain (DomainBed's convention): ``(x, y)`` — the domain index is the list position — or
  ``(x, y, domain)`` with ``domain`` an int or a (B,) tensor of domain indices. x: (B, 3, H, W) float in [0, 1];
  y: (B,) long class ids.
* ``predict(x) -> logits`` (B, num_classes).

and optional hooks the training loop calls: ``setup(data)`` once before training and ``before_update(data)``
before every step (``data`` is a :class:`~classifiers.dg.data.TrainingData`: the training set, its class
counts, full passes over it); ``swad_start_step`` (SWAD segments holding earlier weights are discarded).

Data parallel: :meth:`Algorithm.optimize` averages the gradients of the optimiser's parameters over the
processes of an initialised process group before stepping (no ``DistributedDataParallel`` wrapper, so
algorithms with several optimisers and backward passes work unchanged). Batch statistics (CORAL covariances,
contrastive denominators, SelfReg's BatchNorm) are computed per process on its share of the batch.

>>> ALGORITHMS["ERM"] is get_algorithm("ERM")
True
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aecfe.errors import InputError
from classifiers.dg.backbones import Featurizer, build_featurizer, weights_name
from classifiers.dg.hparams import get_hparams

if TYPE_CHECKING:
    from classifiers.dg.data import TrainingData

logger = logging.getLogger(__name__)

ALGORITHMS: dict[str, type["Algorithm"]] = {}
"""Registered algorithms by name (the class name)."""


def register(cls: type["Algorithm"]) -> type["Algorithm"]:
    """Class decorator adding ``cls`` to :data:`ALGORITHMS` under its class name."""
    ALGORITHMS[cls.__name__] = cls
    return cls


def get_algorithm(name: str) -> type["Algorithm"]:
    """The algorithm class registered as ``name``."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise InputError(f"unknown algorithm {name!r}; available: {', '.join(sorted(ALGORITHMS))}") from None


def build_algorithm(name: str, num_classes: int, num_domains: int, hparams: Mapping[str, Any] | None = None,
                    featurizer: Featurizer | None = None) -> "Algorithm":
    """``get_algorithm(name)(num_classes, num_domains, hparams, featurizer)``."""
    return get_algorithm(name)(num_classes, num_domains, hparams, featurizer)


def featurizer_from_hparams(hparams: Mapping[str, Any], load_weights: bool = True) -> Featurizer:
    """The featurizer the hyper-parameters describe (``backbone``, ``weights``, ``freeze_bn``, ``dropout``,
    ``include_top``, ``normalize``); ``load_weights=False`` skips the pretrained weights (they are about to be
    overwritten)."""
    return build_featurizer(hparams["backbone"], hparams["weights"] if load_weights else None,
                            freeze_bn=hparams["freeze_bn"], dropout=hparams["dropout"],
                            include_top=hparams["include_top"], normalize=hparams["normalize"])


def split_minibatches(minibatches, device: torch.device) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """(xs, ys, ds) per minibatch on ``device``; ds are (B,) long domain indices (see the module docstring)."""
    if not minibatches:
        raise InputError("update() needs at least one minibatch")
    xs, ys, ds = [], [], []
    for position, batch in enumerate(minibatches):
        if len(batch) == 2:
            (x, y), domain = batch, position
        elif len(batch) == 3:
            x, y, domain = batch
        else:
            raise InputError(f"a minibatch must be (x, y) or (x, y, domain), got {len(batch)} items")
        x, y = x.to(device), y.to(device).long()
        domain = torch.as_tensor(domain, device=device).long()
        xs.append(x)
        ys.append(y)
        ds.append(domain.expand(len(y)) if domain.ndim == 0 else domain)
    return xs, ys, ds


class Algorithm(nn.Module):
    """Base class: featurizer + linear classifier, the optimiser helpers and the hook defaults.

    Args:
        num_classes: C. num_domains: M training domains (minibatch positions 0 … M−1).
        hparams: overrides of :func:`classifiers.dg.hparams.get_hparams` for this algorithm.
        featurizer: a ready featurizer (default: built from the hyper-parameters).
    """

    def __init__(self, num_classes: int, num_domains: int, hparams: Mapping[str, Any] | None = None,
                 featurizer: Featurizer | None = None):
        super().__init__()
        if num_classes < 1 or num_domains < 1:
            raise InputError(f"need >= 1 class and >= 1 domain, got {num_classes} and {num_domains}")
        self.hparams = get_hparams(type(self).__name__, hparams)
        self.hparams["weights"] = weights_name(self.hparams["weights"])
        self.num_classes, self.num_domains = num_classes, num_domains
        self.featurizer = featurizer if featurizer is not None else featurizer_from_hparams(self.hparams)
        self.classifier = nn.Linear(self.featurizer.n_outputs, num_classes)
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[Any] = []

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def swad_start_step(self) -> int:
        return 0

    def adam(self, params, lr: float | None = None, weight_decay: float | None = None, **kwargs) -> torch.optim.Adam:
        """Adam over ``params`` (default lr and weight decay from the hyper-parameters), registered for
        checkpoints."""
        optimizer = torch.optim.Adam(params, lr=self.hparams["lr"] if lr is None else lr,
                                     weight_decay=self.hparams["weight_decay"] if weight_decay is None
                                     else weight_decay, **kwargs)
        self.optimizers.append(optimizer)
        return optimizer

    def optimize(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward, average the gradients over processes (if distributed), step."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                flat = torch.cat([g.reshape(-1) for g in grads])
                dist.all_reduce(flat)
                flat /= dist.get_world_size()
                for grad, average in zip(grads, flat.split([g.numel() for g in grads])):
                    grad.copy_(average.view_as(grad))
        optimizer.step()

    def setup(self, data: "TrainingData") -> None:
        """Called once before training (after a resume too); default: nothing."""

    def before_update(self, data: "TrainingData") -> None:
        """Called before every :meth:`update` by the training loop; default: nothing."""

    def update(self, minibatches) -> dict[str, float]:
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Features (B, n_outputs) of images x."""
        return self.featurizer(x)

    def predict(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes)."""
        return self.classifier(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.predict(x)

    def _count_step(self) -> int:
        """Increment ``update_count``; returns the step index of this update (its value before)."""
        step = int(self.update_count)
        self.update_count += 1
        return step


def mlp(n_inputs: int, n_outputs: int, width: int, depth: int, dropout: float) -> nn.Sequential:
    """DomainBed's MLP: Linear(n_in, width) → Dropout → ReLU, (depth − 2) × [Linear(width, width) → Dropout →
    ReLU], Linear(width, n_out)."""
    layers: list[nn.Module] = [nn.Linear(n_inputs, width), nn.Dropout(dropout), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Dropout(dropout), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, n_outputs))
