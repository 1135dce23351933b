"""The embedded default end to end: synthetic labs -> detector -> cell store -> autoencoder -> heads -> tables.

Usage::

    aecfe-demo --out runs/demo            # or: make demo

Nothing is downloaded and ``../shared`` is not needed. From ``--seed`` the three synthetic labs of
:func:`aecfe.synthetic.default_domains` (``lab_a``, ``lab_b`` without basophils, ``lab_c``) give

1. smear fields and single-cell images with cell masks, on which a small Mask R-CNN (MobileNetV2-FPN, from
   scratch, 128 px input) is trained for ``--detector-steps`` (:func:`detectors.training.train_detector`,
   ``detector/last.pt``);
2. labelled single-cell images (class folders under ``images/``), which :func:`aecfe.pipeline.run_extraction`
   runs through that detector into the cell store ``cells.h5``: box, mask area, RoI features (256x14x14),
   crop (3x128x128) per cell, plus the baseline embeddings ``rcnn_roi`` (RoI features averaged over the 14x14
   grid, the R-CNN-RF baseline) and ``raw_pixels`` (crop averaged to 8x8 RGB). A single-cell image without a
   detection gets the centred fallback box, so every image gives a cell;
3. the AE-CFE autoencoder trained on the store's RoI features and crops with the ``--recipe`` (default
   :data:`extractors.recipes.DEFAULT_RECIPE`) and ``--alignment`` (default the moment matching, ``mmd``), and its
   code written back as ``ae_<alignment>``;
4. linear and random-forest heads on every embedding, evaluated across labs (the thesis matrix and
   leave-one-lab-out, :func:`aecfe.cli.evaluate_cross_domain.run_evaluation`): per embedding a folder of tables
   (CSV + Markdown; for the autoencoder's embedding also confusion matrices and UMAPs by lab and by class);
   ``comparison.md`` / ``comparison.csv`` put the embeddings side by side and are printed.

Every stage is cached under ``--out`` (the store resumes, the detector and autoencoder checkpoints are
reused): a second run only re-evaluates. ``--fresh`` deletes ``--out`` first.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aecfe.evaluation import format_mean_std
from aecfe.pipeline import (autoencoder_stage, baseline_stage, gather_images, run_extraction,
                            write_embedding_stage)
from aecfe.store import CellStore, model_identity
from aecfe.synthetic import default_domains, write_class_folders, write_coco
from extractors.recipes import DEFAULT_RECIPE, RECIPES

logger = logging.getLogger(__name__)

DETECTOR_SIZE = 128
"""Side of the synthetic fields and the single-cell images, and the detector's input size (min_size = max_size:
no resizing)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (stages cached)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    parser.add_argument("--n-per-domain", type=int, default=100, help="single-cell images per synthetic lab")
    parser.add_argument("--detector-fields", type=int, default=24,
                        help="detector training images per lab: this many fields and as many single-cell images")
    parser.add_argument("--detector-seconds", type=float, default=600.0,
                        help="detector training time cap (a safety net: --detector-steps decides, reproducibly)")
    parser.add_argument("--detector-steps", type=int, default=150, help="detector training steps (batch 2)")
    parser.add_argument("--ae-epochs", type=int, help="autoencoder epochs (default: the recipe's)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES),
                        help="autoencoder training recipe (extractors.recipes)")
    parser.add_argument("--ae-batch", type=int, default=32,
                        help="autoencoder batch (300 cells: 10 steps per epoch)")
    parser.add_argument("--alignment", default="mmd", help="alignment loss of the autoencoder")
    parser.add_argument("--heads", nargs="+", default=["linear", "rf"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split and model seeds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the models")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-umap", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def synthetic_inputs(out: Path, n_per_domain: int, n_fields: int, seed: int) -> tuple[Path, list]:
    """Write the labelled single-cell images to extract (``images/``, class folders) and the detector's
    training set; returns (the image folder, the training images as :class:`~aecfe.io.CocoImage`).

    The detector trains on ``n_fields`` fields per lab (COCO files under ``coco/``) and on as many other
    single-cell images per lab (COCO files under ``detector_cells/``, seed + 1), so that it finds a cell
    both among red cells and when it fills a tight crop; it never sees the images it will extract.
    Folders are written once (an existing folder is kept).
    """
    from aecfe.io import SkipCounter, load_coco

    domains = default_domains()
    images, coco, cells = out / "images", out / "coco", out / "detector_cells"
    for folder, write in ((images, lambda tmp: write_class_folders(tmp, domains, n_per_domain, seed=seed)),
                          (cells, lambda tmp: [write_coco(tmp, d, n_fields, seed=seed + 1, size=(DETECTOR_SIZE,) * 2,
                                                          single_cell=True) for d in domains]),
                          (coco, lambda tmp: [write_coco(tmp, d, n_fields, seed=seed, size=(DETECTOR_SIZE,) * 2)
                                              for d in domains])):
        if not folder.is_dir():
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            write(partial)
            partial.rename(folder)
    skips = SkipCounter("COCO entries")
    training = [image for root in (coco, cells) for path in sorted(root.glob("*/annotations.json"))
                for image in load_coco(path, on_error="skip", skips=skips)]
    skips.log()
    return images, training


# Fewer region proposals and sampled RoIs than torchvision's defaults (2000 / 512 per image): a few cells per
# image need no more, and the box head's 12544 x 1024 layer on 512 RoIs per image was most of a step's time.
FAST_MASKRCNN = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 300,
                 "rpn_post_nms_top_n_test": 100, "box_batch_size_per_image": 64, "box_detections_per_img": 20}


def train_or_load_detector(out: Path, training: list, args) -> tuple[object, dict]:
    """(detector, identity): trained into ``out/detector`` unless that finished before."""
    from detectors.base import make_detector
    from detectors.training import train_detector

    checkpoint = out / "detector" / "last.pt"
    options = {"score_threshold": 0.5, "single_cell_fallback": "center", "min_size": DETECTOR_SIZE,
               "max_size": DETECTOR_SIZE}
    if not (out / "detector" / "done").exists():
        train_detector(training, out_dir=out / "detector", backbone="mobilenet_v2", epochs=1000,
                       max_steps=args.detector_steps, max_seconds=args.detector_seconds, batch_size=2, lr=0.02,
                       warmup_steps=20, seed=args.seed, min_size=DETECTOR_SIZE, max_size=DETECTOR_SIZE,
                       extra=FAST_MASKRCNN, progress=not args.no_progress)
        (out / "detector" / "done").touch()
    detector = make_detector("torchvision", checkpoint=str(checkpoint), **options)
    return detector, model_identity({"backend": "torchvision", **options}, checkpoint)


def train_or_load_autoencoder(store_path: Path, out: Path, args) -> Path:
    """Train the autoencoder (recipe ``args.recipe``) on the store's cells into ``out/checkpoint.pt`` unless it
    exists; returns it."""
    from aecfe.autoencoding import train_on_store
    from extractors.recipes import recipe_configs
    from extractors.trainer import tune_cpu_allocator

    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        return checkpoint
    tune_cpu_allocator()
    overrides = {"batch_size": args.ae_batch, "alignment": args.alignment, "balance_domains": True,
                 "seed": args.seed, "checkpoint_every": 0, "progress": not args.no_progress}
    if args.ae_epochs:
        overrides.update(epochs=args.ae_epochs, grid_every=args.ae_epochs)
    model_config, trainer_config = recipe_configs(args.recipe, trainer=overrides)
    if not args.ae_epochs:
        trainer_config.grid_every = trainer_config.epochs
    return train_on_store(store_path, out, model_config, trainer_config)


def comparison_table(results: dict[tuple[str, str], object]) -> pd.DataFrame:
    """One row per (features, head): in-lab accuracy, cross-lab accuracy and macro-F1 (matrix test_split,
    off-diagonal) and leave-one-lab-out macro-F1 (whole domain), ``"mean ± std"`` in % over seeds."""
    rows = []
    for (features, head), result in results.items():
        scores = result.scores
        matrix = scores[(scores["protocol"] == "matrix") & (scores["variant"] == "test_split")]
        same = matrix["train_domain"] == matrix["test_domain"]
        lodo = scores[(scores["protocol"] == "lodo") & (scores["variant"] == "whole_domain")]
        rows.append({"features": features, "head": head,
                     "in-lab accuracy": _over_seeds(matrix[same], "accuracy"),
                     "cross-lab accuracy": _over_seeds(matrix[~same], "accuracy"),
                     "cross-lab macro-F1": _over_seeds(matrix[~same], "f1_macro"),
                     "leave-one-lab-out macro-F1": _over_seeds(lodo, "f1_macro")})
    return pd.DataFrame(rows)


def domain_probe(X, domains, seed: int) -> str:
    """Balanced accuracy (%) of a linear classifier that tells the lab from the features (chance: 1/labs);
    lower = the labs are better mixed (:func:`extractors.diagnostics.linear_probe`)."""
    from extractors.diagnostics import linear_probe

    domain_ids = pd.factorize(pd.Series(domains))[0]
    accuracy = linear_probe(X, np.full(len(X), -1), domain_ids, seed=seed)["domain_accuracy"]
    return f"{accuracy:.1f}"


def _over_seeds(rows: pd.DataFrame, metric: str) -> str:
    return format_mean_std(rows.groupby("seed")[metric].mean()) if not rows.empty else "n/a"


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    from aecfe.cli.evaluate_cross_domain import load_features, run_evaluation

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    timings = {}

    last = started

    def lap(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        timings[name] = round(now - last, 1)
        last = now

    images, training = synthetic_inputs(args.out, args.n_per_domain, args.detector_fields, args.seed)
    lap("synthetic data")
    detector, identity = train_or_load_detector(args.out, training, args)
    lap("detector training")
    store_path = args.out / "cells.h5"
    run_extraction(gather_images(class_folders=[images]), store_path, detector_factory=lambda: detector,
                   detector_identity=identity, embeddings=[baseline_stage("rcnn_roi"), baseline_stage("raw_pixels")],
                   batch_size=4, progress=progress)
    lap("extraction")
    ae_checkpoint = train_or_load_autoencoder(store_path, args.out / "autoencoder", args)
    lap("autoencoder training")
    stage = autoencoder_stage(ae_checkpoint)
    with CellStore.open(store_path, "a") as store:
        write_embedding_stage(store, stage, progress=progress)
    lap("encoding")

    results, probes, embeddings = {}, {}, (stage.name, "rcnn_roi", "raw_pixels")
    for features in embeddings:
        with CellStore.open(store_path) as store:
            X, y, domains, groups = load_features(store, features, with_groups=True)
        figures = features == stage.name  # confusion and UMAP PNGs for the autoencoder's embedding only
        evaluated = run_evaluation(X, y, domains, args.out / features, heads=args.heads, seeds=args.seeds,
                                   umap=figures and not args.no_umap, confusion_png=figures, progress=progress,
                                   groups=groups)
        results.update({(features, head): result for head, result in evaluated.items()})
        probes[features] = domain_probe(X, domains, args.seed)
    lap("heads and evaluation")
    table = comparison_table(results)
    table.insert(2, "domain-probe accuracy", table["features"].map(probes))
    table.to_csv(args.out / "comparison.csv", index=False)
    text = (f"# Synthetic labs, cross-lab comparison\n\n{len(y)} labelled cells, seeds {args.seeds}; "
            f"mean ± std over seeds, in %.\n\n{table.to_markdown(index=False)}\n\n"
            f"Per-feature tables, confusion matrices and UMAPs: {', '.join(f + '/' for f in embeddings)}\n\n"
            f"Time (s): {', '.join(f'{k} {v}' for k, v in timings.items())}; total "
            f"{time.perf_counter() - started:.0f} wall, {_cpu_seconds():.0f} CPU (this process, all threads)\n")
    (args.out / "comparison.md").write_text(text, encoding="utf-8")
    print(text)
    return 0
