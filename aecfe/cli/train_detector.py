"""Train a Mask R-CNN white-cell detector on COCO sets, then evaluate it.

Example (MobileNetV2-FPN from ImageNet weights, a 20 % held-out split, detection rate on the
single-cell folders, 25 minutes at most)::

    python scripts/train_detector.py data/det/bccd/annotations.json data/det/zheng_jtsc/annotations.json \\
        --out runs/det --weights MobileNet_V2_Weights.IMAGENET1K_V1 --min-size 400 --max-size 533 \\
        --epochs 12 --max-seconds 1500 --val-fraction 0.2 --detection-rate data/cls/* --overlays 12

Writes into ``--out``: ``last.pt`` (weights-only checkpoint; ``--resume out/last.pt`` continues),
``log.jsonl`` (per-step losses), ``summary.json`` (steps, time, held-out COCO box/mask mAP,
detection rates) and ``overlays/*.png``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from aecfe.cli import (add_device, key_value, nonnegative_float, nonnegative_int, positive_float, positive_int,
                       probability)
from aecfe.devices import resolve_device
from aecfe.io import scan_class_folders
from detectors.evaluation import detection_rate, evaluate_coco, save_overlays
from detectors.torchvision_backend import BACKBONES
from detectors.training import TrainConfig, load_training_images, split_images, train_detector

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("annotations", nargs="+", type=Path, help="COCO annotation files (trained on together)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--backbone", choices=BACKBONES, default=defaults.backbone)
    parser.add_argument("--weights", default=None, help="torchvision weights enum name or local backbone "
                        "weights file (default: from scratch)")
    parser.add_argument("--min-size", type=positive_int, default=defaults.min_size)
    parser.add_argument("--max-size", type=positive_int, default=defaults.max_size)
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs)
    parser.add_argument("--max-steps", type=positive_int, default=None)
    parser.add_argument("--max-seconds", type=positive_float, default=None,
                        help="stop (with a checkpoint) after this long")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=defaults.optimizer)
    parser.add_argument("--lr", type=positive_float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=nonnegative_float, default=defaults.weight_decay)
    parser.add_argument("--grad-clip", type=positive_float, default=defaults.grad_clip)
    parser.add_argument("--warmup-steps", type=nonnegative_int, default=defaults.warmup_steps)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default=defaults.schedule)
    parser.add_argument("--augment-p", type=probability, default=defaults.augment_p)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--checkpoint-every", type=positive_int, default=defaults.checkpoint_every)
    parser.add_argument("--resume", type=Path, default=None, help="a last.pt to continue from")
    parser.add_argument("--val-fraction", type=probability, default=0.2, help="images held out for mAP (seeded)")
    parser.add_argument("--detection-rate", nargs="*", type=Path, default=[],
                        help="single-cell class folders (<root>/<class>/<image>) to report the detection rate on")
    parser.add_argument("--detection-rate-max", type=positive_int, default=None,
                        help="at most this many images per detection-rate folder (seeded sample)")
    parser.add_argument("--maskrcnn-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="torchvision MaskRCNN option (value read as JSON), e.g. box_batch_size_per_image=64")
    parser.add_argument("--score-threshold", type=probability, default=0.5, help="detector's working threshold")
    parser.add_argument("--overlays", type=nonnegative_int, default=8, help="held-out overlay PNGs to write")
    add_device(parser)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    images = load_training_images(args.annotations)
    train, held_out = split_images(images, args.val_fraction, seed=args.seed)
    logger.info("%d COCO images: %d train, %d held out", len(images), len(train), len(held_out))
    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names},
                         extra=dict(args.maskrcnn_option))
    started = time.perf_counter()
    detector = train_detector(train, out_dir=args.out, config=config, resume=args.resume,
                              progress=not args.no_progress, device=resolve_device(args.device),
                              score_threshold=args.score_threshold)
    steps = sum(1 for _ in (args.out / "log.jsonl").open())
    summary = {"config": json.loads(json.dumps(vars(args), default=str)), "steps": steps,
               "train_images": len(train), "held_out_images": len(held_out),
               "train_seconds": round(time.perf_counter() - started, 1)}
    if held_out:
        summary["held_out"] = evaluate_coco(detector, held_out, progress=not args.no_progress)
        logger.info("held-out box AP50 %.3f AP %.3f, mask AP50 %.3f AP %.3f",
                    summary["held_out"]["bbox"]["AP50"], summary["held_out"]["bbox"]["AP"],
                    summary["held_out"]["segm"]["AP50"], summary["held_out"]["segm"]["AP"])
        if args.overlays:
            save_overlays(detector, held_out[:args.overlays], args.out / "overlays")
    rates = {}
    for root in args.detection_rate:
        records = scan_class_folders(root, on_error="skip")
        if args.detection_rate_max is not None and len(records) > args.detection_rate_max:
            keep = np.random.default_rng(args.seed).choice(len(records), args.detection_rate_max, replace=False)
            records = [records[i] for i in sorted(keep)]
        rates[root.name] = detection_rate(detector, records, progress=not args.no_progress)["overall"]
        logger.info("detection rate %s: %.3f of %d images", root.name, rates[root.name]["rate"],
                    rates[root.name]["images"])
    if rates:
        summary["detection_rate"] = rates
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0
