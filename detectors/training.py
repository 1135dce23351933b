"""Train a torchvision Mask R-CNN white-cell detector on one or several COCO sets.

Recipe (METHODS §1.3 and §8.4): SGD, momentum 0.9, weight decay 1e-4, gradient-norm clip 5
(matterport defaults; the thesis's "Adam" is available as ``optimizer="adam"``), a linear warm-up
from ``lr * warmup_factor`` over ``warmup_steps``, then constant or cosine-decayed lr; the thesis
augmentations on half the samples (:mod:`detectors.augment`). All categories map to one
"white cell" class by default (``num_classes=2``); with more classes, COCO category ids map to
1..K in sorted order.

Reproducible and resumable: the sample order of epoch e is a permutation drawn from
``default_rng([seed, e])`` and each sample's augmentation from ``default_rng([seed, step, slot])``,
so a run resumed from a checkpoint at step s continues exactly as if it had not stopped.
Checkpoints (``last.pt``) hold only tensors and plain values (``torch.load(weights_only=True)``):
format, architecture, model and optimizer state, step, and the training configuration. Losses go
to ``log.jsonl`` (one line per step: step, epoch, lr, loss and its five terms, seconds).

Measured on the shared data (MobileNetV2-FPN from ImageNet weights, min_size 320, batch 2, SGD lr
0.01 cosine, 150 steps = 0.56 epoch of BCCD + Zheng, 35 min on a contended 2-core CPU): held-out
(133 images) box AP50 0.987 / AP 0.637, mask AP50 0.987 / AP 0.785; single-cell detection rate
1.00 on 200 images each of bccd_crops, pbc_barcelona (unseen lab) and zheng_jtsc.

Example::

    detector = train_detector(["data/det/bccd/annotations.json"], out_dir="runs/det",
                              backbone="mobilenet_v2", weights="IMAGENET1K_V1", epochs=10)
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from aecfe.checkpoints import save_atomic
from aecfe.errors import InputError
from aecfe.io import CocoImage, SkipCounter, load_coco
from detectors.augment import DetectionAugment
from detectors.base import Detector
from detectors.torchvision_backend import (CHECKPOINT_FORMAT, TorchvisionBackend, build_maskrcnn,
                                           load_checkpoint)

logger = logging.getLogger(__name__)

LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: METHODS §8.4, matterport's SGD recipe).

    ``epochs`` or ``max_steps`` (whichever ends first; a step = one batch); ``max_seconds`` stops
    early (after a checkpoint) for time-capped runs. ``schedule``: "constant" or "cosine" (to
    ``lr * min_lr_factor`` at the last step). ``missing_mask``: what an annotation without a
    segmentation trains with: its filled box ("box") or nothing ("skip" the instance).
    ``extra``: torchvision ``MaskRCNN`` keyword options for :func:`build_maskrcnn` (e.g.
    ``{"box_batch_size_per_image": 64}``), recorded in the checkpoint's architecture.
    """

    backbone: str = "mobilenet_v2"
    weights: str | None = None
    num_classes: int = 2
    min_size: int = 512
    max_size: int = 853
    epochs: int = 26
    max_steps: int | None = None
    max_seconds: float | None = None
    batch_size: int = 2
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    warmup_steps: int = 100
    warmup_factor: float = 0.001
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_factor: float = 0.05
    augment_p: float = 0.5
    missing_mask: Literal["box", "skip"] = "box"
    seed: int = 0
    checkpoint_every: int = 200
    trainable_layers: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', not {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise InputError(f"schedule must be 'constant' or 'cosine', not {self.schedule!r}")
        if self.missing_mask not in ("box", "skip"):
            raise InputError(f"missing_mask must be 'box' or 'skip', not {self.missing_mask!r}")
        if self.batch_size < 1 or self.epochs < 1 or self.lr <= 0:
            raise InputError(f"batch_size and epochs must be >= 1 and lr > 0 (got {self.batch_size}, "
                             f"{self.epochs}, {self.lr})")


