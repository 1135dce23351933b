"""The embedded default end to end: synthetic labs -> detector -> cell store -> autoencoder -> heads -> tables.

Nothing is downloaded and ``../shared`` is not needed. From ``seed`` the three synthetic labs of
:func:`aecfe.synthetic.default_domains` (``lab_a``, ``lab_b`` without basophils, ``lab_c``) give

1. smear fields and single-cell images with cell masks, on which a small Mask R-CNN (MobileNetV2-FPN, from
   scratch, 128 px input) is trained for ``detector_steps`` (:func:`detectors.training.train_detector`,
   ``detector/last.pt``);
2. labelled single-cell images (class folders under ``images/``), which :func:`aecfe.pipeline.run_extraction`
   runs through that detector into the cell store ``cells.h5``: box, mask area, RoI features (256x14x14),
   crop (3x128x128) per cell, plus the baseline embeddings ``rcnn_roi`` (RoI features averaged over the 14x14
   grid, the R-CNN-RF baseline) and ``raw_pixels`` (crop averaged to 8x8 RGB). A single-cell image without a
   detection gets the centred fallback box, so every image gives a cell;
3. the AE-CFE autoencoder trained on the store's RoI features and crops with the ``recipe`` (default
   :data:`extractors.recipes.DEFAULT_RECIPE`) and ``alignment`` (default the moment matching, ``mmd``) by
   :func:`aecfe.autoencoding.train_on_store`, and its code written back as ``ae_<alignment>``;
4. linear and random-forest heads on every embedding, evaluated across labs (the thesis matrix and
   leave-one-lab-out, :func:`aecfe.reporting.run_evaluation`): per embedding a folder of tables (CSV + Markdown;
   for the autoencoder's embedding also confusion matrices and UMAPs by lab and by class); ``comparison.md`` /
   ``comparison.csv`` put the embeddings side by side (:func:`aecfe.reporting.comparison_table`).

Every stage is cached under ``out`` (the store resumes, the detector and autoencoder checkpoints are reused):
a second run only re-evaluates.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from aecfe.identity import detector_identity
from aecfe.pipeline import gather_images, run_extraction
from aecfe.reporting import comparison_table, run_evaluation
from aecfe.store import autoencoder_stage, baseline_stage, read_features, write_embedding
from aecfe.synthetic import default_domains, write_class_folders, write_coco
from extractors.recipes import DEFAULT_RECIPE

logger = logging.getLogger(__name__)

DETECTOR_SIZE = 128
"""Side of the synthetic fields and the single-cell images, and the detector's input size (min_size = max_size:
no resizing)."""
# Fewer region proposals and sampled RoIs than torchvision's defaults (2000 / 512 per image): a few cells per
# image need no more, and the box head's 12544 x 1024 layer on 512 RoIs per image was most of a step's time.
FAST_MASKRCNN = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 300,
                 "rpn_post_nms_top_n_test": 100, "box_batch_size_per_image": 64, "box_detections_per_img": 20}


@dataclass
class DemoConfig:
    """The demo's settings (the ``aecfe-demo`` options): synthetic data size, detector and autoencoder training,
    heads and seeds."""

    n_per_domain: int = 100
    detector_fields: int = 24
    detector_seconds: float = 600.0
    detector_steps: int = 150
    ae_epochs: int | None = None
    recipe: str = DEFAULT_RECIPE
    ae_batch: int = 32
    alignment: str = "mmd"
    heads: list[str] = field(default_factory=lambda: ["linear", "rf"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    seed: int = 0
    umap: bool = True
    progress: bool = True
    device: str = "cpu"
    """Where the detector and the autoencoder train and run (``aecfe-demo --device``; default there: the GPU if
    present, else the CPU)."""


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


def train_or_load_detector(out: Path, training: list, config: DemoConfig) -> tuple[object, dict]:
    """(detector, identity): trained into ``out/detector`` unless that finished before."""
    from detectors.base import make_detector
    from detectors.training import train_detector

    checkpoint = out / "detector" / "last.pt"
    options = {"score_threshold": 0.5, "single_cell_fallback": "center", "min_size": DETECTOR_SIZE,
               "max_size": DETECTOR_SIZE}
    if not (out / "detector" / "done").exists():
        train_detector(training, out_dir=out / "detector", backbone="mobilenet_v2", epochs=1000,
                       max_steps=config.detector_steps, max_seconds=config.detector_seconds, batch_size=2, lr=0.02,
                       warmup_steps=20, seed=config.seed, min_size=DETECTOR_SIZE, max_size=DETECTOR_SIZE,
                       extra=FAST_MASKRCNN, progress=config.progress, device=config.device)
        (out / "detector" / "done").touch()
    detector = make_detector("torchvision", checkpoint=str(checkpoint), device=config.device, **options)
    return detector, detector_identity(checkpoint, "torchvision", **options)


def train_or_load_autoencoder(store_path: Path, out: Path, config: DemoConfig) -> Path:
    """Train the autoencoder (recipe ``config.recipe``) on the store's cells into ``out/checkpoint.pt`` unless it
    exists (:func:`aecfe.autoencoding.train_on_store`); returns it."""
    from aecfe.autoencoding import train_on_store
    from extractors.recipes import recipe_configs
    from extractors.trainer import tune_cpu_allocator

    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        return checkpoint
    if config.device == "cpu":
        tune_cpu_allocator()
    overrides = {"batch_size": config.ae_batch, "alignment": config.alignment, "balance_domains": True,
                 "seed": config.seed, "checkpoint_every": 0, "progress": config.progress}
    if config.ae_epochs:
        overrides.update(epochs=config.ae_epochs, grid_every=config.ae_epochs)
    model_config, trainer_config = recipe_configs(config.recipe, trainer=overrides)
    if not config.ae_epochs:
        trainer_config.grid_every = trainer_config.epochs
    return train_on_store(store_path, out, model_config, trainer_config, device=config.device)


def domain_probe(X, domains, seed: int) -> str:
    """Balanced accuracy (%) of a linear classifier that tells the lab from the features (chance: 1/labs);
    lower = the labs are better mixed (:func:`extractors.diagnostics.linear_probe`)."""
    from extractors.diagnostics import linear_probe

    domain_ids = pd.factorize(pd.Series(domains))[0]
    accuracy = linear_probe(X, np.full(len(X), -1), domain_ids, seed=seed)["domain_accuracy"]
    return f"{accuracy:.1f}"


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_demo(out: Path, config: DemoConfig) -> str:
    """Run (or resume) every stage of the demo under ``out``; returns the comparison text (also written to
    ``out/comparison.md``, the table to ``out/comparison.csv``)."""
    started = last = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    def lap(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        timings[name] = round(now - last, 1)
        last = now

    images, training = synthetic_inputs(out, config.n_per_domain, config.detector_fields, config.seed)
    lap("synthetic data")
    detector, identity = train_or_load_detector(out, training, config)
    lap("detector training")
    store_path = out / "cells.h5"
    run_extraction(gather_images(class_folders=[images]), store_path, detector_factory=lambda: detector,
                   detector_identity=identity, embeddings=[baseline_stage("rcnn_roi"), baseline_stage("raw_pixels")],
                   batch_size=4, progress=config.progress)
    lap("extraction")
    ae_checkpoint = train_or_load_autoencoder(store_path, out / "autoencoder", config)
    lap("autoencoder training")
    stage = autoencoder_stage(ae_checkpoint, device=config.device)
    write_embedding(store_path, stage, progress=config.progress)
    lap("encoding")

    results, probes, embeddings = {}, {}, (stage.name, "rcnn_roi", "raw_pixels")
    for features in embeddings:
        X, y, domains, groups = read_features(store_path, features, with_groups=True)
        figures = features == stage.name  # confusion and UMAP PNGs for the autoencoder's embedding only
        evaluated = run_evaluation(X, y, domains, out / features, heads=config.heads, seeds=config.seeds,
                                   umap=figures and config.umap, confusion_png=figures, progress=config.progress,
                                   groups=groups)
        results.update({(features, head): result for head, result in evaluated.items()})
        probes[features] = domain_probe(X, domains, config.seed)
    lap("heads and evaluation")
    table = comparison_table(results)
    table.insert(2, "domain-probe accuracy", table["features"].map(probes))
    table.to_csv(out / "comparison.csv", index=False)
    text = (f"# Synthetic labs, cross-lab comparison\n\n{len(y)} labelled cells, seeds {config.seeds}; "
            f"mean ± std over seeds, in %.\n\n{table.to_markdown(index=False)}\n\n"
            f"Per-feature tables, confusion matrices and UMAPs: {', '.join(f + '/' for f in embeddings)}\n\n"
            f"Time (s): {', '.join(f'{k} {v}' for k, v in timings.items())}; total "
            f"{time.perf_counter() - started:.0f} wall, {_cpu_seconds():.0f} CPU (this process, all threads)\n")
    (out / "comparison.md").write_text(text, encoding="utf-8")
    return text
