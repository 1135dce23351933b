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

Written under ``--out`` by :func:`aecfe.reporting.run_evaluation`: per head ``<head>/`` (tables, confusion PNGs),
``summary.md`` (headline tables of every head), ``umap_by_domain.png`` and ``umap_by_class.png``. With
``--few-shot-k 5,10,20`` only the few-shot rows run instead (:mod:`aecfe.few_shot`: the k labelled cells per class
of the held-out domain by :func:`aecfe.splits.few_shot_selection`), into ``<head>_k<k>/``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from aecfe.cli import int_list, key_value, open_fraction
from aecfe.errors import AecfeError, InputError
from aecfe.evaluation import PROTOCOLS, VARIANTS
from aecfe.reporting import run_evaluation
from aecfe.store import STAGES, read_features
from aecfe.taxonomy import relabel

logger = logging.getLogger(__name__)


def parse_head_params(items: Sequence[str], heads: Sequence[str], class_weight: str | None,
                      n_jobs: int | None) -> dict[str, dict]:
    """``["rf.n_estimators=50", ...]`` plus --class-weight / --n-jobs -> ``{head: {param: value}}``.

    Each item is read by :func:`aecfe.cli.key_value`, the one KEY=VALUE syntax (``50`` int, ``0.1`` float,
    ``null`` None, text str; ``None`` is read as None too), with KEY = ``HEAD.PARAM``.
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
        key, value = item if isinstance(item, tuple) else _key_value(item)
        head, dot, name = key.partition(".")
        if not dot or not name.isidentifier():
            raise InputError(f"--head-param {key}={value!r}: expected HEAD.PARAM=VALUE, e.g. rf.n_estimators=50")
        if head not in params:
            raise InputError(f"--head-param {key}: head {head!r} is not among --head {list(heads)}")
        params[head][name] = None if value == "None" else value
    return params


def _key_value(item: str) -> tuple[str, object]:
    try:
        return key_value(item)
    except argparse.ArgumentTypeError as error:
        raise InputError(f"--head-param {item!r}: expected HEAD.PARAM=VALUE, e.g. rf.n_estimators=50") from error


def build_parser() -> argparse.ArgumentParser:
    from classifiers.heads import HEADS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("store", type=Path, help="HDF5 cell store (aecfe.store)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--features", help=f"embedding name, or {' / '.join(STAGES)} (flattened); "
                                           "default: the store's only embedding")
    parser.add_argument("--head", nargs="+", default=["rf"], choices=list(HEADS), help="classifier heads")
    parser.add_argument("--head-param", nargs="*", type=key_value, default=[], metavar="HEAD.PARAM=VALUE",
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
    parser.add_argument("--few-shot-k", type=int_list, metavar="K,...",
                        help="instead of the protocols: leave-one-domain-out with k labelled cells per class of the "
                             "held-out domain in each head's training set (aecfe.few_shot), heads <head>_k<k>/")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP figures")
    parser.add_argument("--umap-max-points", type=int, default=5000)
    parser.add_argument("--no-confusion-png", action="store_true", help="skip the confusion-matrix figures")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        head_params = parse_head_params(args.head_param, args.head, args.class_weight, args.n_jobs)
        X, y, domains, groups = read_features(args.store, args.features, with_groups=True)
        if args.scheme:
            y = relabel(y, domains, args.scheme, args.label_dataset)
        if args.few_shot_k:
            from aecfe.few_shot import run_few_shot_rows

            run_few_shot_rows(X, y, domains, None if args.no_groups else groups, args.out, heads=args.head,
                              head_params=head_params, shots=args.few_shot_k, seeds=args.seeds, held_out=args.held_out)
            return 0
        run_evaluation(X, y, domains, args.out, heads=args.head, seeds=args.seeds, protocols=args.protocol,
                       lodo_variants=args.lodo_variant, head_params=head_params, test_size=args.test_size,
                       umap=not args.no_umap, umap_max_points=args.umap_max_points,
                       confusion_png=not args.no_confusion_png, progress=True,
                       groups=None if args.no_groups else groups, held_out=args.held_out)
    except AecfeError as err:
        logger.error("%s", err)
        return 2
    return 0