class CocoDetectionData:
    """Training samples from COCO images: ``sample(i, rng, augment)`` -> (image (3,H,W) float in
    [0,1], target dict with boxes (N,4) float32, labels (N,) int64, masks (N,H,W) uint8).

    ``category_to_label``: COCO category name -> class index (1..K); default every category -> 1.
    """

    def __init__(self, images: Sequence[CocoImage], *, num_classes: int = 2, missing_mask: str = "box"):
        self.images = list(images)
        if not self.images:
            raise InputError("no training images (empty COCO sets?)")
        names = sorted({name for image in self.images for name in image.category_names})
        if num_classes == 2:
            self.category_to_label = {name: 1 for name in names}
        elif len(names) == num_classes - 1:
            self.category_to_label = {name: i + 1 for i, name in enumerate(names)}
        else:
            raise InputError(f"num_classes={num_classes} needs {num_classes - 1} categories, the COCO "
                             f"sets have {len(names)}: {names}")
        self.missing_mask = missing_mask

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int, rng: np.random.Generator, augment: DetectionAugment | None):
        coco = self.images[index]
        image = torch.from_numpy(coco.read()).permute(2, 0, 1).float().div_(255)
        keep = np.array([not crowd and (self.missing_mask == "box" or has)
                         for crowd, has in zip(coco.iscrowd, coco.has_mask)], dtype=bool)
        masks = torch.from_numpy(coco.masks(missing="box")[keep]) if len(coco) else torch.zeros(
            (0, coco.height, coco.width), dtype=torch.bool)
        boxes = torch.from_numpy(coco.boxes[keep])
        labels = torch.tensor([self.category_to_label[n] for n, k in zip(coco.category_names, keep) if k],
                              dtype=torch.int64)
        if augment is not None:
            image, boxes, masks, kept = augment(image, boxes, masks, rng)
            labels = labels[kept]
        wide = (boxes[:, 2] > boxes[:, 0] + 1e-3) & (boxes[:, 3] > boxes[:, 1] + 1e-3)
        return image, {"boxes": boxes[wide].float(), "labels": labels[wide],
                       "masks": masks[wide].to(torch.uint8)}


def load_training_images(annotation_files: Sequence[str | Path], *, on_error: str = "skip") -> list[CocoImage]:
    """Every image of several COCO files (bad entries skipped and counted, one log line)."""
    skips = SkipCounter("COCO entries")
    images: list[CocoImage] = []
    for path in annotation_files:
        images.extend(load_coco(path, on_error=on_error, skips=skips))
    skips.log()
    return images


def split_images(images: Sequence[CocoImage], val_fraction: float, seed: int = 0
                 ) -> tuple[list[CocoImage], list[CocoImage]]:
    """(train, held-out) split of images, ``val_fraction`` held out, by a seeded permutation."""
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = round(val_fraction * len(images))
    return [images[i] for i in sorted(order[n_val:])], [images[i] for i in sorted(order[:n_val])]


