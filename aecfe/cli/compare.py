"""Every method on the same domains, splits and seeds, side by side, with what each costs: one command, one report.

Usage (installed as ``aecfe-compare``; ``scripts/benchmark.py``, its former name, still works)::

    python scripts/compare.py --out runs/compare                           # ../shared/data/cls if present
    python scripts/compare.py --domains-root data/cls --detector-checkpoint detector.pt \\
        --cnn-weights mobilenet_v2.pth --dg-weights mobilenet_v2.pth --seeds 0 1 2 --out runs/compare
    python scripts/compare.py --synthetic --quick --out runs/compare-synthetic

Domains: ``--domains-root`` (``<root>/<domain>/<class>/<image>``); default ``../shared/data/cls`` beside the
project when it exists (then ``--detector-checkpoint`` is needed: ``scripts/train_detector.py`` makes one), else
the synthetic labs with a detector trained on synthetic fields. Methods (:mod:`aecfe.comparison.plan`):
ResNet-RF, R-CNN-RF, AE-RF, ND-AE-DA, AAE-DA, AE-CFE (mmd), AE-CFE-kMMD, each with the ``--head`` heads, and
the deep baselines ERM, DANN, CORAL, Mixup, SelfReg, BoDA, SADA, FewShot (k = ``--few-shot-k``) and Oracle,
each on the whole images and on the detector's crops (``--dg-inputs``; ``ERM`` and ``ERM (crop)`` side by side);
both protocols (train on one / test on all, leave one domain out), mean ± std over ``--seeds``.

Each step runs in its own process (wall time and peak memory recorded) and is never recomputed once finished:
run the same command again after an interruption and it continues; ``--report-only`` rewrites the report.
Written under ``--out``: ``report/report.md`` (tables, verdict, confusion matrices of the best and worst
method, UMAPs before and after alignment, reconstruction grids, cost table) with its CSVs and PNGs;
``methods/<method>/<head>/`` every table of every method; ``steps/`` each step's log and cost record.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path

from aecfe.comparison.plan import (DG_INPUTS, DG_METHODS, FEATURE_METHODS, FOLD_METHODS, ComparisonConfig,
                                   build_steps, needs_store)
from aecfe.comparison.steps import StepRecord, run_steps

logger = logging.getLogger(__name__)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cls"
"""``../shared/data/cls`` beside the project: the default domains when it exists."""

QUICK = {"seeds": [0], "ae_epochs": 2, "detector_seconds": 60, "dg_steps": 20, "dg_image_size": 32,
         "dg_backbone": "tiny", "cnn_backbone": "tiny", "few_shot_k": [2], "synthetic_n": 24, "heads": ["rf", "linear"]}
"""``--quick``: a smoke-sized run (seconds per step), to check the whole chain."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    data = parser.add_argument_group("domains")
    data.add_argument("--domains-root", type=Path, help=f"class-folder domains (default: {SHARED_DATA} if present)")
    data.add_argument("--synthetic", action="store_true", help="the synthetic labs, even when real data exists")
    data.add_argument("--synthetic-n", type=int, default=60, help="single-cell images per synthetic lab")
    data.add_argument("--detector-checkpoint", type=Path, help="trained detector (needed for real domains)")
    data.add_argument("--detector-seconds", type=float, default=600, help="training time of the synthetic detector")
    data.add_argument("--scheme", default="five", help="label scheme of every evaluation (aecfe.taxonomy)")
    methods = parser.add_argument_group("methods")
    methods.add_argument("--methods", nargs="+", default=[*FEATURE_METHODS, *FOLD_METHODS, *DG_METHODS],
                         choices=[*FEATURE_METHODS, *FOLD_METHODS, *DG_METHODS])
    methods.add_argument("--head", nargs="+", default=["rf", "xgboost", "linear"], dest="heads")
    methods.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    methods.add_argument("--ae-epochs", type=int, help="autoencoder epochs (default: the recipe's)")
    methods.add_argument("--ae-max-cells", type=int, help="seeded subset of cells for autoencoder training")
    methods.add_argument("--cnn-backbone", default="mobilenet_v2")
    methods.add_argument("--cnn-weights", help="ResNet-RF weights: name or local file (default: random init)")
    methods.add_argument("--dg-backbone", default="mobilenet_v2")
    methods.add_argument("--dg-weights", help="deep baselines' weights: name or local file (default: from scratch)")
    methods.add_argument("--dg-image-size", type=int, default=96)
    methods.add_argument("--dg-steps", type=int, default=300)
    methods.add_argument("--dg-protocols", nargs="+", choices=["matrix", "lodo"], default=["matrix", "lodo"],
                         help="protocols of the deep baselines (each trains its own models)")
    methods.add_argument("--few-shot-k", nargs="+", type=int, default=[5, 10, 20])
    methods.add_argument("--dg-inputs", nargs="+", choices=list(DG_INPUTS), default=list(DG_INPUTS),
                         help="the deep baselines' inputs: whole images, the detector's crops of the store")
    methods.add_argument("--dg-seeds", nargs="+", type=int, help="seeds of the deep baselines (default: --seeds)")
    methods.add_argument("--extract-options", type=shlex.split, default=[], metavar="'ARGS'",
                         help="extra arguments of extract_features, one quoted string (e.g. '--min-size 400')")
    methods.add_argument("--ae-options", type=shlex.split, default=[], metavar="'ARGS'",
                         help="extra arguments of train_autoencoder (e.g. '--batch-size 32')")
    methods.add_argument("--dg-options", type=shlex.split, default=[], metavar="'ARGS'",
                         help="extra arguments of train_dg (e.g. '--batch-size 8 --lr 1e-4')")
    run = parser.add_argument_group("run")
    run.add_argument("--quick", action="store_true", help="smoke-sized run: " + ", ".join(f"{k}={v}"
                                                                                          for k, v in QUICK.items()))
    run.add_argument("--stop-on-failure", action="store_true", help="stop at the first failing step")
    run.add_argument("--report-only", action="store_true", help="only rewrite the report from finished steps")
    run.add_argument("--no-progress", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> ComparisonConfig:
    """The :class:`ComparisonConfig` of the command line (``--quick`` overrides the sizes)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(ComparisonConfig)
              if field.name not in ("out", "domains_root")}  # every other field is an option of the same name
    if args.quick:
        values.update(QUICK)
    root = args.domains_root
    if root is None and not args.synthetic and SHARED_DATA.is_dir():
        root = SHARED_DATA
    if root is not None and values["detector_checkpoint"] is None and needs_store(values["methods"],
                                                                                  values["dg_inputs"]):
        raise SystemExit(f"{root}: real domains need --detector-checkpoint (scripts/train_detector.py), or "
                         "choose --synthetic, or --methods without the feature methods and --dg-inputs image")
    return ComparisonConfig(out=args.out, domains_root=root, **values)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = config_from_args(args)
    steps = build_steps(config)
    logger.info("domains: %s; %d steps; output %s", config.data_root, len(steps), config.out)
    records = run_steps(steps if not args.report_only else [], config.out / "steps",
                        keep_going=not args.stop_on_failure, progress=not args.no_progress)
    if args.report_only:
        finished = {p.stem: StepRecord.load(p) for p in (config.out / "steps").glob("*.json")}
        records = {step.name: finished[step.name] for step in steps if step.name in finished}
    # pandas & co. only now: the steps' parent stays small
    from aecfe.comparison.report import report_figures, write_report

    command = shlex.join(["python", "scripts/compare.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_report(config.out / "report", config.out / "methods", records,
                        title="Every method, side by side", command=command, figures=report_figures(config))
    print(path.read_text(encoding="utf-8"))
    failed = [step.name for step in steps if step.name not in records]
    if failed and not args.report_only:
        logger.warning("steps not finished: %s (see %s)", ", ".join(failed), config.out / "steps")
        return 1
    return 0
