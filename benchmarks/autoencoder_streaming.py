"""Peak memory of autoencoder training against the number of cells in the store: streamed vs in memory.

Usage::

    python benchmarks/autoencoder_streaming.py --cells 2000 20000 100000 --steps 30 --dir /tmp/streaming

For each size a synthetic store (random RoI features and crops, three domains) is written once under ``--dir``;
then, each in a fresh process, the default recipe's linear-path fit and ``--steps`` training steps of its cheap
path (batch 64) run with the cells streamed from the store (:class:`aecfe.store.training_cells.StoreCells`) and, up
to ``--memory-max-cells``, loaded into memory (:class:`extractors.trainer.RoiCropDataset`). Printed: peak
resident memory (MB) and seconds per step of each, side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from aecfe.measure import in_fresh_process, peak_rss_mb
from aecfe.shapes import CROP_SHAPE, ROI_SHAPE
from aecfe.store import CellStore

BLOCK = 500


def write_store(path: Path, n: int, seed: int = 0) -> Path:
    """A store of n synthetic cells (one per image), three domains, written block by block (kept if present)."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    partial = path.with_suffix(".partial.h5")
    partial.unlink(missing_ok=True)
    with CellStore.create(partial, provenance={"detector": None}, chunk_cells=BLOCK) as store:
        for start in range(0, n, BLOCK):
            roi = rng.standard_normal((min(BLOCK, n - start), *ROI_SHAPE)).astype(np.float16)
            crops = rng.integers(0, 256, (len(roi), *CROP_SHAPE), dtype=np.uint8)
            for i in range(len(roi)):
                store.add_image(f"cell_{start + i}.png", f"lab_{(start + i) % 3}", label="neutrophil", cells={
                    "box": np.array([[0, 0, 10, 10]], np.float32), "score": np.array([0.9]),
                    "mask_area": np.array([80]), "crop": crops[i:i + 1], "roi": roi[i:i + 1]})
    partial.rename(path)
    return path


def measure(store: str, stream: bool, steps: int) -> dict:
    """Peak RSS and seconds per step of ``steps`` cheap-path steps (meant to run in its own process); the peak
    includes the recipe's linear-path PCA fit (on ``pca_cells`` cells) before the first step, as in training."""
    from aecfe.store.training_cells import load_training_cells
    from extractors.autoencoder import AECFEAutoencoder
    from extractors.recipes import recipe_configs
    from extractors.trainer import AutoencoderTrainer, DomainBatchSampler

    model_config, config = recipe_configs(trainer={"probe_cells": 0, "progress": False})
    data, domains = load_training_cells(store, stream=stream)
    trainer = AutoencoderTrainer(AECFEAutoencoder(model_config), config, n_domains=len(domains))
    sampler = DomainBatchSampler(data.domains.numpy(), config.batch_size, balance_domains=True)
    batches = iter(sampler)
    trainer.init_linear_path(data)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.training_step(*data.features(next(batches)), with_image=False)
    seconds = (time.perf_counter() - started) / steps
    return {"cells": len(data), "stream": stream, "peak_rss_mb": peak_rss_mb(), "seconds_per_step": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", type=int, default=[2000, 20000])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--memory-max-cells", type=int, default=20000,
                        help="largest store also loaded into memory (150 KB per cell)")
    parser.add_argument("--dir", type=Path, default=Path("runs/streaming"))
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.cells:
        store = write_store(args.dir / f"cells_{n}.h5", n)
        for stream in (True, False):
            if stream or n <= args.memory_max_cells:
                rows.append(in_fresh_process(measure, str(store), stream, args.steps))
                print(json.dumps(rows[-1]), flush=True)
    print("\n| cells | data | peak RSS (MB) | s per step |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['cells']} | {'streamed' if row['stream'] else 'in memory'} | {row['peak_rss_mb']:.0f} | "
              f"{row['seconds_per_step']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
