"""Few-shot rows of the embedding heads: leave one domain out with k labelled cells of the held-out domain added to
the head's training set, scored on the rest of it, like every other head (:mod:`aecfe.evaluation`).

Per seed and held-out (target) domain: the shots are :func:`aecfe.splits.few_shot_selection` (k image groups per
class of the target, by the seed and the cells' group keys: the same images ``aecfe-adapt --shots`` and the deep
few-shot fine-tuning, on whole images or crops, use); the head is fitted on every cell of the other domains plus
the shots and scored on the target's cells outside the shots' groups (no cell of a shot's image, or of a
byte-identical copy, is scored). ``k = 0`` is plain leave-one-domain-out (no shot, the whole target scored). The results are
:class:`~aecfe.evaluation.CrossDomainResult` s (protocol ``lodo`` / ``whole_domain``, ``test_part``
``all_but_<k>_shots_per_class``), one per k, named ``<head>_k<k>``; written with ``to_files`` under
``<methods_dir>/<method>/<head>_k<k>/`` the comparison report shows them
(:func:`aecfe.comparison.report.few_shot_table`).

Example::

    results = few_shot_heads(X, y, domains, groups, head="rf", shots=(0, 5, 10, 20), seeds=(0, 1, 2))
    for name, result in results.items():
        result.to_files(f"runs/compare/methods/AE-CFE/{name}")
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from aecfe.errors import InputError
from aecfe.evaluation import CrossDomainResult, Predictions, score_predictions
from aecfe.splits import SHOT_SELECTION, few_shot_selection

logger = logging.getLogger(__name__)

DEFAULT_SHOTS = (0, 5, 10, 20)


def shot_split(y, groups, target_index, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(shots, scored)`` sorted indices of the target cells ``target_index``: the k groups per class of
    :func:`~aecfe.splits.few_shot_selection`, and the target cells outside those groups (k = 0: none, all)."""
    target_index = np.asarray(target_index, dtype=np.int64)
    if k == 0:
        return np.empty(0, dtype=np.int64), np.sort(target_index)
    groups = np.asarray(groups).astype(str)
    shots = few_shot_selection(y, k, seed, keys=groups, candidates=target_index)
    scored = target_index[~np.isin(groups[target_index], groups[shots])]
    return shots, np.sort(scored)


def few_shot_heads(X, y, domains, groups, head: str | Callable[..., Any] = "rf", *,
                   head_params: Mapping | None = None, shots: Sequence[int] = DEFAULT_SHOTS,
                   seeds: Sequence[int] = (0,), held_out: Sequence[str] | None = None) -> dict[str, CrossDomainResult]:
    """The few-shot rows of the module docstring: ``{"<head>_k<k>": CrossDomainResult}`` for every k of ``shots``.

    Args:
        X: (N, D) embeddings; y, domains, groups: (N,) labels, domain names, group keys (image content hashes,
            :meth:`aecfe.store.CellStore.cell_groups`).
        head: a head name of :data:`classifiers.heads.HEADS` or a factory ``head(**head_params)``; given
            ``random_state`` = seed when it has one.
        shots: k values (>= 0). seeds: the selection and head seeds. held_out: the target domains (default all).

    Each result's ``config`` holds the head, k, the selection rule and ``fit_s_total`` (seconds of every fit).
    """
    from aecfe.evaluation import _model_factory

    X, y, domains = np.asarray(X), np.asarray(y).astype(str), np.asarray(domains).astype(str)
    groups = np.asarray(groups).astype(str)
    if not len(X) == len(y) == len(domains) == len(groups):
        raise InputError(f"X, y, domains and groups differ in length: {len(X)}, {len(y)}, {len(domains)}, "
                         f"{len(groups)}")
    if min(shots, default=0) < 0 or not shots:
        raise InputError(f"shots must be k >= 0 values, got {list(shots)}")
    order = sorted(set(domains.tolist()))
    if len(order) < 2:
        raise InputError(f"few-shot leave-one-domain-out needs >= 2 domains, got {order}")
    targets = list(order if held_out is None else held_out)
    unknown = sorted(set(targets) - set(order))
    if unknown:
        raise InputError(f"held-out domains {unknown} are not in the data {order}")
    head_name, make_model = _model_factory(head, dict(head_params or {}))
    predictions: dict[int, list[Predictions]] = {k: [] for k in shots}
    seconds: dict[int, float] = {k: 0.0 for k in shots}
    for seed in seeds:
        for target in targets:
            source_index = np.flatnonzero(domains != target)
            target_index = np.flatnonzero(domains == target)
            others = "+".join(d for d in order if d != target)
            for k in shots:
                chosen, scored = shot_split(y, groups, target_index, k, seed)
                train = np.concatenate([source_index, chosen])
                started = time.perf_counter()
                model = make_model(seed).fit(X[train], y[train])
                seconds[k] += time.perf_counter() - started
                part = "all" if k == 0 else f"all_but_{k}_shots_per_class"
                predictions[k].append(Predictions(seed, "lodo", "whole_domain", others, target, part, scored,
                                                  np.asarray(model.predict(X[scored])) if len(scored) else scored,
                                                  np.unique(y[train]), len(train)))
                logger.info("%s, seed %d, %s -> %s, k=%d: %d shots, %d scored", head_name, seed, others, target, k,
                            len(chosen), len(scored))
    return {f"{head_name}_k{k}": score_predictions(
        rows, y, domains, f"{head_name}_k{k}",
        {"head_params": dict(head_params or {}), "shots": k, "shot_selection": SHOT_SELECTION,
         "fit_s_total": round(seconds[k], 3)}) for k, rows in predictions.items()}


def run_few_shot_rows(X, y, domains, groups, out_dir, *, heads: Sequence[str] = ("rf",),
                      head_params: Mapping[str, Mapping] | None = None, shots: Sequence[int] = DEFAULT_SHOTS,
                      seeds: Sequence[int] = (0,), held_out: Sequence[str] | None = None
                      ) -> dict[str, CrossDomainResult]:
    """:func:`few_shot_heads` for every head; each result's files (``to_files``) under ``out_dir/<head>_k<k>/``,
    where the comparison report collects them. Samples without a label are left out; ``groups`` None: every cell
    its own group."""
    from pathlib import Path

    y = np.asarray(y, dtype=object)
    labelled = np.array([isinstance(label, str) and label != "" for label in y], dtype=bool)
    X, y, domains = np.asarray(X)[labelled], y[labelled].astype(str), np.asarray(domains).astype(str)[labelled]
    groups = np.arange(len(labelled)).astype(str)[labelled] if groups is None else np.asarray(groups)[labelled]
    results = {}
    for head in heads:
        found = few_shot_heads(X, y, domains, groups, head, head_params=(head_params or {}).get(head), shots=shots,
                               seeds=seeds, held_out=held_out)
        for name, result in found.items():
            result.to_files(Path(out_dir) / name)
        results.update(found)
    return results
