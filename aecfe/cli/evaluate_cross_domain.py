"""Cross-domain evaluation of classifier heads on the features of a cell store.

Usage::

    aecfe-evaluate-cross-domain cells.h5 --features ae_mmd --head rf xgboost linear --seeds 0 1 2 3 4 \\
        --protocol matrix lodo --out results/

``--features`` is an embedding name of the store, or ``roi`` / ``crops`` for the flattened RoI features /
crops (these two words always mean the store's stages). Cells without a label are left out (the count is
logged). ``--scheme`` relabels the labels first (:mod:`aecfe.taxonomy`): each domain's labels go through the
class map named like the domain (e.g. ``matek19``, ``pbc_barcelona``), or through ``--label-dataset`` for every
domain (``canonical`` when the store already holds canonical class names); labels the scheme drops are left
out (count logged).

Cells are grouped by the content hash of their image (:meth:`aecfe.store.CellStore.cell_groups`): the cells of
one image and byte-identical copies of it stay on one side of each domain's split, and copies across domains
are counted in the report (:mod:`aecfe.evaluation`, "Groups"). ``--no-groups`` splits cell by cell.

Written under ``--out``: per head ``<head>/`` with the tables of
:meth:`aecfe.evaluation.CrossDomainResult.to_files` (CSV + ``report.md``) and
``<head>/confusion/<protocol>_<variant>/<train>__<test>.png``; ``summary.md`` with the headline tables of
every head; ``umap_by_domain.png`` and ``umap_by_class.png`` of the features.
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import yaml

from aecfe.cell_inputs import labelled_cells
from aecfe.cli import open_fraction
from aecfe.errors import AecfeError, InputError
from aecfe.evaluation import PROTOCOLS, VARIANTS, CrossDomainResult, evaluate_cross_domain
from aecfe.taxonomy import relabel

logger = logging.getLogger(__name__)

STAGES = ("roi", "crops")
"""``--features`` values that name the store's per-cell stages instead of an embedding."""


def load_features(store, features: str | None, *, with_groups: bool = False) -> tuple[np.ndarray, ...]:
    """``(X (N, D) float32, y (N,) object, domains (N,) str)`` of the labelled cells of an open store, and
    with ``with_groups`` also ``groups`` (N,): each cell's :meth:`~aecfe.store.CellStore.cell_groups` key.

    ``features``: an embedding name, ``"roi"`` / ``"crops"`` (flattened), or None for the store's only
    embedding. Cells whose label is missing are left out (logged).
    """
    labelled, labels, domains = labelled_cells(store)  # the deep baselines' crops: the same cells
    if features is None:
        names = store.embedding_names()
        if len(names) != 1:
            raise InputError(f"{store.path}: choose the features with --features: embeddings {names} or "
                             f"{' / '.join(STAGES)}")
        features = names[0]
    if features == "roi":
        X = store.roi(labelled)
    elif features == "crops":
        X = store.crops(labelled)
    else:
        X = store.embedding(features, labelled)
    X = np.asarray(X, dtype=np.float32).reshape(len(labelled), -1)
    logger.info("%s: features %r, %d labelled cells x %d dims (%.1f MB)", store.path, features, X.shape[0],
                X.shape[1], X.nbytes / 2**20)
    loaded = X, labels, domains
    return (*loaded, store.cell_groups()[labelled]) if with_groups else loaded


