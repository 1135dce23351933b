"""Sweep of autoencoder training configurations on one cell store: learning curves, code diagnostics, RF scores.

Usage::

    python benchmarks/autoencoder_sweep.py runs/cells_real.h5 --out runs/sweep --epochs 30 \\
        --run none="--alignment none" mmd_ref="--alignment mmd --beta 5" \\
        mmd_std_b1="--alignment mmd --alignment-option standardize=true --beta 1"

Each ``--run NAME="ARGS"`` trains ``scripts/train_autoencoder.py STORE --out OUT/NAME --embedding sweep_NAME``
with the common ``--common`` arguments plus ARGS (a child process, one after the other: they write into the same
store), then scores the embedding with random forests under the ``five`` label scheme (seeds ``--seeds``): in-lab
F1-macro (the thesis matrix's diagonal, test split) and leave-one-lab-out F1-macro (whole held-out lab). The same is
done for the store's baseline embeddings (``--baselines``, e.g. ``rcnn_roi``) and for the linear yardstick
(``--pca K``): the first K principal components of the autoencoder's input (the min-max scaled 256x14x14 RoI map,
fitted on every cell of the store as the autoencoder is), the best linear K-d code of that map in the autoencoder's
own reconstruction measure — a trained code that does worse than it has not learned what a linear map gets for
free. The labelled cells are :func:`aecfe.store.readers.labelled_in_scheme`'s, split cell by cell (not grouped by
image). A finished run (its summary in ``OUT/NAME/summary.json``) is not redone. Writes ``OUT/sweep.md`` (one row
per run: final code std, effective rank, linear-probe F1, domain-probe accuracy, training seconds, RF scores) and
``OUT/curves.png`` (all runs' curves).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import IncrementalPCA

from aecfe.evaluation import evaluate_cross_domain
from aecfe.plots import plot_learning_curves
from aecfe.store import CellStore
from aecfe.store.readers import labelled_in_scheme
from extractors.autoencoder import scale_roi_features

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run", nargs="+", default=[], metavar="NAME=ARGS", help="named training configurations")
    parser.add_argument("--common", default="--batch-size 64 --balance-domains --no-progress --grid-every 0",
                        help="arguments of every training run")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--baselines", nargs="*", default=["rcnn_roi", "raw_pixels"])
    parser.add_argument("--pca", nargs="*", type=int, default=[50], metavar="K",
                        help="score the first K principal components of the scaled RoI maps (the linear yardstick)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--scheme", default="five")
    return parser


def rf_scores(store_path: Path, embedding: str | np.ndarray, scheme: str, seeds: list[int]) -> dict[str, float]:
    """In-lab and leave-one-lab-out RF F1-macro (%) of one embedding — a store embedding's name, or codes (N, D)
    for every cell of the store — labels relabelled into ``scheme``."""
    with CellStore.open(store_path) as store:
        rows, y, domains = labelled_in_scheme(store, scheme, label_dataset="canonical")
        X = store.embedding(embedding) if isinstance(embedding, str) else embedding
    result = evaluate_cross_domain(X[rows], y, domains, head="rf", seeds=seeds)
    scores = result.scores
    matrix = scores[(scores.protocol == "matrix") & (scores.variant == "test_split")]
    same = matrix[matrix.train_domain == matrix.test_domain]
    lodo = scores[(scores.protocol == "lodo") & (scores.variant == "whole_domain")]
    return {"rf_in_lab_f1": 100 * same.f1_macro.mean(), "rf_lodo_f1": 100 * lodo.f1_macro.mean()}


def pca_codes(store_path: Path, k: int, block: int = 512) -> tuple[np.ndarray, float]:
    """(codes (N, k) float32, FVU) of the first k principal components of the store's scaled RoI maps.

    h = ``scale_roi_features(roi, "minmax")`` flattened to 50,176 values per cell; an IncrementalPCA is fitted on
    every cell in blocks of ``block`` (memory ~block x 50,176 floats, deterministic for a given store) and the cells
    are projected. FVU = 1 − Σ explained_variance_ratio_, the fraction of the map's variance (around the mean cell)
    that k linear components leave unexplained: the quantity the autoencoder's ``fvu`` feature loss measures.
    """
    with CellStore.open(store_path) as store:
        n = len(store)
        if n < k:
            raise ValueError(f"{store_path}: {n} cells cannot give {k} principal components")
        blocks = [slice(start, min(start + block, n)) for start in range(0, n, block)]
        if len(blocks) > 1 and blocks[-1].stop - blocks[-1].start < k:  # every partial fit needs >= k rows
            blocks[-2:] = [slice(blocks[-2].start, n)]

        def maps(rows: slice) -> np.ndarray:
            return scale_roi_features(torch.from_numpy(store.roi(rows))).flatten(1).numpy()

        pca = IncrementalPCA(n_components=k)
        for rows in blocks:
            pca.partial_fit(maps(rows))
        codes = np.concatenate([pca.transform(maps(rows)) for rows in blocks]).astype(np.float32)
    return codes, float(1 - pca.explained_variance_ratio_.sum())


def train(store: Path, run_dir: Path, name: str, arguments: str, common: str, epochs: int) -> float:
    command = [sys.executable, str(ROOT / "scripts" / "train_autoencoder.py"), str(store), "--out", str(run_dir),
               "--epochs", str(epochs), "--embedding", f"sweep_{name}", *shlex.split(common), *shlex.split(arguments)]
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    with open(run_dir.parent / f"{name}.log", "w", encoding="utf-8") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for spec in args.run:
        name, _, arguments = spec.partition("=")
        run_dir = args.out / name
        summary_path = run_dir / "summary.json"
        if not summary_path.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            wall = train(args.store, run_dir, name, arguments, args.common, args.epochs)
            records = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
            last = records[-1]
            summary = {"run": name, "arguments": arguments, "wall_s": round(wall, 1),
                       **{key: last.get(key) for key in ("epoch", "cells_seen", "train_seconds", "feature", "image",
                                                        "alignment", "code_std", "code_std_min", "effective_rank",
                                                        "probe_f1_macro", "domain_accuracy")},
                       **rf_scores(args.store, f"sweep_{name}", args.scheme, args.seeds)}
            summary_path.write_text(json.dumps(summary, indent=1), encoding="utf-8")
        rows.append(json.loads(summary_path.read_text()))
        curves[name] = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
        print(rows[-1], flush=True)
    for baseline in args.baselines:
        rows.append({"run": baseline, **rf_scores(args.store, baseline, args.scheme, args.seeds)})
    for k in args.pca:
        started = time.perf_counter()
        codes, fvu = pca_codes(args.store, k)
        rows.append({"run": f"pca{k}", "feature": round(fvu, 4), "wall_s": round(time.perf_counter() - started, 1),
                     **rf_scores(args.store, codes, args.scheme, args.seeds)})
    table = pd.DataFrame(rows).round(4)
    (args.out / "sweep.md").write_text(table.to_markdown(index=False) + "\n", encoding="utf-8")
    if curves:
        plot_learning_curves(curves, args.out / "curves.png")
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