def _lr_factor(step: int, total: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        alpha = step / max(1, config.warmup_steps)
        return config.warmup_factor * (1 - alpha) + alpha
    if config.schedule == "cosine" and total > config.warmup_steps:
        progress = min(1.0, (step - config.warmup_steps) / (total - config.warmup_steps))
        return config.min_lr_factor + (1 - config.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def _batch_plan(n: int, batch_size: int, seed: int, step: int) -> tuple[int, list[int]]:
    """(epoch, sample indices) of global step ``step``: epoch-wise seeded permutations, last
    partial batch of an epoch kept."""
    per_epoch = math.ceil(n / batch_size)
    epoch, within = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return epoch, order[within * batch_size:(within + 1) * batch_size].tolist()


def _step_seed(seed: int, step: int) -> int:
    """Seed of the global torch generator at ``step`` (the RPN and RoI samplers draw from it), so
    a resumed run samples exactly as an uninterrupted one."""
    return int(np.random.default_rng([seed, step, 1 << 20]).integers(1 << 62))


def train_detector(annotations: Sequence[str | Path] | Sequence[CocoImage], *, out_dir: str | Path | None = None,
                   config: TrainConfig | None = None, resume: str | Path | None = None,
                   progress: bool = True, device: str | torch.device = "cpu", score_threshold: float = 0.5,
                   **overrides: Any) -> Detector:
    """Train and return a :class:`Detector` (eval mode).

    Args:
        annotations: COCO annotation files (several at once) or already loaded CocoImages.
        out_dir: where ``last.pt`` and ``log.jsonl`` go (None: nothing is written; no resume).
        config: hyper-parameters; ``overrides`` replace single fields (``epochs=2, lr=0.02``).
        resume: a ``last.pt`` to continue from (its model, optimizer, step; the configuration
            given here must match its architecture).
        progress: tqdm bar.
        device: training device.
        score_threshold: of the returned detector.
    """
    config = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    images = (list(annotations) if annotations and isinstance(annotations[0], CocoImage)
              else load_training_images(annotations))
    data = CocoDetectionData(images, num_classes=config.num_classes, missing_mask=config.missing_mask)
    torch.manual_seed(config.seed)
    model, arch = build_maskrcnn(config.backbone, num_classes=config.num_classes, weights=config.weights,
                                 min_size=config.min_size, max_size=config.max_size,
                                 trainable_layers=config.trainable_layers, **config.extra)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    step = 0
    if resume is not None:
        saved = load_checkpoint(resume)
        if saved["arch"]["backbone"] != arch["backbone"] or saved["arch"]["num_classes"] != arch["num_classes"]:
            raise InputError(f"{resume}: checkpoint architecture {saved['arch']['backbone']}/"
                             f"{saved['arch']['num_classes']} classes differs from {arch['backbone']}/"
                             f"{arch['num_classes']}")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step = int(saved["step"])
        logger.info("resumed from %s at step %d", resume, step)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    augment = DetectionAugment(p=config.augment_p) if config.augment_p > 0 else None
    started = time.perf_counter()

    def save() -> None:
        if out is not None:
            save_atomic({"format": CHECKPOINT_FORMAT, "arch": arch, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "step": step,
                         "config": json.loads(json.dumps(asdict(config), default=str))}, out / "last.pt")

    model.train()
    log = (out / "log.jsonl").open("a", encoding="utf-8") if out is not None else None
    try:
        with tqdm(total=total, initial=step, desc="train detector", unit="step", disable=not progress) as bar:
            while step < total:
                epoch, indices = _batch_plan(len(data), config.batch_size, config.seed, step)
                torch.manual_seed(_step_seed(config.seed, step))  # torchvision's RoI/anchor samplers
                batch = [data.sample(i, np.random.default_rng([config.seed, step, slot]), augment)
                         for slot, i in enumerate(indices)]
                factor = _lr_factor(step, total, config)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * factor
                images = [image.to(device) for image, _ in batch]
                targets = [{k: v.to(device) for k, v in target.items()} for _, target in batch]
                losses = model(images, targets)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    save()
                    raise FloatingPointError(f"step {step}: non-finite loss {losses} (lr {config.lr * factor:g}); "
                                             "lower lr or raise warmup_steps")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                step += 1
                record = {"step": step, "epoch": epoch, "lr": config.lr * factor, "loss": float(loss.detach()),
                          **{k: float(v.detach()) for k, v in losses.items()}, "grad_norm": float(grad_norm),
                          "seconds": round(time.perf_counter() - started, 3)}
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}")
                bar.update(1)
                out_of_time = config.max_seconds is not None and time.perf_counter() - started > config.max_seconds
                if step % config.checkpoint_every == 0 or step == total or out_of_time:
                    save()
                if out_of_time:
                    logger.info("stopping at step %d of %d: max_seconds=%s reached", step, total, config.max_seconds)
                    break
    finally:
        if log is not None:
            log.close()
    model.eval()
    source = f"trained:{out / 'last.pt'}" if out is not None else "trained in memory"
    return Detector(TorchvisionBackend(model, arch, score_threshold=score_threshold, device=device, source=source))


def read_log(path: str | Path) -> list[dict]:
    """The records of a ``log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
