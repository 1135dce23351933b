"""Speed of the HDF5 cell store: write and read throughput, random access, file size; compare layouts.

Two workloads, as an extraction run produces them:
- "embeddings": cells with metadata and one float32 embedding (D=50), no crops or RoI features;
  written image by image (10 cells per image), then the embedding in blocks of 4096 rows.
- "roi": cells with float16 RoI features (256x14x14), 10 cells per image.

Synthetic RoI features are spatially smoothed Gaussian noise (a 500-cell pool, cycled); their
compression ratio stands in for real FPN features only roughly: re-run with ``--roi-npy`` on
real features (an (n, 256, 14, 14) array) to measure your own. Figures are medians over
``--repeats``; layout options are compared side by side on a smaller subset (one pass each).
The cost of the fletcher32 checksums (``StoreLayout.checksum``, on by default) is measured on both main
workloads at full size: passes with and without checksums alternate, medians of ``--repeats`` each.

    python benchmarks/store_speed.py [--out DIR] [--repeats 3] [--skip-options] [--skip-checksum]

Measured figures, with date and machine: ``docs/benchmarks.md`` (the tables are in ``docs/store_layout.md``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from aecfe.cli import positive_int
from aecfe.store import CellStore, StoreLayout
from aecfe.shapes import ROI_SHAPE

logger = logging.getLogger(__name__)

CELLS_PER_IMAGE = 10
EMBEDDING_BLOCK = 4096
READ_BATCH = 256
RANDOM_READS = 300

ROI_OPTIONS = {
    "gzip-1+shuffle, 1 cell/chunk (default)": StoreLayout(),
    "gzip-4+shuffle, 1 cell/chunk": StoreLayout(compression_level=4),
    "lzf+shuffle, 1 cell/chunk": StoreLayout(compression="lzf", compression_level=None),
    "gzip-1, no shuffle, 1 cell/chunk": StoreLayout(shuffle=False),
    "uncompressed, 1 cell/chunk": StoreLayout(compression=None, compression_level=None, shuffle=False),
    "gzip-1+shuffle, 8 cells/chunk": StoreLayout(stage_chunk_cells=8),
}
EMBEDDING_OPTIONS = {  # the default (256 KiB chunks) is the main table's row
    "embedding chunks 32 KiB": StoreLayout(embedding_chunk_bytes=1 << 15),
    "embedding chunks 4 MiB": StoreLayout(embedding_chunk_bytes=1 << 22),
}


def synthetic_roi_pool(n: int, seed: int) -> np.ndarray:
    """(n, 256, 14, 14) float32 RoI-like features: Gaussian noise smoothed over space (sigma 1.5 px),
    per-channel offsets, unit overall scale."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, *ROI_SHAPE)).astype(np.float32)
    smooth = gaussian_filter(noise, sigma=(0, 0, 1.5, 1.5))
    smooth += rng.normal(scale=0.5, size=(1, ROI_SHAPE[0], 1, 1)).astype(np.float32)
    return smooth / smooth.std()


def _cell_metadata(n: int, rng: np.random.Generator) -> dict:
    corner = rng.uniform(0, 1000, size=(n, 2)).astype(np.float32)
    return {"box": np.concatenate([corner, corner + rng.uniform(20, 80, size=(n, 2))], axis=1),
            "score": rng.uniform(0.5, 1, size=n), "mask_area": rng.integers(300, 5000, size=n)}


def _write_store(path: Path, n_cells: int, layout: StoreLayout, rng: np.random.Generator,
                 roi_pool: np.ndarray | None, dim: int | None) -> float:
    """Write ``n_cells`` cells (+ an embedding when ``dim``); returns seconds."""
    meta = _cell_metadata(n_cells, rng)
    embedding = None if dim is None else rng.normal(size=(n_cells, dim)).astype(np.float32)
    started = time.perf_counter()
    with CellStore.create(path, roi_shape=None if roi_pool is None else ROI_SHAPE, crop_shape=None,
                          provenance={"benchmark": True}, layout=layout) as store:
        for image, start in enumerate(range(0, n_cells, CELLS_PER_IMAGE)):
            rows = slice(start, min(start + CELLS_PER_IMAGE, n_cells))
            cells = {key: value[rows] for key, value in meta.items()}
            if roi_pool is not None:
                cells["roi"] = roi_pool[np.arange(rows.start, rows.stop) % len(roi_pool)]
            store.add_image(f"images/domain_a/{image:07d}.png", "domain_a", "neutrophil", cells=cells)
        if embedding is not None:
            store.flush()
            for start in range(0, n_cells, EMBEDDING_BLOCK):
                store.write_embedding("bench", start, embedding[start:start + EMBEDDING_BLOCK])
    return time.perf_counter() - started


def _read_all(path: Path, roi: bool) -> float:
    started = time.perf_counter()
    with CellStore.open(path) as store:
        store.cells()
        if roi:
            for start in range(0, len(store), READ_BATCH):
                store.roi(slice(start, start + READ_BATCH))
        else:
            store.embedding("bench")
    return time.perf_counter() - started


