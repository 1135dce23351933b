"""The reporting layer: run the cross-domain evaluation of heads on features and write every table and figure.

Written under ``out_dir`` by :func:`run_evaluation`: per head ``<head>/`` with the tables of
:meth:`aecfe.evaluation.CrossDomainResult.to_files` (CSV + ``report.md``) and
``<head>/confusion/<protocol>_<variant>/<train>__<test>.png`` (:func:`write_head_files`); ``summary.md`` with
the headline tables of every head (:func:`headline_markdown`); ``umap_by_domain.png`` and ``umap_by_class.png``
of the features. :func:`comparison_table` puts several (features, head) results side by side (the demo's table).

Example::

    X, y, domains, groups = read_features("cells.h5", "ae_mmd", with_groups=True)   # aecfe.store
    results = run_evaluation(X, y, domains, "results/", heads=("rf", "linear"), groups=groups)
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from aecfe.evaluation import PROTOCOLS, VARIANTS, CrossDomainResult, evaluate_cross_domain, format_mean_std

logger = logging.getLogger(__name__)


def run_evaluation(X, y, domains, out_dir: str | Path, heads: Sequence[str] = ("rf",),
                   seeds: Iterable[int] = (0, 1, 2), protocols: Iterable[str] = PROTOCOLS,
                   lodo_variants: Iterable[str] = ("whole_domain",), head_params: dict[str, dict] | None = None,
                   test_size: float = 0.2, umap: bool = True, umap_max_points: int = 5000,
                   confusion_png: bool = True, progress: bool = False, groups=None,
                   held_out: Sequence[str] | None = None) -> dict[str, CrossDomainResult]:
    """Evaluate each head on ``(X (N, D), y (N,), domains (N,))`` and write every table and figure.

    Samples with a missing label (None, NaN, "") are left out (logged). ``head_params``: per head name, the
    keyword arguments of that head. ``groups``: optional (N,) group keys kept on one side of each split
    (:func:`aecfe.evaluation.evaluate_cross_domain`); ``held_out``: the LODO folds to run (default all).
    Returns ``{head: CrossDomainResult}``; files: module docstring.
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


def comparison_table(results: Mapping[tuple[str, str], CrossDomainResult]) -> pd.DataFrame:
    """One row per (features, head): in-lab accuracy, cross-lab accuracy and macro-F1 (matrix test_split,
    off-diagonal) and leave-one-lab-out macro-F1 (whole domain), ``"mean ± std"`` in % over seeds."""
    rows = []
    for (features, head), result in results.items():
        scores = result.scores
        matrix = scores[(scores["protocol"] == "matrix") & (scores["variant"] == "test_split")]
        same = matrix["train_domain"] == matrix["test_domain"]
        lodo = scores[(scores["protocol"] == "lodo") & (scores["variant"] == "whole_domain")]
        rows.append({"features": features, "head": head,
                     "in-lab accuracy": _over_seeds(matrix[same], "accuracy"),
                     "cross-lab accuracy": _over_seeds(matrix[~same], "accuracy"),
                     "cross-lab macro-F1": _over_seeds(matrix[~same], "f1_macro"),
                     "leave-one-lab-out macro-F1": _over_seeds(lodo, "f1_macro")})
    return pd.DataFrame(rows)


def _over_seeds(rows: pd.DataFrame, metric: str) -> str:
    return format_mean_std(rows.groupby("seed")[metric].mean()) if not rows.empty else "n/a"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name)
