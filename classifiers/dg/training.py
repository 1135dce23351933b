"""One training loop for every DG algorithm, and prediction over a dataset.

:func:`train` runs ``algorithm.update`` for the algorithm's ``steps`` (or ``epochs``) on the batches of a
:class:`~classifiers.dg.data.BatchPlan` (one minibatch per training domain, or pooled; optionally
class-balanced), and every ``checkpoint_every`` steps (DomainBed's rule: step % every == 0, and the last step)
validates, ends a SWAD segment and writes a checkpoint. Everything it reads from the hyper-parameters:
``batch_size``, ``steps``/``epochs``, ``checkpoint_every``, ``domain_balanced``, ``class_balanced``, ``swad`` and
``swad_*``.

Determinism and resume: the batches are a function of (seed, step) and every item is transformed under its own
seed; before each update the global torch generator is seeded from (seed, step, rank). A run resumed from its
checkpoint therefore continues exactly as the uninterrupted run (same batches, same augmentations, same Adam
state).

Files under ``out_dir`` (rank 0): ``checkpoint.pt`` (latest state: weights, optimisers, schedulers, SWAD, step,
training seconds so far), ``model.pt`` (the final model: the SWAD average when SWAD is on; the training seconds),
``log.jsonl`` (one line per logged step and per checkpoint). Both ``.pt`` files load with
``torch.load(..., weights_only=True)``; :func:`load_algorithm` rebuilds the algorithm from either.

Distributed (``torchrun``; gloo on CPU, nccl on GPU): each process reads its share of every global batch,
gradients are averaged in :meth:`~classifiers.dg.algorithms.base.Algorithm.optimize`, the initial weights
are broadcast from rank 0, validation sums are all-reduced, and the running statistics of trainable BatchNorm
layers (computed per process on its share) are averaged at every checkpoint.

Example::

    train_set = ImageDataset(images, labels, domains, transform=train_transform("domainbed", 224))
    algorithm = build_algorithm("CORAL", len(train_set.classes), len(train_set.domain_names))
    result = train(algorithm, train_set, val_set, TrainConfig(out_dir="runs/coral", seed=0))
    y_true, y_pred = predict_dataset(result.algorithm, DataLoader(test_set, batch_size=64))
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from aecfe import checkpoints
from aecfe.errors import InputError
from classifiers.dg.algorithms import Algorithm, featurizer_from_hparams, get_algorithm
from classifiers.dg.data import BatchPlan, ImageDataset, TrainingData, step_loader, steps_for_epochs
from classifiers.dg.swad import SWAD
from aecfe.distributed import init_distributed

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "aecfe-dg-checkpoint/1"


@dataclass
class TrainConfig:
    """Run settings that are not hyper-parameters: seed (batches, augmentations, per-step generator),
    out_dir (checkpoints and logs; None = nothing written), resume (continue from ``out_dir/checkpoint.pt``
    when present), num_workers (data loading), progress (tqdm bar), log_every (steps between log lines),
    eval_batch_size (validation and full passes), device (default: this process's GPU if any, else CPU),
    stop_at (stop before this step and checkpoint, e.g. to split a run into time-limited jobs: a later call
    with ``resume`` continues exactly; None = run to the end)."""

    seed: int = 0
    out_dir: str | Path | None = None
    resume: bool = True
    num_workers: int = 0
    progress: bool = True
    log_every: int = 50
    eval_batch_size: int = 64
    device: str | None = None
    stop_at: int | None = None


@dataclass
class TrainResult:
    """algorithm: the final model (the SWAD average when SWAD ran, else the last weights); last: the last
    weights; history: one record per checkpoint (step, losses, validation); swad: the SWAD state or None;
    seconds: wall time of the training loop summed over every process that ran it (a resumed or finished run
    adds the time its checkpoint recorded; NaN when that checkpoint predates the record)."""

    algorithm: Algorithm
    last: Algorithm
    history: list[dict[str, Any]] = field(default_factory=list)
    swad: SWAD | None = None
    seconds: float = math.nan


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device(config: TrainConfig) -> torch.device:
    """``config.device`` checked, or the one default rule (:func:`aecfe.devices.resolve_device`)."""
    from aecfe.devices import resolve_device

    return torch.device(resolve_device(config.device))


def step_seed(seed: int, step: int, rank: int) -> int:
    """The global generator's seed before update ``step`` of process ``rank``."""
    return int(np.random.SeedSequence([seed, step, rank, 3]).generate_state(1)[0])


def number_of_steps(hparams: dict[str, Any], n_samples: int, world_size: int = 1) -> int:
    """``steps``, or with ``epochs`` set: epochs × ⌈n / global batch⌉ (pooled batches)."""
    if hparams.get("epochs") is None:
        return int(hparams["steps"])
    return steps_for_epochs(n_samples, hparams["batch_size"], hparams["epochs"], world_size)


def training_data(algorithm: Algorithm, train_set: ImageDataset, config: TrainConfig, rank: int = 0,
                  world_size: int = 1) -> TrainingData:
    """The :class:`TrainingData` of ``train_set`` for ``algorithm`` (checks its number of domains)."""
    present = tuple(int(d) for d in np.unique(train_set.domain_ids))
    if algorithm.hparams["domain_balanced"] and len(present) != algorithm.num_domains:
        names = [train_set.domain_names[d] for d in present]
        raise InputError(f"the training set has {len(present)} domains {names} but the algorithm was built for "
                         f"{algorithm.num_domains}")
    if len(train_set.classes) != algorithm.num_classes:
        raise InputError(f"the training set has {len(train_set.classes)} classes, the algorithm "
                         f"{algorithm.num_classes}")
    counts = train_set.class_counts()[list(present)]
    steps = number_of_steps(algorithm.hparams, len(train_set), world_size)
    return TrainingData(train_set, present, counts, steps, config.seed, rank, world_size, config.num_workers)


@torch.no_grad()
def validate(algorithm: Algorithm, val_set: ImageDataset, batch_size: int = 64, num_workers: int = 0
             ) -> dict[str, float]:
    """``val_loss`` (mean over domains of the mean cross-entropy, SWAD's criterion), ``val_accuracy`` (over all
    samples) and per-domain ``val_loss/<domain>``; sharded and all-reduced under torch.distributed."""
    rank, world = _world()
    n_domains = len(val_set.domain_names)
    sums = torch.zeros(3, n_domains, dtype=torch.float64)  # loss sum, correct, count
    indices = np.arange(len(val_set))[rank::world]
    loader = DataLoader(torch.utils.data.Subset(val_set, indices.tolist()), batch_size=batch_size,
                        num_workers=num_workers)
    was_training = algorithm.training
    algorithm.eval()
    for x, y, d in loader:
        logits = algorithm.predict(x.to(algorithm.device)).float().cpu()
        losses = F.cross_entropy(logits, y, reduction="none").double()
        sums[0].index_add_(0, d, losses)
        sums[1].index_add_(0, d, (logits.argmax(1) == y).double())
        sums[2].index_add_(0, d, torch.ones_like(losses))
    algorithm.train(was_training)
    if world > 1:
        sums = sums.to(algorithm.device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    present = sums[2] > 0
    per_domain = sums[0][present] / sums[2][present]
    record = {"val_loss": float(per_domain.mean()), "val_accuracy": float(sums[1].sum() / sums[2].sum())}
    names = [name for name, keep in zip(val_set.domain_names, present.tolist()) if keep]
    record.update({f"val_loss/{name}": float(v) for name, v in zip(names, per_domain)})
    return record


def train(algorithm: Algorithm, train_set: ImageDataset, val_set: ImageDataset | None = None,
          config: TrainConfig | None = None) -> TrainResult:
    """Train ``algorithm`` on ``train_set`` (validation on ``val_set``; required with SWAD). See the module
    docstring. Every process of a ``torchrun`` job must call it with the same arguments."""
    config = config or TrainConfig()
    rank, world = init_distributed()
    algorithm.to(_device(config))
    hp = algorithm.hparams
    if hp["checkpoint_every"] < 1 or hp["batch_size"] < 1:
        raise InputError(f"checkpoint_every and batch_size must be >= 1, got {hp['checkpoint_every']} and "
                         f"{hp['batch_size']}")
    data = training_data(algorithm, train_set, config, rank, world)
    plan = BatchPlan.for_dataset(train_set, hp["batch_size"], domain_balanced=hp["domain_balanced"],
                                 class_balanced=hp["class_balanced"], seed=config.seed, rank=rank, world_size=world)
    algorithm.setup(data)
    if world > 1:
        for tensor in algorithm.state_dict().values():
            dist.broadcast(tensor, src=0)
    swad = SWAD(hp["swad_n_converge"], hp["swad_n_tolerance"], hp["swad_tolerance_ratio"]) if hp["swad"] else None
    if swad is not None and val_set is None:
        raise InputError("SWAD selects segments by validation loss: pass val_set (or set swad=False)")
    if swad is not None and not hp["freeze_bn"]:
        logger.warning("SWAD averages weights only: the BatchNorm statistics of the averaged model are not "
                       "re-estimated (the reference runs update_bn when BatchNorm is trainable)")
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    writer = rank == 0 and out_dir is not None
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
    start, finished, seconds = 0, False, 0.0
    if out_dir is not None and config.resume and (out_dir / "checkpoint.pt").is_file():
        start, finished, seconds = _restore(algorithm, swad, out_dir / "checkpoint.pt")
        logger.info("resumed from %s at step %d%s", out_dir / "checkpoint.pt", start,
                    " (finished)" if finished else "")
    history: list[dict[str, Any]] = []
    if not finished:
        history, finished, seconds = _loop(algorithm, data, plan, swad, val_set, config, start,
                                           out_dir if writer else None, seconds)
    final = swad.averaged(algorithm) if swad is not None else algorithm
    if writer and finished:
        state = _model_state(final, train_set, data, swad_averaged=swad is not None)
        checkpoints.save_atomic({**state, "train_seconds": seconds}, out_dir / "model.pt")
    return TrainResult(final, algorithm, history, swad, seconds)


def _loop(algorithm: Algorithm, data: TrainingData, plan: BatchPlan, swad: SWAD | None, val_set, config,
          start: int, out_dir: Path | None, seconds_before: float = 0.0
          ) -> tuple[list[dict[str, Any]], bool, float]:
    """Steps ``start`` … until the end, a dead SWAD valley or ``config.stop_at``; returns (history, finished,
    training seconds: ``seconds_before`` plus this loop's wall time up to its last step and validation, as the
    last checkpoint records them)."""
    hp, steps, rank = algorithm.hparams, data.steps, data.rank
    stop_at = steps if config.stop_at is None else min(steps, config.stop_at)
    history = []
    loader = step_loader(data.dataset, plan, start, stop_at, config.num_workers)
    bar = tqdm(total=steps, initial=start, desc=type(algorithm).__name__, unit="step",
               disable=not (config.progress and rank == 0))
    started = time.perf_counter()
    finished, seconds = stop_at == steps, seconds_before
    for step, (x, y, _) in zip(range(start, stop_at), loader):
        torch.manual_seed(step_seed(config.seed, step, rank))
        algorithm.train()
        algorithm.before_update(data)
        losses = algorithm.update(list(zip(x.split(plan.batch_size), y.split(plan.batch_size))))
        if swad is not None:
            swad.update(algorithm, step)
        bar.update()
        bar.set_postfix({k: f"{v:.4f}" for k, v in list(losses.items())[:3]})
        seconds = seconds_before + time.perf_counter() - started
        if out_dir is not None and (step % config.log_every == 0):
            _log(out_dir, {"step": step, **losses, "seconds": round(time.perf_counter() - started, 3)})
        if step % hp["checkpoint_every"] != 0 and step != steps - 1:
            if step == stop_at - 1 and out_dir is not None:  # interrupted: state only, no validation or segment
                checkpoints.save_atomic(_checkpoint_state(algorithm, swad, data, step, finished=False, seconds=seconds),
                                        out_dir / "checkpoint.pt")
            continue
        record = {"step": step, **losses}
        if data.world_size > 1:
            _average_buffers(algorithm)
        if val_set is not None:
            record.update(validate(algorithm, val_set, config.eval_batch_size, config.num_workers))
        stop = False
        if swad is not None:
            first = swad.segment_start if swad.segment_start is not None else step
            if first < algorithm.swad_start_step:  # a segment holding any earlier weights (SADA's stage 1)
                swad.discard_segment()
            else:
                swad.end_segment(record["val_loss"], step)
                stop = swad.dead_valley
        history.append(record)
        logger.info("step %d/%d: %s", step, steps, "  ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                              if k != "step" and "/" not in k))
        seconds = seconds_before + time.perf_counter() - started  # validation included
        if out_dir is not None:
            _log(out_dir, {"checkpoint": True, **record})
            checkpoints.save_atomic(_checkpoint_state(algorithm, swad, data, step, finished=stop or step == steps - 1,
                                                      seconds=seconds), out_dir / "checkpoint.pt")
        if stop:
            logger.info("SWAD loss valley is dead: early stop at step %d", step)
            finished = True
            break
    bar.close()
    return history, finished, seconds


def _average_buffers(algorithm: Algorithm) -> None:
    """Mean over processes of the floating-point buffers (running statistics of trainable BatchNorm layers,
    which each process updates on its own share of the batch); frozen or synchronised buffers are unchanged."""
    for buffer in algorithm.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= dist.get_world_size()


# ---- checkpoints -------------------------------------------------------------------------------------------------

def _plain(values) -> list:
    return [v.item() if hasattr(v, "item") else v for v in values]


def _model_state(algorithm: Algorithm, train_set: ImageDataset, data: TrainingData, swad_averaged: bool
                 ) -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "algorithm": type(algorithm).__name__,
            "num_classes": algorithm.num_classes, "num_domains": algorithm.num_domains,
            "hparams": dict(algorithm.hparams), "classes": _plain(train_set.classes),
            "domains": [train_set.domain_names[d] for d in data.domains], "step": int(algorithm.update_count) - 1,
            "swad_averaged": swad_averaged, "model": algorithm.state_dict()}


def _checkpoint_state(algorithm: Algorithm, swad: SWAD | None, data: TrainingData, step: int, finished: bool,
                      seconds: float) -> dict[str, Any]:
    state = _model_state(algorithm, data.dataset, data, swad_averaged=False)
    state.update({"step": step, "finished": finished, "seed": data.seed, "train_seconds": seconds,
                  "optimizers": [o.state_dict() for o in algorithm.optimizers],
                  "schedulers": [s.state_dict() for s in algorithm.schedulers],
                  "swad": None if swad is None else swad.state_dict()})
    return state


def _log(out_dir: Path, record: dict[str, Any]) -> None:
    with open(out_dir / "log.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a checkpoint or model file, format checked."""
    return checkpoints.read_checkpoint(path, CHECKPOINT_FORMAT, "DG checkpoint")


def _restore(algorithm: Algorithm, swad: SWAD | None, path: Path) -> tuple[int, bool, float]:
    """Load a checkpoint into ``algorithm`` (and ``swad``); returns (next step, finished, training seconds so far:
    NaN for a checkpoint written before they were recorded)."""
    state = read_checkpoint(path)
    expected = (type(algorithm).__name__, algorithm.num_classes, algorithm.num_domains)
    found = (state["algorithm"], state["num_classes"], state["num_domains"])
    if found != expected:
        raise InputError(f"{path}: checkpoint of {found} (algorithm, classes, domains), expected {expected}")
    algorithm.load_state_dict(state["model"])
    for optimizer, saved in zip(algorithm.optimizers, state["optimizers"]):
        optimizer.load_state_dict(saved)
    for scheduler, saved in zip(algorithm.schedulers, state["schedulers"]):
        scheduler.load_state_dict(saved)
    if swad is not None and state["swad"] is not None:
        swad.load_state_dict(state["swad"])
    return int(state["step"]) + 1, bool(state["finished"]), float(state.get("train_seconds", math.nan))


def load_algorithm(path: str | Path, device: str | torch.device = "cpu") -> tuple[Algorithm, dict[str, Any]]:
    """(algorithm in eval mode, metadata: classes, domains, step, hparams, swad_averaged) from a
    ``model.pt`` or ``checkpoint.pt``; pretrained weights are not fetched (the file holds every weight)."""
    state = read_checkpoint(path)
    cls = get_algorithm(state["algorithm"])
    featurizer = featurizer_from_hparams(state["hparams"], load_weights=False)
    algorithm = cls(state["num_classes"], state["num_domains"], state["hparams"], featurizer=featurizer)
    algorithm.load_state_dict(state["model"])
    meta = {key: state.get(key) for key in ("classes", "domains", "step", "hparams", "swad_averaged")}
    return algorithm.to(device).eval(), meta


# ---- prediction --------------------------------------------------------------------------------------------------

@torch.no_grad()
def predict_dataset(algorithm: Algorithm, loader) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) int64 class ids over a loader of (x, y) or (x, y, domain) batches, in eval mode.

    Map ids to names with the dataset's ``classes`` and score with :mod:`aecfe.metrics` /
    :mod:`aecfe.evaluation`, as for the embedding heads.
    """
    was_training = algorithm.training
    algorithm.eval()
    y_true, y_pred = [], []
    for batch in loader:
        x, y = batch[0], batch[1]
        y_pred.append(algorithm.predict(x.to(algorithm.device)).argmax(dim=1).cpu())
        y_true.append(torch.as_tensor(y))
    algorithm.train(was_training)
    if not y_true:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return torch.cat(y_true).numpy().astype(np.int64), torch.cat(y_pred).numpy().astype(np.int64)
