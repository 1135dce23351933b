"""Train and evaluate the deep domain-generalization baselines on folder-per-class image domains, in the same
cross-domain protocols, tables and figures as the embedding heads (the library: :mod:`aecfe.dg_baselines`).

Usage::

    aecfe-train-dg --domains-root data/cls --scheme five --algorithm all --protocol lodo \\
        --backbone mobilenet_v2 --weights mobilenet_v2-b0353104.pth --image-size 96 --steps 300 \\
        --seeds 0 --few-shot-k 5,10,20 --out runs/dg
    aecfe-train-dg --synthetic --algorithm ERM CORAL --backbone tiny --image-size 32 --steps 20 --out runs/demo

Data: ``--domain NAME=DIR`` (repeatable; DIR holds ``<class>/<image>`` folders), ``--domains-root DIR`` (each
subfolder a domain) or ``--synthetic`` (the labs of :func:`aecfe.synthetic.default_domains`, in a temporary
folder). Labels: each domain's canonical classes, or ``--scheme``'s (:func:`aecfe.taxonomy.relabel`; dropped
labels are left out). Images are kept in memory at ``--preload-size`` px (default ``--image-size``; 0: none).
``--store CELLS.h5`` instead: the detector's crops of the store's labelled cells
(:func:`aecfe.store.readers.load_cell_crops`: the heads' cells, labels and split groups; crop augmentations).

Algorithms (``--algorithm``, or ``all``) and heads (:mod:`aecfe.dg_baselines`): each DG algorithm in
:func:`aecfe.evaluation.evaluate_cross_domain`; ``Oracle`` its ``matrix`` diagonal; ``CRT`` after a BoDA;
``FewShot`` the few-shot protocol (:mod:`classifiers.dg.fewshot_protocol`) for every ``--few-shot-k``: heads
``FewShot_k0`` (source model, whole held-out domain) and ``FewShot_k<k>`` (fine-tuned on k target images per
class, scored on the rest). Hyper-parameters: :mod:`classifiers.dg.hparams`; the options below apply to every
algorithm, ``--steps`` scales the schedule (:func:`~classifiers.dg.hparams.algorithm_hparams`);
``--hparam ALGO.KEY=VALUE`` (:func:`aecfe.cli.key_value`) sets anything, e.g. ``FewShotFinetune.epochs=20``.

Written under ``--out``: per head ``<head>/`` (:meth:`aecfe.evaluation.CrossDomainResult.to_files` tables,
``confusion/*.png``); ``summary.md`` / ``summary_<metric>.csv`` (one row per head: leave-one-domain-out F1-macro
/ F1-micro per held-out domain and mean; Oracle: same-domain); ``runs/`` (checkpoints, ``log.jsonl``; re-running
loads finished trainings); ``train_dg.log``.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from aecfe.cli import add_device, int_list, key_value, log_to_file
from aecfe.devices import resolve_device
from aecfe.reporting import write_head_files
from aecfe.errors import AecfeError, InputError
from aecfe.evaluation import PROTOCOLS, VARIANTS
from classifiers.dg.hparams import ALGORITHM_NAMES

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from classifiers.dg.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--domain", action="append", default=[], metavar="NAME=DIR",
                      help="a domain: DIR holds <class>/<image> folders (repeatable)")
    data.add_argument("--domains-root", type=Path, help="folder whose subfolders are the domains")
    data.add_argument("--synthetic", action="store_true", help="the synthetic labs (aecfe.synthetic)")
    data.add_argument("--synthetic-n", type=int, default=40, help="images per synthetic lab")
    data.add_argument("--synthetic-size", type=int, default=64, help="side of the synthetic images")
    data.add_argument("--store", type=Path, help="the cell crops of this cell store instead of images")
    data.add_argument("--scheme", default="canonical", help="label scheme (aecfe.taxonomy): canonical, five, ...")
    data.add_argument("--preload-size", type=int, help="images in memory at this side (default --image-size; 0: none)")
    run = parser.add_argument_group("methods and protocol")
    run.add_argument("--algorithm", nargs="+", default=["ERM"], choices=[*ALGORITHM_NAMES, "all"])
    run.add_argument("--protocol", nargs="+", default=["lodo"], choices=list(PROTOCOLS))
    run.add_argument("--lodo-variant", default="whole_domain", choices=list(VARIANTS["lodo"]),
                     help="whole_domain: train on the other domains, score the whole held-out one; domainbed: "
                          "their 80%% parts (SADA/BoDA tables)")
    run.add_argument("--seeds", type=int_list, default=[0], help="split, training and few-shot seeds, e.g. 0,1,2")
    run.add_argument("--holdout-fraction", type=float, default=0.2,
                     help="validation part of each training domain (SWAD, logs); 0: none")
    run.add_argument("--few-shot-k", type=int_list, default=[5, 10, 20], help="labelled target images per class")
    run.add_argument("--few-shot-trainable", default="all", choices=["all", "head"])
    run.add_argument("--degrade-domain", action="append", default=[], metavar="NAME",
                     help="few-shot: the high-quality source whose images get the resolution/zoom degradation")
    hp = parser.add_argument_group("hyper-parameters (default: classifiers.dg.hparams)")
    hp.add_argument("--backbone", choices=list(BACKBONES))
    hp.add_argument("--weights", help="torchvision weight name (e.g. DEFAULT) or a local state-dict file")
    hp.add_argument("--image-size", type=int)
    hp.add_argument("--batch-size", type=int, help="per domain (domain-balanced algorithms; FewShot: pooled)")
    hp.add_argument("--lr", type=float, help="Adam lr of every algorithm (DANN: both; fine-tuning: FewShotFinetune.lr)")
    hp.add_argument("--steps", type=int, help="training steps (FewShot source training too)")
    hp.add_argument("--checkpoint-every", type=int, help="steps between validations/checkpoints/SWAD segments")
    hp.add_argument("--hparam", nargs="*", type=key_value, default=[], metavar="ALGO.KEY=VALUE",
                    help="any hyper-parameter, e.g. BoDA.feat_update_freq=50 FewShotFinetune.epochs=20")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, required=True, help="output folder (re-running resumes)")
    add_device(out)
    out.add_argument("--threads", type=int, help="torch intra-op threads")
    out.add_argument("--no-confusion-png", action="store_true")
    out.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def run(args: argparse.Namespace, command: str) -> Path:
    """The command on parsed arguments; returns summary.md (rewritten after each algorithm)."""
    import torch

    from aecfe import dg_baselines as dg
    from aecfe.store.readers import load_cell_crops
    from classifiers.dg.hparams import get_hparams, split_overrides

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = dg.DGRunSettings(
        algorithms=list(ALGORITHM_NAMES) if "all" in args.algorithm else list(dict.fromkeys(args.algorithm)),
        protocols=args.protocol, lodo_variant=args.lodo_variant, seeds=args.seeds,
        holdout_fraction=args.holdout_fraction, few_shot_k=args.few_shot_k,
        few_shot_trainable=args.few_shot_trainable, degrade_domains=args.degrade_domain,
        common={"backbone": args.backbone, "weights": args.weights, "image_size": args.image_size,
                "batch_size": args.batch_size, "lr": args.lr},
        steps=args.steps, checkpoint_every=args.checkpoint_every,
        overrides=split_overrides(args.hparam),  # fails before reading any image
        device=resolve_device(args.device))
    preload = args.preload_size if args.preload_size is not None else (
        args.image_size or get_hparams("ERM")["image_size"])
    with tempfile.TemporaryDirectory(prefix="aecfe-synthetic-") as temporary:
        if sum(map(bool, (args.synthetic, args.domain or args.domains_root, args.store))) > 1:
            raise InputError("give one of --store, --synthetic, --domain / --domains-root")
        if args.store is not None:
            data, labels, domains = load_cell_crops(args.store, scheme=args.scheme, size=preload or None)
        else:
            records = (dg.scan_synthetic_domains(temporary, args.synthetic_n, args.synthetic_size)
                       if args.synthetic else dg.scan_image_domains(args.domain, args.domains_root))
            data, labels, domains = dg.load_image_domains(records, args.scheme, preload)
        counts = dg.class_domain_counts(labels, domains)
        results = {}
        summary = dg.write_summary(results, args.out, counts, args.lodo_variant, command)
        for new in dg.run_baselines(data, labels, domains, settings, args.out):
            write_head_files(new, args.out, not args.no_confusion_png)
            results.update(new)
            summary = dg.write_summary(results, args.out, counts, args.lodo_variant, command)
            logger.info("=== %s done; summary so far in %s", ", ".join(new), summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "train_dg " + shlex.join(sys.argv[1:] if argv is None else argv)
    with log_to_file(args.out / "train_dg.log", args.log_level):
        logger.info("%s", command)
        try:
            summary = run(args, command)
        except AecfeError as err:
            logger.error("%s", err)
            return 2
        logger.info("headline tables: %s\n%s", summary, summary.read_text(encoding="utf-8"))
    return 0
