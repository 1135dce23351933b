"""The embedded default end to end: synthetic labs -> detector -> cell store -> autoencoder -> heads -> tables.

Usage::

    aecfe-demo --out runs/demo            # or: make demo

Nothing is downloaded and ``../shared`` is not needed. The stages, their outputs and the cache are described in
:mod:`aecfe.demo` (:func:`aecfe.demo.run_demo` does the work): a small Mask R-CNN trained on synthetic smears,
the cell store with the baseline embeddings, the AE-CFE autoencoder's code, linear and random-forest heads
across labs, and ``comparison.md`` / ``comparison.csv`` (printed).

Every stage is cached under ``--out`` (the store resumes, the detector and autoencoder checkpoints are
reused): a second run only re-evaluates. ``--fresh`` deletes ``--out`` first.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from aecfe.cli import add_device
from aecfe.demo import DemoConfig, run_demo
from aecfe.devices import resolve_device
from extractors.recipes import DEFAULT_RECIPE, RECIPES


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
    add_device(parser)
    parser.add_argument("--no-umap", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    config = DemoConfig(n_per_domain=args.n_per_domain, detector_fields=args.detector_fields,
                        detector_seconds=args.detector_seconds, detector_steps=args.detector_steps,
                        ae_epochs=args.ae_epochs, recipe=args.recipe, ae_batch=args.ae_batch,
                        alignment=args.alignment, heads=args.heads, seeds=args.seeds, seed=args.seed,
                        umap=not args.no_umap, progress=not args.no_progress, device=resolve_device(args.device))
    print(run_demo(args.out, config))
    return 0
