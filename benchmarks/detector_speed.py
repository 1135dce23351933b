"""Speed of detection: images/s and cells/s of ``Detector.detect`` and the cost of the per-cell
extraction (RoI features, masks, crops) over the bare model forward, side by side in one run.

For each model size (``--sizes``, the shorter side the model resizes to; longer side 4/3 of it)
the same synthetic fields (``--field`` px square) run through

* the bare forward: ``model(list_of_float_tensors)`` under ``torch.inference_mode`` (torchvision's
  eval forward, which already pastes every mask into the image), and
* the full extraction: ``detector.detect(uint8 images)`` (conversion, forward, RoI features, masks,
  crops),

alternating, ``--rounds`` times each; the table gives medians and the ratio of the medians
(goal: at most 1.10). Without ``--checkpoint`` the model is untrained, with score threshold 0 and
``--cells`` detections per image so that the per-cell work is that of a field with that many cells.

    python benchmarks/detector_speed.py --sizes 400 800 --images 4 --rounds 5 --threads 2

Measured figures, with date and machine: ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from aecfe.synthetic import default_domains, make_fields
from detectors.base import make_detector

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 800], help="model min_size values")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained detector (default: untrained)")
    parser.add_argument("--images", type=int, default=4, help="images per timed call (one batch)")
    parser.add_argument("--field", type=int, default=400, help="side of the synthetic fields in px")
    parser.add_argument("--cells", type=int, default=10, help="detections per image for an untrained model")
    parser.add_argument("--rounds", type=int, default=5, help="timed repetitions of each (after one warm-up)")
    parser.add_argument("--single-cell", action="store_true", help="detect(..., single_cell=True)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def _timings(function, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def benchmark_size(size: int, args: argparse.Namespace, images: list) -> dict:
    """Timings of one model size: bare forward and full extraction, alternating."""
    options = {} if args.checkpoint else {"box_detections_per_img": args.cells}
    torch.manual_seed(0)
    detector = make_detector(backbone=args.backbone, checkpoint=args.checkpoint, min_size=size,
                             max_size=size * 4 // 3, score_threshold=0.5 if args.checkpoint else 0.0, **options)
    model = detector.backend.model
    tensors = [torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image in images]

    def forward():
        with torch.inference_mode():
            model(tensors)

    def extract():
        return detector.detect(images, single_cell=args.single_cell, batch_size=len(images))

    cells = sum(len(d) for d in extract())  # warm-up of both paths
    forward()
    forward_times, extract_times = [], []
    for _ in range(args.rounds):
        forward_times += _timings(forward, 1)
        extract_times += _timings(extract, 1)
    forward_s, extract_s = statistics.median(forward_times), statistics.median(extract_times)
    return {"size": size, "images": len(images), "cells": cells,
            "forward_s": round(forward_s, 4), "extract_s": round(extract_s, 4),
            "images_per_s": round(len(images) / extract_s, 3), "cells_per_s": round(cells / extract_s, 3),
            "extraction_over_forward": round(extract_s / forward_s, 3),
            "forward_times": [round(t, 4) for t in forward_times], "extract_times": [round(t, 4) for t in extract_times]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    fields = make_fields(default_domains()[0], args.images, seed=0, size=(args.field, args.field))
    images = [f.image for f in fields]
    results = [benchmark_size(size, args, images) for size in args.sizes]
    print(f"{'size':>5} {'cells':>5} {'forward s':>9} {'extract s':>9} {'img/s':>7} {'cells/s':>8} {'ratio':>6}")
    for row in results:
        print(f"{row['size']:>5} {row['cells']:>5} {row['forward_s']:>9.3f} {row['extract_s']:>9.3f} "
              f"{row['images_per_s']:>7.2f} {row['cells_per_s']:>8.2f} {row['extraction_over_forward']:>6.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "results": results, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "backbone": args.backbone,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None, "field": args.field,
            "single_cell": args.single_cell}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
