"""Speed of the extraction path: autoencoder training, detector + encoder, encoder alone, whole pipeline.

Usage: ``python benchmarks/extraction_speed.py [--train-batches 256 500] [--images 96] [--repeats 3]
[--backbone mobilenet_v2] [--detector-checkpoint det.pt] [--json out.json]``.

Rows of the printed table (each measured in a fresh process, :func:`aecfe.measure.in_fresh_process`, so peak
memory is per workload):

* ``train_ae``: autoencoder training steps (the trainer's optimised defaults,
  :func:`autoencoder_speed.measure_training`, beside this file), median of ``--train-steps`` steps after one
  warm-up; samples/s = batch / median step time.
* ``detect+encode``: :meth:`detectors.base.Detector.detect` (single-cell mode with the centred fallback, so
  every image gives one cell whatever the detector's weights) on ``--images`` synthetic single-cell images,
  then :func:`extractors.trainer.encode_dataset` on their RoI features; median over ``--repeats`` passes
  after a warm-up batch.
* ``encode``: the encoder alone on the same RoI features (same passes).
* ``pipeline``: :func:`aecfe.pipeline.run_extraction` from image files to a new store (reading, detection,
  RoI features and crops committed to HDF5, the autoencoder embedding), median over ``--repeats`` runs.

Peak memory is the process's maximum resident set size (:func:`aecfe.measure.peak_rss_mb`; it includes the
interpreter and torch, ~0.3 GB). The detector is untrained unless ``--detector-checkpoint`` is given:
speed does not depend much on the weights in single-cell mode (one cell per image either way), but an untrained
detector keeps up to 100 boxes per image through the mask head, so time a trained one when you have it.

Measured figures, with date and machine: ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aecfe.measure import in_fresh_process, peak_rss_mb
from autoencoder_speed import measure_training  # beside this file (benchmarks/)

logger = logging.getLogger(__name__)


def _synthetic_images(n: int, size: int, seed: int = 0) -> list[tuple[str, str, np.ndarray]]:
    """(domain, label, RGB image) for n single-cell images spread over the three synthetic labs."""
    from aecfe.synthetic import default_domains, make_single_cell_images

    domains = default_domains()
    out = []
    for index, domain in enumerate(domains):
        count = n // len(domains) + (index < n % len(domains))
        out += [(domain.name, cell.labels[0], cell.image)
                for cell in make_single_cell_images(domain, count, seed=seed, size=size)]
    return out


def _detector(backbone: str, checkpoint: str | None, min_size: int, max_size: int):
    from detectors.base import make_detector

    return make_detector("torchvision", backbone=backbone, checkpoint=checkpoint, min_size=min_size,
                         max_size=max_size, single_cell_fallback="center")


def measure_detect_encode(n_images: int, image_size: int, backbone: str, checkpoint: str | None, min_size: int,
                          max_size: int, batch_size: int, encode_batch: int, repeats: int,
                          threads: int) -> dict[str, Any]:
    """Median seconds of detection and of encoding for ``n_images`` images (meant for a fresh process)."""
    from extractors.autoencoder import AECFEAutoencoder
    from extractors.trainer import encode_dataset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = [image for _, _, image in _synthetic_images(n_images, image_size)]
    detector = _detector(backbone, checkpoint, min_size, max_size)
    model = AECFEAutoencoder().eval()
    warm = detector.detect(images[:batch_size], single_cell=True, batch_size=batch_size)
    encode_dataset(model, np.concatenate([d.roi_features for d in warm]), encode_batch)
    detect_seconds, encode_seconds, cells = [], [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        detections = detector.detect(images, single_cell=True, batch_size=batch_size)
        detect_seconds.append(time.perf_counter() - start)
        roi = np.concatenate([d.roi_features for d in detections])
        cells = len(roi)
        start = time.perf_counter()
        encode_dataset(model, roi, encode_batch)
        encode_seconds.append(time.perf_counter() - start)
    return {"images": n_images, "cells": cells, "detect_seconds": statistics.median(detect_seconds),
            "encode_seconds": statistics.median(encode_seconds), "peak_rss_mb": peak_rss_mb(),
            "detector": detector.config}


def measure_pipeline(n_images: int, image_size: int, backbone: str, checkpoint: str | None, min_size: int,
                     max_size: int, batch_size: int, encode_batch: int, repeats: int,
                     threads: int) -> dict[str, Any]:
    """Median seconds of :func:`aecfe.pipeline.run_extraction` from files to a new store (fresh process)."""
    from PIL import Image

    from aecfe.pipeline import EmbeddingStage, gather_images, run_extraction
    from extractors.autoencoder import AECFEAutoencoder
    from extractors.trainer import encode_dataset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AECFEAutoencoder().eval()
    stage = EmbeddingStage("ae", lambda store, rows: encode_dataset(model, store.roi(rows), encode_batch),
                           {"autoencoder": "untrained, seed 0"})
    detector = _detector(backbone, checkpoint, min_size, max_size)
    seconds, cells = [], 0
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        for index, (domain, label, image) in enumerate(_synthetic_images(n_images, image_size)):
            path = root / domain / label / f"{index:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
        listing = gather_images(class_folders=[root])
        for run in range(repeats):
            start = time.perf_counter()
            report = run_extraction(listing, Path(folder) / f"run{run}.h5", detector_factory=lambda: detector,
                                    detector_identity={"config": detector.config, "weights_sha256": None},
                                    embeddings=[stage], batch_size=batch_size, progress=False)
            seconds.append(time.perf_counter() - start)
            cells = report["totals"]["cells"]
    return {"images": n_images, "cells": cells, "seconds": statistics.median(seconds), "peak_rss_mb": peak_rss_mb()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train-batches", type=int, nargs="*", default=[256, 500],
                        help="autoencoder training batch sizes to time")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--images", type=int, default=96, help="synthetic single-cell images per extraction pass")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="passes per extraction measurement (median)")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--detector-checkpoint", help="trained detector (default: untrained, same speed)")
    parser.add_argument("--min-size", type=int, default=256, help="detector resize: shorter side")
    parser.add_argument("--max-size", type=int, default=427, help="detector resize: longer side cap")
    parser.add_argument("--batch-size", type=int, default=4, help="images per detector call")
    parser.add_argument("--encode-batch", type=int, default=256)
    parser.add_argument("--no-pipeline", action="store_true", help="skip the files-to-store pipeline row")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON")
    return parser


def run_benchmarks(args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The table rows and the raw measurements."""
    threads = args.threads or torch.get_num_threads()
    rows, raw = [], {"threads": threads, "torch": torch.__version__, "train": []}
    for batch in args.train_batches:
        run = in_fresh_process(measure_training, "optimised", batch, args.train_steps, threads)
        raw["train"].append({k: v for k, v in run.items() if k != "losses"})
        rows.append({"workload": "train_ae", "batch": batch, "cells": batch, "median_s": run["step_seconds"],
                     "cells_per_s": batch / run["step_seconds"], "peak_rss_mb": run["peak_rss_mb"]})
    options = (args.images, args.image_size, args.backbone, args.detector_checkpoint, args.min_size, args.max_size,
               args.batch_size, args.encode_batch, args.repeats, threads)
    run = raw["detect_encode"] = in_fresh_process(measure_detect_encode, *options)
    both = run["detect_seconds"] + run["encode_seconds"]
    rows.append({"workload": "detect+encode", "batch": args.batch_size, "cells": run["cells"], "median_s": both,
                 "cells_per_s": run["cells"] / both, "peak_rss_mb": run["peak_rss_mb"]})
    rows.append({"workload": "encode", "batch": args.encode_batch, "cells": run["cells"],
                 "median_s": run["encode_seconds"], "cells_per_s": run["cells"] / run["encode_seconds"],
                 "peak_rss_mb": run["peak_rss_mb"]})
    if not args.no_pipeline:
        run = raw["pipeline"] = in_fresh_process(measure_pipeline, *options)
        rows.append({"workload": "pipeline", "batch": args.batch_size, "cells": run["cells"],
                     "median_s": run["seconds"], "cells_per_s": run["cells"] / run["seconds"],
                     "peak_rss_mb": run["peak_rss_mb"]})
    return rows, raw


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows."""
    import pandas as pd

    frame = pd.DataFrame(rows).round({"median_s": 3, "cells_per_s": 1, "peak_rss_mb": 0})
    return frame.to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows, raw = run_benchmarks(args)
    table = format_table(rows)
    print(f"threads {raw['threads']}, torch {raw['torch']}, detector {args.backbone} "
          f"({'trained' if args.detector_checkpoint else 'untrained'}), input resize {args.min_size}/{args.max_size}, "
          f"{args.images} images of {args.image_size} px\n{table}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "raw": raw}, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