def run_evaluation(X, y, domains, out_dir: str | Path, heads: Sequence[str] = ("rf",),
                   seeds: Iterable[int] = (0, 1, 2), protocols: Iterable[str] = PROTOCOLS,
                   lodo_variants: Iterable[str] = ("whole_domain",), head_params: dict[str, dict] | None = None,
                   test_size: float = 0.2, umap: bool = True, umap_max_points: int = 5000,
                   confusion_png: bool = True, progress: bool = False, groups=None,
                   held_out: Sequence[str] | None = None) -> dict[str, CrossDomainResult]:
    """Evaluate each head on ``(X (N, D), y (N,), domains (N,))`` and write every table and figure.

    Samples with a missing label (None, NaN, "") are left out (logged). ``head_params``: per head name, the
    keyword arguments of that head. ``groups``: optional (N,) group keys kept on one side of each split
    (:func:`aecfe.evaluation.evaluate_cross_domain`); ``held_out``: the LODO folds to run (default all). Returns ``{head: CrossDomainResult}``; files: module
    docstring.
    """
    y, domains = np.asarray(y, dtype=object), np.asarray(domains).astype(str)
    labelled = np.array([not (label is None or label == "" or pd.isna(label)) for label in y], dtype=bool)
    if not labelled.all():
        logger.info("%d of %d samples have no label and are left out", int((~labelled).sum()), len(y))
    X, y, domains = X[labelled], y[labelled].astype(str), domains[labelled]
    groups = None if groups is None else np.asarray(groups)[labelled]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = pd.crosstab(pd.Series(y, name="class"), pd.Series(domains, name="domain"))
    logger.info("samples per class and domain:\n%s", counts.to_string())
    results = {}
    for head in heads:
        result = evaluate_cross_domain(X, y, domains, head=head, seeds=seeds, protocols=protocols,
                                       head_params=(head_params or {}).get(head), test_size=test_size,
                                       lodo_variants=lodo_variants, progress=progress, groups=groups,
                                       held_out=held_out)
        write_head_files({head: result}, out_dir, confusion_png)
        results[head] = result
    summary = out_dir / "summary.md"
    summary.write_text(headline_markdown(results, counts), encoding="utf-8")
    logger.info("headline tables: %s\n%s", summary, summary.read_text(encoding="utf-8"))
    if umap:
        from aecfe.plots import plot_embedding

        plot_embedding(X, domains, y, out_dir, prefix="umap", max_points=umap_max_points)
    return results


def write_head_files(results: dict[str, CrossDomainResult], out_dir: Path, confusion_png: bool = True) -> None:
    """Each head's tables (``<head>/``, :meth:`~aecfe.evaluation.CrossDomainResult.to_files`) and confusion
    figures (``<head>/confusion/``)."""
    for head, result in results.items():
        result.to_files(out_dir / head)
        if confusion_png:
            write_confusion_pngs(result, out_dir / head / "confusion")


def write_confusion_pngs(result: CrossDomainResult, out_dir: Path) -> list[Path]:
    """One PNG per (protocol, variant, trained on, tested on), counts summed over seeds."""
    from aecfe.plots import plot_confusion_matrix

    seeds = len(result.config["seeds"])
    return [plot_confusion_matrix(counts, out_dir / f"{protocol}_{variant}" / f"{_safe(train)}__{_safe(test)}.png",
                                  title=f"{result.config['head']}, {protocol}/{variant}: {train} -> {test}"
                                        f" ({seeds} seed{'s' * (seeds > 1)})")
            for (protocol, variant, train, test), counts in result.confusion.items()]


def headline_markdown(results: dict[str, CrossDomainResult], counts: pd.DataFrame) -> str:
    """Per head: the matrix (test_split) accuracy and F1-macro, and every LODO F1-macro table."""
    lines = ["# Cross-domain evaluation", "", "Samples per class and domain:", "", counts.to_markdown(), "",
             "Mean ± std over seeds, in %; each head's folder has every table (report.md).", ""]
    for head, result in results.items():
        present = set(zip(result.scores["protocol"], result.scores["variant"]))
        wanted = [("matrix", "test_split", "accuracy"), ("matrix", "test_split", "f1_macro")]
        wanted += [("lodo", variant, "f1_macro") for variant in VARIANTS["lodo"]]
        for protocol, variant, metric in wanted:
            if (protocol, variant) in present:
                lines += [f"## {head}: {protocol} / {variant} / {metric}", "",
                          result.summary(metric, protocol, variant).to_markdown(), ""]
    return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name)


