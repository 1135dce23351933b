"""The embedded default end to end: synthetic labs -> cell store -> embedding -> heads -> cross-domain table.

Usage::

    aecfe-demo --out runs/demo            # or: make demo

Nothing is downloaded and ``../shared`` is not needed: the three synthetic labs of
:func:`aecfe.synthetic.default_domains` (``lab_a``, ``lab_b`` without basophils, ``lab_c``) are drawn
from ``--seed``. Each single-cell image becomes one row of an HDF5 cell store (``cells.h5``, crops kept)
with the ``raw_pixels`` embedding (the crop block-averaged to ``--pixels`` x ``--pixels`` RGB, in [0, 1]);
the linear and random-forest heads are then evaluated with the thesis matrix and leave-one-domain-out
(:func:`aecfe.cli.evaluate_cross_domain.run_evaluation`), and ``summary.md`` is printed.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aecfe.store import CellStore
from aecfe.synthetic import default_domains, make_single_cell_images

logger = logging.getLogger(__name__)


def block_average(images: np.ndarray, side: int) -> np.ndarray:
    """``(N, 3, S, S)`` uint8 -> ``(N, 3 * side * side)`` float32 in [0, 1], mean over ``S/side`` blocks."""
    n, channels, height, width = images.shape
    if height % side or width % side:
        raise ValueError(f"crop side {height}x{width} is not a multiple of {side}")
    blocks = images.reshape(n, channels, side, height // side, side, width // side)
    return (blocks.mean(axis=(3, 5), dtype=np.float32) / 255.0).reshape(n, -1)


def write_synthetic_store(path: Path, n_per_domain: int, seed: int, pixels: int) -> Path:
    """Draw ``n_per_domain`` single-cell images per synthetic lab into a new cell store at ``path``.

    Each image is one cell: box = the cell's tight box, crop = the whole 128x128 image, label and domain
    from the generator. The ``raw_pixels`` embedding (N, 3 * pixels**2) is written alongside.
    """
    domains = default_domains()
    with CellStore.create(path, roi_shape=None, crop_shape=(3, 128, 128),
                          provenance={"detector": None, "autoencoder": None,
                                      "source": f"aecfe.synthetic default_domains seed {seed}"}) as store:
        for domain in domains:
            fields = make_single_cell_images(domain, n_per_domain, seed=seed, size=128)
            for index, field in enumerate(tqdm(fields, desc=f"drawing {domain.name}", unit="image")):
                store.add_image(f"synthetic/{domain.name}/{index:05d}.png", domain.name, field.labels[0],
                                cells={"box": field.boxes, "score": np.ones(1, np.float32),
                                       "mask_area": field.masks.sum(axis=(1, 2)),
                                       "crop": field.image.transpose(2, 0, 1)[None]})
        store.flush()
        store.write_embedding("raw_pixels", 0, block_average(store.crops(), pixels),
                              attrs={"provenance": {"features": f"crop block-averaged to {pixels}x{pixels} RGB"}})
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (replaced)")
    parser.add_argument("--n-per-domain", type=int, default=200, help="single-cell images per synthetic lab")
    parser.add_argument("--pixels", type=int, default=16, choices=[8, 16, 32], help="raw-pixel grid side")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split and model seeds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")
    return parser


def main(argv=None) -> int:
    from aecfe.cli.evaluate_cross_domain import run_evaluation

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    store_path = args.out / "cells.h5"
    store_path.unlink(missing_ok=True)
    write_synthetic_store(store_path, args.n_per_domain, args.seed, args.pixels)
    with CellStore.open(store_path) as store:
        X, y, domains = store.arrays("raw_pixels", labelled_only=True)
    run_evaluation(X, y, domains, args.out / "raw_pixels", heads=("linear", "rf"), seeds=args.seeds,
                   progress=True)
    print((args.out / "raw_pixels" / "summary.md").read_text(encoding="utf-8"))
    return 0
