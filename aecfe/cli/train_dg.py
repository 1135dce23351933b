"""Train and evaluate the deep domain-generalization baselines on folder-per-class image domains, in the same
cross-domain protocols, tables and figures as the embedding heads (:mod:`aecfe.cli.evaluate_cross_domain`).

Usage::

    aecfe-train-dg --domains-root data/cls --scheme five --algorithm all --protocol lodo \\
        --backbone mobilenet_v2 --weights mobilenet_v2-b0353104.pth --image-size 96 --steps 300 \\
        --seeds 0 --few-shot-k 5,10,20 --out runs/dg
    aecfe-train-dg --synthetic --algorithm ERM CORAL --backbone tiny --image-size 32 --steps 20 --out runs/demo

Data: ``--domain NAME=DIR`` (repeatable; DIR holds ``<class>/<image>`` folders), ``--domains-root DIR`` (each
subfolder a domain) or ``--synthetic`` (the labs of :func:`aecfe.synthetic.default_domains` written to a
temporary folder). Labels are the canonical classes of each domain's class map (:mod:`aecfe.taxonomy`), or
``--scheme``'s (labels it drops are left out). Images are read once and kept in memory resized to
``--preload-size`` pixels (default: ``--image-size``; 0 reads the files at every access). ``--store CELLS.h5``
instead: the detector's crops of the store's labelled cells (:func:`aecfe.cell_inputs.load_cell_crops`: the
heads' cells, labels (canonical, then ``--scheme``) and split groups; crop augmentations,
:mod:`classifiers.dg.transforms`).

Algorithms (``--algorithm``, or ``all``): the DG algorithms run as :class:`~classifiers.dg.DGClassifier` heads
of :func:`aecfe.evaluation.evaluate_cross_domain` (same splits, metrics and tables); ``Oracle`` always runs the
``matrix`` protocol (its diagonal: trained and scored in the same domain); ``CRT`` trains a BoDA first (shared
with the BoDA run of the same settings); ``FewShot`` runs the few-shot workflow
(:func:`classifiers.dg.few_shot_workflow`) leave-one-domain-out for every ``--few-shot-k``: heads
``FewShot_k0`` (the source model, scored on the whole held-out domain) and ``FewShot_k<k>`` (fine-tuned on k
labelled target images per class, scored on the rest).

Hyper-parameters: the defaults of :mod:`classifiers.dg.hparams`; ``--backbone``, ``--weights``, ``--image-size``,
``--lr``, ``--batch-size`` (per domain: the domain-balanced algorithms) and ``--steps`` apply to every
algorithm; with ``--steps`` the schedule positions keep their
fraction of the reference run (SADA's ``stage1_steps``, BoDA's ``boda_start_step``, never before its first
centroid pass at ``feat_update_freq``) and ``checkpoint_every`` becomes ``--checkpoint-every`` (default a tenth
of the run); ``--hparam ALGO.KEY=VALUE`` sets anything (``FewShotFinetune.epochs=20``) last.

Written under ``--out``: per head ``<head>/`` with the tables of
:meth:`aecfe.evaluation.CrossDomainResult.to_files` (CSV + ``report.md``, per-class reports, confusion counts)
and ``<head>/confusion/*.png``; ``summary.md`` / ``summary_<metric>.csv`` (one row per head: the
leave-one-domain-out F1-macro / F1-micro per held-out domain and their mean; the Oracle row is its same-domain
score); ``runs/`` with every training's checkpoints and ``log.jsonl`` (a finished training is loaded, not
recomputed, when the command runs again); ``train_dg.log``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from aecfe.cli.evaluate_cross_domain import write_head_files
from aecfe.errors import AecfeError, InputError
from aecfe.evaluation import (PROTOCOLS, VARIANTS, CrossDomainResult, Predictions, evaluate_cross_domain,
                              score_predictions)

logger = logging.getLogger(__name__)

DG_ALGORITHMS = ("ERM", "DANN", "CORAL", "Mixup", "SelfReg", "BoDA", "CRT", "SADA", "FewShot", "Oracle")
"""``--algorithm`` choices (``all`` = every one, in this order)."""
SCHEDULE_KEYS = ("stage1_steps", "boda_start_step")
"""Step positions that keep their fraction of the run when ``--steps`` changes its length."""
HEADLINE_METRICS = ("f1_macro", "f1_micro")


# ---- data --------------------------------------------------------------------------------------------------------

def scan_images(domain_dirs: Sequence[str] = (), domains_root: str | Path | None = None):
    """Image records (:class:`aecfe.io.ImageRecord`) of ``NAME=DIR`` items or of every subfolder of a root."""
    from aecfe.io import scan_class_folders, scan_domains

    if bool(domain_dirs) == (domains_root is not None):
        raise InputError("give the domains with --domain NAME=DIR (repeatable), --domains-root DIR or --synthetic")
    if domains_root is not None:
        return scan_domains(domains_root)
    records = []
    for item in domain_dirs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"--domain {item!r}: expected NAME=DIR")
        records += scan_class_folders(folder, domain=name)
    return records


def labels_in_scheme(records, scheme: str) -> np.ndarray:
    """(N,) labels of ``records`` in ``scheme`` (None where it drops them): canonical, or each record's class map
    into the scheme."""
    from aecfe.taxonomy import CANONICAL, load_taxonomy

    if scheme == CANONICAL:
        return np.array([r.canonical for r in records], dtype=object)
    labels = np.empty(len(records), dtype=object)
    datasets = np.array([r.dataset for r in records])
    originals = np.array([r.label for r in records], dtype=object)
    for dataset in np.unique(datasets):
        rows = datasets == dataset
        labels[rows] = load_taxonomy(str(dataset), scheme).map(originals[rows])
    return labels


def preload(paths: Sequence[Path], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8: every image read (:func:`aecfe.io.read_image`) and resized (bilinear, PIL)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from aecfe.io import read_image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=f"reading images at {size} px", unit="image")):
        out[i] = np.asarray(Image.fromarray(read_image(path)).resize((size, size), Image.BILINEAR))
    return out


def load_dataset(records, scheme: str, preload_size: int):
    """(:class:`~classifiers.dg.ImageDataset`, labels (N,) str, domains (N,) str) of the records the scheme
    keeps."""
    from classifiers.dg import ImageDataset

    labels = labels_in_scheme(records, scheme)
    keep = np.array([label is not None for label in labels], dtype=bool)
    if not keep.all():
        logger.info("scheme %r drops %d of %d images", scheme, int((~keep).sum()), len(keep))
    records = [r for r, k in zip(records, keep) if k]
    if not records:
        raise InputError(f"no images left under scheme {scheme!r}")
    labels = labels[keep].astype(str)
    domains = np.array([r.domain for r in records])
    paths = [r.path for r in records]
    images = preload(paths, preload_size) if preload_size > 0 else [str(p) for p in paths]
    counts = pd.crosstab(pd.Series(labels, name="class"), pd.Series(domains, name="domain"))
    logger.info("images per class and domain:\n%s", counts.to_string())
    return ImageDataset(images, labels, domains), labels, domains


def synthetic_root(folder: Path, n_per_domain: int, size: int, seed: int) -> Path:
    """The synthetic labs written as class folders under ``folder``."""
    from aecfe.synthetic import default_domains
    from aecfe.synthetic.writers import write_class_folders

    return write_class_folders(folder, default_domains(), n_per_domain, seed=seed, size=size)


# ---- hyper-parameters --------------------------------------------------------------------------------------------

def parse_hparams(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["BoDA.feat_update_freq=50", ...]`` -> ``{"BoDA": {"feat_update_freq": 50}}`` (values read as YAML)."""
    from classifiers.dg.hparams import ALGORITHM_DEFAULTS, get_hparams

    params: dict[str, dict[str, Any]] = {}
    for item in items:
        name, dot, rest = item.partition(".")
        key, equals, text = rest.partition("=")
        if not dot or not equals or not key:
            raise InputError(f"--hparam {item!r}: expected ALGO.KEY=VALUE, e.g. BoDA.feat_update_freq=50")
        if name not in ALGORITHM_DEFAULTS:
            raise InputError(f"--hparam {item!r}: unknown algorithm {name!r}; known: "
                             f"{', '.join(sorted(ALGORITHM_DEFAULTS))}")
        value = yaml.safe_load(text)
        params.setdefault(name, {})[key] = tuple(value) if isinstance(value, list) else value
        get_hparams(name, params[name])  # unknown key -> InputError now, not after hours of training
    return params