def parse_head_params(items: Sequence[str], heads: Sequence[str], class_weight: str | None,
                      n_jobs: int | None) -> dict[str, dict]:
    """``["rf.n_estimators=50", ...]`` plus --class-weight / --n-jobs -> ``{head: {param: value}}``.

    Values are read as YAML scalars (``50`` int, ``0.1`` float, ``null`` / ``None`` None, text str).
    """
    from classifiers.heads import HEADS

    params: dict[str, dict] = {head: {} for head in heads}
    for head in heads:
        valid = HEADS[head]().get_params()
        if class_weight is not None:
            params[head]["class_weight"] = class_weight
        if n_jobs is not None and "n_jobs" in valid:
            params[head]["n_jobs"] = n_jobs
    for item in items:
        match = re.fullmatch(r"(\w+)\.(\w+)=(.*)", item)
        if not match:
            raise InputError(f"--head-param {item!r}: expected HEAD.PARAM=VALUE, e.g. rf.n_estimators=50")
        head, name, text = match.groups()
        if head not in params:
            raise InputError(f"--head-param {item!r}: head {head!r} is not among --head {list(heads)}")
        params[head][name] = None if text == "None" else yaml.safe_load(text)
    return params


def build_parser() -> argparse.ArgumentParser:
    from classifiers.heads import HEADS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("store", type=Path, help="HDF5 cell store (aecfe.store)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--features", help=f"embedding name, or {' / '.join(STAGES)} (flattened); "
                                           "default: the store's only embedding")
    parser.add_argument("--head", nargs="+", default=["rf"], choices=list(HEADS), help="classifier heads")
    parser.add_argument("--head-param", nargs="*", default=[], metavar="HEAD.PARAM=VALUE",
                        help="head hyper-parameters, e.g. rf.n_estimators=300 xgboost.max_depth=4")
    parser.add_argument("--class-weight", choices=["balanced"], help="class weights for every head")
    parser.add_argument("--n-jobs", type=int, help="threads of the rf and xgboost heads")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split and model seeds")
    parser.add_argument("--protocol", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--lodo-variant", nargs="+", default=["whole_domain"], choices=list(VARIANTS["lodo"]),
                        help="whole_domain: train on all of the other domains, test on all of the held-out one; "
                             "domainbed: their 80%% parts (SADA/BoDA tables)")
    parser.add_argument("--held-out", action="append", metavar="DOMAIN",
                        help="run only these leave-one-domain-out folds (repeatable; default every domain)")
    parser.add_argument("--test-size", type=open_fraction, default=0.2, help="test fraction of each domain's split")
    parser.add_argument("--scheme", help="relabel into this label scheme first (e.g. five, aecfe13)")
    parser.add_argument("--label-dataset", help="with --scheme: class map for every domain's labels "
                                                "(default: the map named like each domain)")
    parser.add_argument("--no-groups", action="store_true",
                        help="split cell by cell instead of keeping each image (and its byte-identical copies) on "
                             "one side of each split")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP figures")
    parser.add_argument("--umap-max-points", type=int, default=5000)
    parser.add_argument("--no-confusion-png", action="store_true", help="skip the confusion-matrix figures")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    from aecfe.store import CellStore

    try:
        head_params = parse_head_params(args.head_param, args.head, args.class_weight, args.n_jobs)
        with CellStore.open(args.store, mode="r") as store:
            X, y, domains, groups = load_features(store, args.features, with_groups=True)
        if args.scheme:
            y = relabel(y, domains, args.scheme, args.label_dataset)
        run_evaluation(X, y, domains, args.out, heads=args.head, seeds=args.seeds, protocols=args.protocol,
                       lodo_variants=args.lodo_variant, head_params=head_params, test_size=args.test_size,
                       umap=not args.no_umap, umap_max_points=args.umap_max_points,
                       confusion_png=not args.no_confusion_png, progress=True,
                       groups=None if args.no_groups else groups, held_out=args.held_out)
    except AecfeError as err:
        logger.error("%s", err)
        return 2
    return 0