def _random_read_us(path: Path, roi: bool, rng: np.random.Generator) -> float:
    with CellStore.open(path) as store:
        read: Callable[[int], np.ndarray] = store.roi if roi else (lambda i: store.embedding("bench", i))
        times = []
        for index in rng.integers(0, len(store), size=RANDOM_READS):
            started = time.perf_counter()
            read(int(index))
            times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e6)


def measure(path: Path, n_cells: int, layout: StoreLayout, seed: int, roi_pool: np.ndarray | None,
            dim: int | None) -> dict:
    """One pass: write, sequential read, random single-cell reads, file size; deletes the file."""
    rng = np.random.default_rng(seed)
    write_s = _write_store(path, n_cells, layout, rng, roi_pool, dim)
    size = path.stat().st_size
    read_s = _read_all(path, roi=roi_pool is not None)
    random_us = _random_read_us(path, roi=roi_pool is not None, rng=rng)
    path.unlink()
    return {"cells": n_cells, "write_cells_per_s": n_cells / write_s, "read_cells_per_s": n_cells / read_s,
            "random_cell_us": random_us, "file_mb": size / 1e6, "bytes_per_cell": size / n_cells}


def _median_of(passes: list[dict]) -> dict:
    return {key: float(np.median([p[key] for p in passes])) for key in passes[0]}


def _table(title: str, rows: dict[str, dict]) -> str:
    header = f"{'':44s} {'cells':>7s} {'write c/s':>10s} {'read c/s':>10s} {'1 cell us':>10s} {'MB':>8s} {'B/cell':>8s}"
    lines = [title, header]
    for name, r in rows.items():
        lines.append(f"{name:44s} {int(r['cells']):7d} {r['write_cells_per_s']:10.0f} {r['read_cells_per_s']:10.0f} "
                     f"{r['random_cell_us']:10.0f} {r['file_mb']:8.1f} {r['bytes_per_cell']:8.0f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for results.json and the scratch files "
                        "(default: a temporary folder, deleted)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="passes of the main workloads (median reported)")
    parser.add_argument("--embedding-cells", type=positive_int, default=100_000)
    parser.add_argument("--dim", type=positive_int, default=50, help="embedding dimension")
    parser.add_argument("--roi-cells", type=positive_int, default=10_000)
    parser.add_argument("--option-cells", type=positive_int, default=500,
                        help="RoI cells per layout option compared (embedding options use --embedding-cells)")
    parser.add_argument("--roi-npy", type=Path, help="real RoI features (n,256,14,14) .npy to use instead of synthetic")
    parser.add_argument("--skip-options", action="store_true", help="measure the default layout only")
    parser.add_argument("--skip-checksum", action="store_true",
                        help="do not compare the default layout with and without fletcher32 checksums")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    roi_pool = (np.load(args.roi_npy, mmap_mode="r")[:2000].astype(np.float32) if args.roi_npy
                else synthetic_roi_pool(500, args.seed))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        scratch = Path(scratch)
        main_rows, checksum_rows = {}, {}
        layouts = {"": StoreLayout()} if args.skip_checksum else {"": StoreLayout(),
                                                                  ", no checksum": StoreLayout(checksum=False)}
        for name, n_cells, pool, dim in ((f"embeddings only (D={args.dim})", args.embedding_cells, None, args.dim),
                                         ("roi float16 256x14x14", args.roi_cells, roi_pool, None)):
            passes: dict[str, list[dict]] = {suffix: [] for suffix in layouts}
            for r in range(args.repeats):  # alternate the layouts so that machine load hits both alike
                for suffix, layout in layouts.items():
                    passes[suffix].append(measure(scratch / "main.h5", n_cells, layout, args.seed + r, pool, dim))
            main_rows[name] = _median_of(passes[""])
            for suffix in layouts:
                checksum_rows[f"{name}{suffix or ', fletcher32'}"] = _median_of(passes[suffix])
            logger.info("%s: %s", name, json.dumps(main_rows[name]))
        report = _table(f"Default layout, median of {args.repeats} passes", main_rows)
        if not args.skip_checksum:
            report += "\n\n" + _table(f"Checksums on (default) and off, median of {args.repeats} passes each",
                                       checksum_rows)
        option_rows = {}
        if not args.skip_options:
            for name, layout in ROI_OPTIONS.items():
                option_rows[f"roi: {name}"] = measure(scratch / "option.h5", args.option_cells, layout,
                                                      args.seed, roi_pool, None)
            option_rows["emb: embedding chunks 256 KiB (default)"] = main_rows[f"embeddings only (D={args.dim})"]
            for name, layout in EMBEDDING_OPTIONS.items():
                option_rows[f"emb: {name}"] = measure(scratch / "option.h5", args.embedding_cells, layout,
                                                      args.seed, None, args.dim)
            report += "\n\n" + _table("Layout options, one pass each", option_rows)
    print(report)
    if args.out:
        results = {"main": main_rows, "checksum": checksum_rows, "options": option_rows, "repeats": args.repeats,
                   "roi_source": str(args.roi_npy or "synthetic"),
                   "default_layout": dataclasses.asdict(StoreLayout())}
        (args.out / "benchmark_store.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