def algorithm_hparams(name: str, common: dict[str, Any], steps: int | None, checkpoint_every: int | None,
                      explicit: dict[str, Any]) -> dict[str, Any]:
    """The overrides of algorithm ``name``: ``common`` (backbone, weights, image size, learning rate (DANN: both
    optimisers), batch size (domain-balanced algorithms only: it is per domain), the length
    (``steps``, with ``epochs`` off) and the schedule scaled to it (module docstring), then ``explicit``."""
    from classifiers.dg.hparams import get_hparams

    defaults = get_hparams(name)
    overrides = {key: value for key, value in common.items() if value is not None and key in defaults}
    if not defaults["domain_balanced"]:
        overrides.pop("batch_size", None)  # --batch-size is per domain; pooled batches keep their default
    if "lr" in overrides:
        overrides.update({key: overrides["lr"] for key in ("lr_d", "lr_g") if key in defaults})
    if overrides.get("backbone") == "tiny" and defaults["include_top"]:
        overrides["include_top"] = False  # the test CNN has no ImageNet top
    if steps is not None:
        overrides.update(steps=steps, epochs=None)
        for key in SCHEDULE_KEYS:
            if key in defaults:
                overrides[key] = max(1, round(defaults[key] * steps / defaults["steps"]))
        if "boda_start_step" in overrides:
            frequency = explicit.get("feat_update_freq", defaults["feat_update_freq"])
            overrides["boda_start_step"] = max(overrides["boda_start_step"], frequency)
        overrides["checkpoint_every"] = checkpoint_every or max(1, math.ceil(steps / 10))
    elif checkpoint_every is not None:
        overrides["checkpoint_every"] = checkpoint_every
    overrides.update(explicit)
    return overrides


