"""Speed of the training step of every deep DG algorithm on CPU: seconds per step and the ratio to ERM.

Usage: ``python benchmarks/dg_speed.py [--backbone resnet18] [--sizes 128 224] [--batch-per-domain 8]
[--domains 3] [--warmup 2] [--steps 5] [--rounds 1] [--threads 2] [--json out.json]``.

Each algorithm is built with the backbone (random weights: the cost does not depend on them) and its reference
hyper-parameters, then ``update`` runs on fixed random minibatches — ``--domains`` minibatches of
``--batch-per-domain`` images (one pooled batch of the same total for the pooled algorithms: FewShot) — for
``--warmup`` untimed steps and ``--steps`` timed ones; the figure is the median step time. What is timed is the
optimisation step alone (forward, losses, backward, Adam; SADA's stain augmentation is inside its step): data
loading and augmentation, validation, checkpoints and BoDA's periodic full pass over the training set (every
``feat_update_freq`` = 120 steps: N/120 extra forward images per step for N training images) are not.
Specifics: BoDA runs with its BoDA term on (``boda_start_step`` 0); SADA is timed in stage 1 (stain views,
contrastive and local alignment losses) and stage 2 (cross-entropy with colour jitter) separately; DANN's unit is
one discriminator + one generator update (divided by two), so its median is not a mix of the two kinds of
step; CRT trains only the linear classifier on a frozen featurizer.

Measured figures, with date and machine, and what they show: ``docs/benchmarks.md``. Firm ratios need a quiet
machine: on a shared one run with ``--rounds 3`` or more and read ``min_ratio_to_ERM`` too.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from typing import Any, Sequence

import pandas as pd
import torch

from classifiers.dg.hparams import ALGORITHM_NAMES

logger = logging.getLogger(__name__)

_STAGES = {"BoDA": {"BoDA": {"boda_start_step": 0}},
           "SADA": {"SADA stage 1": {"stage1_steps": 10**9}, "SADA stage 2": {"stage1_steps": 0}}}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    label: (name, overrides) for name in ALGORITHM_NAMES if name != "Oracle"  # Oracle's step is ERM's
    for label, overrides in _STAGES.get(name, {name: {}}).items()}
"""Benchmarked variants: label -> (algorithm, hyper-parameter overrides on top of its defaults)."""


def minibatches(n_domains: int, batch: int, size: int, n_classes: int, pooled: bool, seed: int = 0):
    """Fixed random minibatches: ``n_domains`` of (x (batch, 3, size, size) in [0, 1], y (batch,)), or one pooled
    minibatch of n_domains·batch images."""
    generator = torch.Generator().manual_seed(seed)
    groups = 1 if pooled else n_domains
    per_group = batch * n_domains // groups
    return [(torch.rand(per_group, 3, size, size, generator=generator),
             torch.randint(0, n_classes, (per_group,), generator=generator)) for _ in range(groups)]


def measure(label: str, backbone: str, size: int, batch_per_domain: int, n_domains: int, warmup: int, steps: int,
            n_classes: int = 5) -> dict[str, Any]:
    """Median seconds of one training step of variant ``label`` (:data:`VARIANTS`); see the module docstring."""
    from classifiers.dg import build_algorithm, get_hparams

    name, extra = VARIANTS[label]
    overrides = {"backbone": backbone, "weights": None, "image_size": size, **extra}
    if get_hparams(name).get("include_top") and backbone == "tiny":
        overrides["include_top"] = False
    hparams = get_hparams(name, overrides)
    pooled = not hparams["domain_balanced"]
    torch.manual_seed(0)
    algorithm = build_algorithm(name, n_classes, 1 if pooled else n_domains, overrides)
    if name == "BoDA":
        algorithm.set_counts(torch.full((n_domains, n_classes), 50.0))
    batches = minibatches(n_domains, batch_per_domain, size, n_classes, pooled)
    cycle = 1 + hparams["d_steps_per_g"] if name == "DANN" else 1
    algorithm.train()
    times = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        for _ in range(cycle):
            algorithm.update(batches)
        if index >= warmup:
            times.append((time.perf_counter() - started) / cycle)
    seconds = statistics.median(times)
    images = batch_per_domain * n_domains
    return {"algorithm": label, "backbone": backbone, "image_size": size, "images_per_step": images,
            "seconds_per_step": seconds, "steps_per_second": 1 / seconds, "images_per_second": images / seconds,
            "timed_steps": steps, "min_seconds": min(times), "max_seconds": max(times)}


def benchmark(labels: Sequence[str], backbone: str, sizes: Sequence[int], batch_per_domain: int, n_domains: int,
              warmup: int, steps: int, rounds: int = 1) -> pd.DataFrame:
    """One row per (image size, variant), with ``ratio_to_ERM`` = seconds per step / ERM's at that size (when
    ERM is among ``labels``). With ``rounds`` > 1 every variant is measured once per round, the variants taking
    turns (so that a change of machine load hits all of them), and the median over rounds is kept
    (``min_seconds`` / ``max_seconds``: over every timed step of every round)."""
    rows = []
    for size in sizes:
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
        for round_index in range(rounds):
            for label in labels:
                row = measure(label, backbone, size, batch_per_domain, n_domains, warmup, steps)
                logger.info("round %d: %s at %d px: %.3f s/step", round_index + 1, label, size,
                            row["seconds_per_step"])
                runs[label].append(row)
        for label, measured in runs.items():
            seconds = statistics.median(r["seconds_per_step"] for r in measured)
            rows.append({**measured[0], "seconds_per_step": seconds, "steps_per_second": 1 / seconds,
                         "images_per_second": measured[0]["images_per_step"] / seconds, "rounds": rounds,
                         "min_seconds": min(r["min_seconds"] for r in measured),
                         "max_seconds": max(r["max_seconds"] for r in measured)})
    return with_ratios(pd.DataFrame(rows))


def with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """``ratio_to_ERM`` (median step time / ERM's at the same image size) and ``min_ratio_to_ERM`` (fastest step /
    ERM's fastest: on a machine shared with other jobs the fastest step is the least disturbed one)."""
    erm = table[table["algorithm"] == "ERM"].set_index("image_size")
    table["ratio_to_ERM"] = table["seconds_per_step"] / table["image_size"].map(erm["seconds_per_step"])
    table["min_ratio_to_ERM"] = table["min_seconds"] / table["image_size"].map(erm["min_seconds"])
    return table


def markdown(table: pd.DataFrame) -> str:
    """Per image size: algorithm, s/step, steps/s, images/s, ratio to ERM, fastest step and its ratio to ERM's."""
    lines = []
    for size, rows in table.groupby("image_size", sort=False):
        first = rows.iloc[0]
        lines += [f"## {first['backbone']}, {size} px, {first['images_per_step']} images per step", "",
                  rows[["algorithm", "seconds_per_step", "steps_per_second", "images_per_second", "ratio_to_ERM",
                        "min_seconds", "min_ratio_to_ERM"]]
                  .to_markdown(index=False, floatfmt=".3g"), ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from classifiers.dg import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
                        help=f"variants among {list(VARIANTS)}")
    parser.add_argument("--backbone", default="resnet18", choices=list(BACKBONES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 224], help="image sides in pixels")
    parser.add_argument("--batch-per-domain", type=int, default=8)
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    parser.add_argument("--rounds", type=int, default=1, help="measure every variant this many times, taking "
                                                              "turns; report the median")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if min(args.batch_per_domain, args.domains, args.steps, args.rounds) < 1 or args.warmup < 0:
        logger.error("--batch-per-domain, --domains, --steps and --rounds must be >= 1 and --warmup >= 0")
        return 2
    torch.set_num_threads(args.threads)
    table = benchmark(args.algorithms, args.backbone, args.sizes, args.batch_per_domain, args.domains,
                      args.warmup, args.steps, args.rounds)
    print(f"Training step on CPU ({args.threads} threads, torch {torch.__version__}); median of {args.steps} "
          f"steps after {args.warmup} warm-up steps, median over {args.rounds} round(s) taking turns; load "
          f"average at the end {os.getloadavg()[0]:.1f}.\n")
    print(markdown(table))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(table.to_dict(orient="records"), out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
