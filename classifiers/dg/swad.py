"""SWAD: dense stochastic weight averaging with LossValley selection (METHODS §3.3), a port of the reference.

The training loop calls :meth:`SWAD.update` after every optimisation step (the weights are folded into the
running average of the current *segment*) and :meth:`SWAD.end_segment` at every checkpoint with the validation
loss (mean cross-entropy over the source holdout splits); a segment ends there. LossValley then:

* before convergence: keeps the last ``n_converge`` segments; when the oldest of them has the lowest loss it
  is the start of the valley: ``threshold = (1 + tolerance_ratio) · mean(their losses)`` and the final average
  is started from the segments the reference adds at that point;
* after convergence: once the oldest of the last ``n_tolerance`` segments is not older than the convergence
  step, the valley is *dead* (training should stop) when the minimum loss of those segments exceeds the
  threshold, otherwise that oldest segment is added to the final average;
* :meth:`final_parameters` adds the remaining segments while the minimum loss of the rest stays under the
  threshold.

Faithful quirks of the reference (``khanrc/swad``, also in the SADA fork), kept on purpose: the final average
is an equal-weight mean of segment averages; it is created *empty* from the convergence segment, so the first
segment added replaces it; a segment can be added more than once (the oldest of the smoothing window is added
at every checkpoint until the window fills). Only floating-point parameters are averaged; buffers (frozen
BatchNorm statistics) are taken from the current model and BatchNorm statistics are not re-estimated.

>>> swad = SWAD(n_converge=2, n_tolerance=2, tolerance_ratio=0.3)
>>> model = torch.nn.Linear(2, 1)
>>> for step, loss in enumerate([1.0, 0.9, 0.8, 0.85]):
...     swad.update(model, step)
...     swad.end_segment(loss, step)
>>> swad.converged, swad.dead_valley
(True, False)
"""
from __future__ import annotations

import copy
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


@dataclass
class _Average:
    """Running mean of parameters over ``n`` models, from ``start`` to ``end`` step; ``loss`` at its end."""

    params: dict[str, Tensor] = field(default_factory=dict)
    n: int = 0
    start: int = -1
    end: int = -1
    loss: float = float("nan")

    def add(self, params: dict[str, Tensor], start: int, end: int) -> None:
        """Fold one model (or one segment average, counted as one model) into the mean."""
        if self.n == 0:
            self.params = {name: value.detach().clone() for name, value in params.items()}
            self.start = start
        else:
            for name, value in params.items():
                self.params[name] += (value.detach().to(self.params[name].device) - self.params[name]) / (self.n + 1)
        self.n += 1
        self.end = end

    def state(self) -> dict[str, Any]:
        return {"params": self.params, "n": self.n, "start": self.start, "end": self.end, "loss": self.loss}


def _floating_parameters(module: nn.Module) -> dict[str, Tensor]:
    return {name: param.detach() for name, param in module.named_parameters() if param.is_floating_point()}