# ---- runs --------------------------------------------------------------------------------------------------------

def dg_head(algorithm: str):
    """A factory of :class:`~classifiers.dg.DGClassifier` for ``algorithm``, named after it (the ``head`` column
    of the tables)."""
    from classifiers.dg import DGClassifier

    def make(**params) -> DGClassifier:
        return DGClassifier(algorithm=algorithm, **params)

    make.__name__ = algorithm
    return make


def run_dg_algorithm(algorithm: str, data, labels, domains, hparams: dict[str, Any], out_dir: Path, *,
                     seeds: Sequence[int], protocols: Sequence[str], lodo_variants: Sequence[str],
                     holdout_fraction: float, stage1_hparams: dict[str, Any] | None = None) -> CrossDomainResult:
    """One DG algorithm through :func:`aecfe.evaluation.evaluate_cross_domain`; trainings under ``out_dir/runs``."""
    params = {"hparams": hparams, "holdout_fraction": holdout_fraction, "out_dir": out_dir / "runs",
              "progress": True}
    if algorithm == "CRT":
        params["stage1_hparams"] = stage1_hparams
    if algorithm == "Oracle":
        protocols = ["matrix"]
    from classifiers.dg.crops import dataset_groups

    return evaluate_cross_domain(data, labels, domains, head=dg_head(algorithm), head_params=params, seeds=seeds,
                                 protocols=protocols, lodo_variants=lodo_variants, progress=True,
                                 groups=dataset_groups(data))


