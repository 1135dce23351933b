"""Sweep of autoencoder training configurations on one cell store: learning curves, code diagnostics, RF scores.

Usage::

    python benchmarks/autoencoder_sweep.py runs/cells_real.h5 --out runs/sweep --epochs 30 \\
        --run none="--alignment none" mmd_ref="--alignment mmd --beta 5" \\
        mmd_std_b1="--alignment mmd --alignment-option standardize=true --beta 1"

Each ``--run NAME="ARGS"`` trains ``scripts/train_autoencoder.py STORE --out OUT/NAME --embedding sweep_NAME``
with the common ``--common`` arguments plus ARGS (a child process, one after the other: they write into the same
store), then scores the embedding with random forests under the ``five`` label scheme (seeds ``--seeds``): in-lab
F1-macro (the thesis matrix's diagonal, test split) and leave-one-lab-out F1-macro (whole held-out lab). The same is
done for the store's baseline embeddings (``--baselines``, e.g. ``rcnn_roi``). A finished run (its summary in
``OUT/NAME/summary.json``) is not redone. Writes ``OUT/sweep.md`` (one row per run: final code std, effective rank,
linear-probe F1, domain-probe accuracy, training seconds, RF scores) and ``OUT/curves.png`` (all runs' curves).
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

from aecfe.evaluation import evaluate_cross_domain
from aecfe.plots import plot_learning_curves
from aecfe.store import CellStore
from aecfe.taxonomy import relabel

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
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--scheme", default="five")
    return parser


def rf_scores(store_path: Path, embedding: str, scheme: str, seeds: list[int]) -> dict[str, float]:
    """In-lab and leave-one-lab-out RF F1-macro (%) of one embedding, labels relabelled into ``scheme``."""
    with CellStore.open(store_path) as store:
        X, y, domains = store.arrays(embedding, labelled_only=True)
    mapped = relabel(y, domains, scheme, label_dataset="canonical")
    keep = np.array([label is not None for label in mapped])
    result = evaluate_cross_domain(X[keep], mapped[keep].astype(str), domains[keep], head="rf", seeds=seeds)
    scores = result.scores
    matrix = scores[(scores.protocol == "matrix") & (scores.variant == "test_split")]
    same = matrix[matrix.train_domain == matrix.test_domain]
    lodo = scores[(scores.protocol == "lodo") & (scores.variant == "whole_domain")]
    return {"rf_in_lab_f1": 100 * same.f1_macro.mean(), "rf_lodo_f1": 100 * lodo.f1_macro.mean()}


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
    table = pd.DataFrame(rows).round(4)
    (args.out / "sweep.md").write_text(table.to_markdown(index=False) + "\n", encoding="utf-8")
    if curves:
        plot_learning_curves(curves, args.out / "curves.png")
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