class SWAD:
    """Segment averaging + LossValley (see the module docstring). Defaults are SADA's (4, 6, 0.3)."""

    def __init__(self, n_converge: int = 4, n_tolerance: int = 6, tolerance_ratio: float = 0.3):
        self.n_converge, self.n_tolerance, self.tolerance_ratio = n_converge, n_tolerance, tolerance_ratio
        self.segment = _Average()
        self.converge_queue: deque[_Average] = deque(maxlen=n_converge)
        self.smooth_queue: deque[_Average] = deque(maxlen=n_tolerance)
        self.final: _Average | None = None
        self.converge_step: int | None = None
        self.threshold: float | None = None
        self.dead_valley = False

    @property
    def converged(self) -> bool:
        return self.converge_step is not None

    def update(self, module: nn.Module, step: int) -> None:
        """Fold ``module``'s current parameters into the current segment (call after every step)."""
        self.segment.add(_floating_parameters(module), step, step)

    @property
    def segment_start(self) -> int | None:
        """First step folded into the current segment (None while it is empty)."""
        return self.segment.start if self.segment.n else None

    def discard_segment(self) -> None:
        """Start a new segment without evaluating the current one (e.g. SADA's stage 1)."""
        self.segment = _Average()

    def end_segment(self, val_loss: float, step: int) -> None:
        """Close the current segment with its validation loss and run LossValley's update."""
        segment, self.segment = self.segment, _Average()
        if self.dead_valley or segment.n == 0:
            return
        segment.loss, segment.end = float(val_loss), step
        self.converge_queue.append(segment)
        self.smooth_queue.append(segment)
        if not self.converged:
            self._detect_convergence()
            return
        if self.smooth_queue[0].end < self.converge_step:
            return
        if min(s.loss for s in self.smooth_queue) > self.threshold:
            self.dead_valley = True
            logger.info("SWAD: loss valley is dead at step %d (threshold %.5f)", step, self.threshold)
            return
        oldest = self.smooth_queue[0]
        self.final.add(oldest.params, oldest.start, oldest.end)

    def _detect_convergence(self) -> None:
        if len(self.converge_queue) < self.n_converge:
            return
        losses = [s.loss for s in self.converge_queue]
        if int(np.argmin(losses)) != 0:
            return
        first = self.converge_queue[0]
        self.converge_step = first.end
        self.final = _Average(copy.deepcopy(first.params), 0, first.start, first.end)  # empty, as the reference
        self.threshold = float(np.mean(losses)) * (1.0 + self.tolerance_ratio)
        if self.n_tolerance < self.n_converge:
            to_add = [self.converge_queue[1 + i] for i in range(self.n_converge - self.n_tolerance)]
        elif self.n_tolerance > self.n_converge:
            window = list(self.smooth_queue)[:self.n_tolerance - self.n_converge + 1]
            start = 0
            for i in reversed(range(len(window))):
                if window[i].loss > self.threshold:
                    start = i + 1
                    break
            to_add = window[start + 1:]
        else:
            to_add = []
        for segment in to_add:
            self.final.add(segment.params, segment.start, segment.end)
        logger.info("SWAD: converged at step %d, threshold %.5f", self.converge_step, self.threshold)

    def final_parameters(self) -> dict[str, Tensor] | None:
        """The averaged parameters (not changing this object's state); None before any segment ended.

        Not converged yet: the last segment's average (the reference warns and does the same).
        """
        if not self.converged:
            if not self.converge_queue:
                return None
            logger.warning("SWAD: not converged; using the last segment's average")
            return self.converge_queue[-1].params
        final = copy.deepcopy(self.final)
        if not self.dead_valley:
            rest = list(self.smooth_queue)[1:]
            while rest and min(s.loss for s in rest) <= self.threshold:
                segment = rest.pop(0)
                final.add(segment.params, segment.start, segment.end)
        logger.info("SWAD: final average of %d segment(s), steps %d-%d", final.n, final.start, final.end)
        return final.params

    def averaged(self, module: nn.Module) -> nn.Module:
        """A deep copy of ``module`` holding :meth:`final_parameters` (``module`` itself when there are none)."""
        params = self.final_parameters()
        if params is None:
            return module
        averaged = copy.deepcopy(module)
        with torch.no_grad():
            for name, param in averaged.named_parameters():
                if name in params:
                    param.copy_(params[name].to(param.device))
        return averaged

    # ---- checkpoints (tensors and primitive containers only: torch.load(weights_only=True)) ----------------------

    def state_dict(self) -> dict[str, Any]:
        segments = list({id(s): s for s in [*self.converge_queue, *self.smooth_queue]}.values())
        index = {id(s): i for i, s in enumerate(segments)}
        return {"segment": self.segment.state(), "segments": [s.state() for s in segments],
                "converge_queue": [index[id(s)] for s in self.converge_queue],
                "smooth_queue": [index[id(s)] for s in self.smooth_queue],
                "final": None if self.final is None else self.final.state(),
                "converge_step": self.converge_step, "threshold": self.threshold, "dead_valley": self.dead_valley}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        segments = [_Average(**s) for s in state["segments"]]
        self.segment = _Average(**state["segment"])
        self.converge_queue = deque((segments[i] for i in state["converge_queue"]), maxlen=self.n_converge)
        self.smooth_queue = deque((segments[i] for i in state["smooth_queue"]), maxlen=self.n_tolerance)
        self.final = None if state["final"] is None else _Average(**state["final"])
        self.converge_step, self.threshold = state["converge_step"], state["threshold"]
        self.dead_valley = bool(state["dead_valley"])