def run_few_shot(data, domains, shots: Sequence[int], out_dir: Path, *, seeds: Sequence[int],
                 source_hparams: dict[str, Any], finetune_hparams: dict[str, Any], trainable: str,
                 degrade_domains: Sequence[str]) -> dict[str, CrossDomainResult]:
    """The few-shot workflow leave-one-domain-out for every seed, held-out domain and k in ``shots``: results of
    heads ``FewShot_k0`` (source model on the whole held-out domain) and ``FewShot_k<k>``."""
    from torch.utils.data import DataLoader

    from classifiers.dg import TrainConfig, eval_transform, few_shot_workflow, get_hparams, predict_dataset

    names = list(data.domain_names)
    classes = np.asarray(data.classes, dtype=object)
    labels = classes[data.targets]
    settings = {"source": get_hparams("FewShot", source_hparams), "finetune": get_hparams("FewShotFinetune",
                finetune_hparams), "trainable": trainable, "degrade": sorted(degrade_domains)}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()
                                 + np.ascontiguousarray(data.targets).tobytes()).hexdigest()[:12]
    size = settings["source"]["image_size"]
    predictions: dict[int, list[Predictions]] = {0: [], **{k: [] for k in shots}}
    for seed in seeds:
        for target in names:
            sources = [d for d in names if d != target]
            source_ids = [names.index(d) for d in sources]
            target_index = np.flatnonzero(data.domain_ids == names.index(target))
            n_source = int(np.isin(data.domain_ids, source_ids).sum())
            seen = np.unique(data.targets[np.isin(data.domain_ids, source_ids)])
            run_dir = out_dir / "runs" / f"FewShot_seed{seed}_{target}-heldout_{fingerprint}"
            source = None
            for k in shots:
                logger.info("few-shot, seed %d: %s -> %s, %d shots per class", seed, "+".join(sources), target, k)
                result = few_shot_workflow(data, sources, target, shots_per_class=k, trainable=trainable,
                                           degrade_domains=degrade_domains, source_hparams=source_hparams,
                                           finetune_hparams=finetune_hparams, seed=seed,
                                           config=TrainConfig(out_dir=run_dir / f"k{k}", progress=True),
                                           source=source)
                source = result.source
                train_classes = np.union1d(seen, data.targets[result.finetune_indices])
                predictions[k].append(Predictions(
                    seed, "lodo", "whole_domain", "+".join(sources), target, f"all_but_{k}_shots_per_class",
                    result.test_indices, classes[result.y_pred], classes[train_classes],
                    n_source + len(result.finetune_indices)))
            loader = DataLoader(data.subset(target_index, transform=eval_transform("fewshot", size)),
                                batch_size=64)
            _, y_pred = predict_dataset(source, loader)
            predictions[0].append(Predictions(seed, "lodo", "whole_domain", "+".join(sources), target, "all",
                                              target_index, classes[y_pred], classes[seen], n_source))
    config = {"source_hparams": source_hparams, "finetune_hparams": finetune_hparams, "trainable": trainable}
    return {f"FewShot_k{k}": score_predictions(rows, labels, domains, f"FewShot_k{k}", {**config, "shots": k})
            for k, rows in predictions.items()}


# ---- reports -----------------------------------------------------------------------------------------------------

def headline_tables(results: dict[str, CrossDomainResult], lodo_variant: str = "whole_domain"
                    ) -> dict[str, pd.DataFrame]:
    """Per metric of :data:`HEADLINE_METRICS`: one row per head, columns = held-out domain and ``mean``
    (``"mean ± std"`` over seeds, in %): the leave-one-domain-out score, or for Oracle its same-domain score."""
    tables = {}
    for metric in HEADLINE_METRICS:
        rows = []
        for head, result in results.items():
            if head == "Oracle":
                row = result.in_domain_summary(metric)
            elif ((result.scores["protocol"] == "lodo") & (result.scores["variant"] == lodo_variant)).any():
                row = result.summary(metric, "lodo", lodo_variant)
            else:
                continue
            rows.append(row.set_axis([head]))
        if rows:
            table = pd.concat(rows)
            table.index.name, table.columns.name = "method", "held out"
            tables[metric] = table
    return tables


def write_summary(results: dict[str, CrossDomainResult], out_dir: Path, counts: pd.DataFrame, lodo_variant: str,
                  command: str) -> Path:
    """The headline tables of every head: ``summary.md`` and ``summary_<metric>.csv``."""
    tables = headline_tables(results, lodo_variant)
    lines = ["# Deep domain-generalization baselines", "", f"Command: `{command}`", "",
             "Images per class and domain:", "", counts.to_markdown(), "",
             (f"Leave-one-domain-out ({lodo_variant}); Oracle: trained and scored in the held-out domain itself "
              "(its 80/20 split). Mean ± std over seeds, in %; each head's folder has every table (report.md)."), ""]
    for metric, table in tables.items():
        table.to_csv(out_dir / f"summary_{metric}.csv")
        lines += [f"## {metric}", "", table.to_markdown(), ""]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---- command -----------------------------------------------------------------------------------------------------

def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from classifiers.dg import BACKBONES

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
    data.add_argument("--preload-size", type=int, help="keep the images in memory at this side (default: "
                                                       "--image-size; 0: read the files at every access)")
    run = parser.add_argument_group("methods and protocol")
    run.add_argument("--algorithm", nargs="+", default=["ERM"], choices=[*DG_ALGORITHMS, "all"])
    run.add_argument("--protocol", nargs="+", default=["lodo"], choices=list(PROTOCOLS))
    run.add_argument("--lodo-variant", default="whole_domain", choices=list(VARIANTS["lodo"]),
                     help="whole_domain: train on the other domains, score the whole held-out one; domainbed: "
                          "their 80%% parts (SADA/BoDA tables)")
    run.add_argument("--seeds", type=_int_list, default=[0], help="split, training and few-shot seeds, e.g. 0,1,2")
    run.add_argument("--holdout-fraction", type=float, default=0.2,
                     help="validation part of each training domain (SWAD, logs); 0: none")
    run.add_argument("--few-shot-k", type=_int_list, default=[5, 10, 20], help="labelled target images per class")
    run.add_argument("--few-shot-trainable", default="all", choices=["all", "head"])
    run.add_argument("--degrade-domain", action="append", default=[], metavar="NAME",
                     help="few-shot: the high-quality source whose images get the resolution/zoom degradation")
    hp = parser.add_argument_group("hyper-parameters (default: classifiers.dg.hparams)")
    hp.add_argument("--backbone", choices=list(BACKBONES))
    hp.add_argument("--weights", help="torchvision weight name (e.g. DEFAULT) or a local state-dict file")
    hp.add_argument("--image-size", type=int)
    hp.add_argument("--batch-size", type=int, help="per domain, for the domain-balanced algorithms (FewShot keeps "
                                                   "its pooled batch)")
    hp.add_argument("--lr", type=float, help="Adam learning rate of every algorithm (DANN: both optimisers; "
                                             "few-shot fine-tuning: set FewShotFinetune.lr)")
    hp.add_argument("--steps", type=int, help="training steps (FewShot source training too)")
    hp.add_argument("--checkpoint-every", type=int, help="steps between validations/checkpoints/SWAD segments")
    hp.add_argument("--hparam", nargs="*", default=[], metavar="ALGO.KEY=VALUE",
                    help="any hyper-parameter, e.g. BoDA.feat_update_freq=50 FewShotFinetune.epochs=20")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, required=True, help="output folder (re-running resumes)")
    out.add_argument("--threads", type=int, help="torch intra-op threads")
    out.add_argument("--no-confusion-png", action="store_true")
    out.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _setup_logging(out_dir: Path, level: str) -> logging.Handler:
    """Console logging (unless the root logger has handlers already) and ``out_dir/train_dg.log`` (appended);
    returns the file handler, to remove when the command ends."""
    out_dir.mkdir(parents=True, exist_ok=True)
    form = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=form)
    handler = logging.FileHandler(out_dir / "train_dg.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(form))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def run_all(args: argparse.Namespace, algorithms: Sequence[str], records, command: str) -> Path:
    """Every algorithm of the command on ``records``; reports rewritten after each one. Returns summary.md."""
    from classifiers.dg import get_hparams

    explicit = parse_hparams(args.hparam)
    common = {"backbone": args.backbone, "weights": args.weights, "image_size": args.image_size,
              "batch_size": args.batch_size, "lr": args.lr}
    size = args.image_size or get_hparams("ERM")["image_size"]
    preload = size if args.preload_size is None else args.preload_size
    if args.store is not None:
        from aecfe.cell_inputs import load_cell_crops
        data, labels, domains = load_cell_crops(args.store, scheme=args.scheme, size=preload or None)
    else:
        data, labels, domains = load_dataset(records, args.scheme, preload)
    counts = pd.crosstab(pd.Series(labels, name="class"), pd.Series(domains, name="domain"))
    results: dict[str, CrossDomainResult] = {}
    summary = write_summary(results, args.out, counts, args.lodo_variant, command)
    for algorithm in algorithms:
        hparams = algorithm_hparams(algorithm, common, args.steps, args.checkpoint_every,
                                    explicit.get(algorithm, {}))
        logger.info("=== %s: hyper-parameter overrides %s", algorithm, hparams)
        if algorithm == "FewShot":
            if "lodo" not in args.protocol or len(data.domain_names) < 2:
                logger.warning("FewShot runs leave-one-domain-out only (protocol lodo, >= 2 domains): skipped")
                continue
            new = run_few_shot(data, domains, args.few_shot_k, args.out, seeds=args.seeds, source_hparams=hparams,
                               finetune_hparams=explicit.get("FewShotFinetune", {}),
                               trainable=args.few_shot_trainable, degrade_domains=args.degrade_domain)
        else:
            stage1 = (algorithm_hparams("BoDA", common, args.steps, args.checkpoint_every,
                                        explicit.get("BoDA", {})) if algorithm == "CRT" else None)
            new = {algorithm: run_dg_algorithm(
                algorithm, data, labels, domains, hparams, args.out, seeds=args.seeds, protocols=args.protocol,
                lodo_variants=[args.lodo_variant], holdout_fraction=args.holdout_fraction, stage1_hparams=stage1)}
        write_head_files(new, args.out, not args.no_confusion_png)
        results.update(new)
        summary = write_summary(results, args.out, counts, args.lodo_variant, command)
        logger.info("=== %s done; summary so far in %s", algorithm, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    import shlex
    import sys

    args = build_parser().parse_args(argv)
    handler = _setup_logging(args.out, args.log_level)
    command = "train_dg " + shlex.join(sys.argv[1:] if argv is None else argv)
    logger.info("%s", command)
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        algorithms = list(DG_ALGORITHMS) if "all" in args.algorithm else list(dict.fromkeys(args.algorithm))
        parse_hparams(args.hparam)  # fail before reading any image
        with tempfile.TemporaryDirectory(prefix="aecfe-synthetic-") as temporary:
            if args.store is not None:
                if args.synthetic or args.domain or args.domains_root:
                    raise InputError("--store replaces --domain / --domains-root / --synthetic")
                records = None
            elif args.synthetic:
                if args.domain or args.domains_root:
                    raise InputError("--synthetic replaces --domain / --domains-root")
                root = synthetic_root(Path(temporary), args.synthetic_n, args.synthetic_size, seed=0)
                records = scan_images(domains_root=root)
            else:
                records = scan_images(args.domain, args.domains_root)
            summary = run_all(args, algorithms, records, command)
        logger.info("headline tables: %s\n%s", summary, summary.read_text(encoding="utf-8"))
    except AecfeError as err:
        logger.error("%s", err)
        return 2
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return 0
