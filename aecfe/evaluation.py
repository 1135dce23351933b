"""Cross-domain evaluation of a classifier on (X, y, domains): the AE-CFE matrix and leave-one-domain-out.

Splits (:func:`aecfe.splits.domain_splits`). Every domain is split once per seed into a training part (80 %) and a test
part (20 %), stratified by class when every class has >= 2 samples and both parts can hold every class, and
otherwise unstratified (the reason is logged and kept in :attr:`CrossDomainResult.splits`). The split of a
domain depends only on (seed, domain name, that domain's labels), not on the other domains, so the deep DG
baselines reuse the same splits by calling :func:`domain_splits` with the same seed.

Groups. With ``groups`` (one key per sample, e.g. :meth:`aecfe.store.CellStore.cell_groups`: the SHA-1 of the
cell's image file), every group is split as one unit: the cells of one image, and byte-identical copies of
an image under other names, never fall on both sides of a domain's split (a copy in the test part of an
image trained on inflates in-domain accuracy). Copies in *different* domains cannot be kept apart by a
split (the domain is the split); they are counted in ``config["groups_across_domains"]`` (groups, samples),
logged and noted in the report. Without groups (or when every group is a single sample) the splits are
exactly the ungrouped ones.

Protocols (the ``protocol`` / ``variant`` columns of the results):

* ``matrix`` (AE-CFE thesis, METHODS.md §1.9 and §8.5): one model per domain, trained on its training part,
  tested on every domain. Two variants from the same model:

  - ``test_split``: scored on every domain's 20 % test part (what the thesis text says);
  - ``whole_domain``: scored on the *whole* other domain, and on its own 20 % test part on the diagonal
    (what the reference code ``RandomForest.py`` does; lower variance). ``test_part`` says which was scored.

* ``lodo`` (leave one domain out): one model per held-out domain, trained on the other domains:

  - ``whole_domain`` (default, the clean choice for new work): trained on *every* sample of the other
    domains, scored on the whole held-out domain;
  - ``domainbed`` (to compare with SADA / BoDA tables, METHODS.md §3.1, §4.6, §8.13): trained on the other
    domains' 80 % training parts, scored on the held-out domain's 80 % part (DomainBed's "in" split).

Seeds: for each seed ``s`` the splits use seed ``s`` and the model gets ``random_state=s`` (when it has
that parameter); results are aggregated over seeds as mean ± population std (``ddof=0``, as DomainBed's
result collection does). Metrics: :mod:`aecfe.metrics` (macro metrics over the classes present in the test
set; test classes absent from training are listed, not dropped).

Heads: ``head`` is a name of :data:`classifiers.heads.HEADS` (``"rf"``, ``"xgboost"``, ``"linear"``) or any
callable ``head(**head_params)`` returning a fresh object with ``fit(X, y) -> self`` and ``predict(X)``
(``classes_`` optional). ``X`` only needs numpy fancy indexing (``X[indices]``), so a model taking images or
paths can use the same protocol.

Example::

    result = evaluate_cross_domain(X, y, domains, head="rf", seeds=(0, 1, 2))
    print(result.summary("accuracy").to_markdown())
    result.to_files("results/rf")
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from aecfe.errors import InputError
from aecfe.metrics import METRICS, classification_scores, confusion, per_class_report
from aecfe.splits import domain_splits

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("matrix", "lodo")
VARIANTS: dict[str, tuple[str, ...]] = {"matrix": ("test_split", "whole_domain"),
                                        "lodo": ("whole_domain", "domainbed")}
"""Variants of each protocol; ``matrix`` always reports both, ``lodo`` runs the ones asked for."""
KEYS: tuple[str, ...] = ("head", "seed", "protocol", "variant", "train_domain", "test_domain")
"""Columns identifying one evaluation in :attr:`CrossDomainResult.scores` and ``per_class``."""
COST_COLUMNS: tuple[str, ...] = ("fit_s", "predict_ms_per_sample")
"""Columns of :attr:`CrossDomainResult.scores` timing each model (they differ between identical runs)."""
LODO_ROW = "other domains"
"""Row label of the leave-one-domain-out summary."""
IN_DOMAIN_ROW = "same domain"
"""Row label of :meth:`CrossDomainResult.in_domain_summary`."""


def groups_across_domains(groups, domains) -> dict:
    """``{"groups": k, "samples": n}``: groups whose samples lie in more than one domain (byte-identical
    copies of an image in several domains), and how many samples they hold."""
    frame = pd.DataFrame({"group": np.asarray(groups), "domain": np.asarray(domains)})
    spread = frame.groupby("group")["domain"].nunique()
    crossing = spread.index[spread > 1]
    return {"groups": int(len(crossing)), "samples": int(frame["group"].isin(crossing).sum())}


@dataclasses.dataclass
class CrossDomainResult:
    """Results of :func:`evaluate_cross_domain`.

    Attributes:
        scores: one row per (head, seed, protocol, variant, train_domain, test_domain): :data:`KEYS`,
            ``test_part`` ("test_split", "train_split" or "all"), ``n_train``, ``n_classes_train``, the
            metrics of :func:`aecfe.metrics.classification_scores`, and what the model cost: ``fit_s``
            (seconds of its ``fit``, or the ``train_seconds_`` a model reports, e.g. a deep baseline loaded
            from a finished run; repeated on each row of that model) and ``predict_ms_per_sample`` (its
            ``predict`` call on the test samples, milliseconds per sample); NaN for :func:`score_predictions`.
        per_class: :func:`aecfe.metrics.per_class_report` rows with the :data:`KEYS` columns in front.
        confusion: ``{(protocol, variant, train_domain, test_domain): DataFrame}`` of counts summed over seeds,
            rows true / columns predicted class, over :attr:`classes`.
        splits: one row per (seed, domain): sizes of both parts, ``stratified``, ``reason``.
        skipped: evaluations that could not run: KEYS, ``reason`` (an untrainable training set, an empty test
            part).
        classes: every class in ``y``, sorted. domains: the domains in report order.
        config: head, head_params, seeds, protocols, lodo_variants, test_size.
    """

    scores: pd.DataFrame
    per_class: pd.DataFrame
    confusion: dict[tuple[str, str, str, str], pd.DataFrame]
    splits: pd.DataFrame
    skipped: pd.DataFrame
    classes: tuple
    domains: tuple[str, ...]
    config: dict

    def aggregate(self) -> pd.DataFrame:
        """Mean and population std over seeds: one row per (head, protocol, variant, train_domain,
        test_domain, metric), columns ``mean``, ``std``, ``n_seeds``."""
        keys = [k for k in KEYS if k != "seed"]
        long = self.scores.melt(id_vars=keys + ["seed"], value_vars=list(METRICS), var_name="metric")
        grouped = long.groupby(keys + ["metric"], sort=False)["value"]
        return grouped.agg(mean="mean", std=lambda v: float(np.std(v)), n_seeds="count").reset_index()

    def summary(self, metric: str = "accuracy", protocol: str = "matrix", variant: str | None = None,
                head: str | None = None) -> pd.DataFrame:
        """``"mean ± std"`` strings in percent (one decimal) over seeds.

        ``matrix``: rows = trained on, columns = tested on. ``lodo``: one row (:data:`LODO_ROW`), columns =
        held-out domain and ``mean`` (the per-seed average over held-out domains, then mean ± std over
        seeds). ``variant`` defaults to the protocol's first variant present; ``head`` to the only head.
        """
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; available: {', '.join(METRICS)}")
        rows = self._select(protocol, variant, head)
        if protocol == "lodo":
            return self._per_domain_row(rows, metric, LODO_ROW, "held out")
        cells = rows.groupby(["train_domain", "test_domain"])[metric].agg(format_mean_std).unstack("test_domain")
        order = [d for d in self.domains if d in cells.index], [d for d in self.domains if d in cells.columns]
        table = cells.loc[order[0], order[1]]
        table.index.name, table.columns.name = "trained on", "tested on"
        return table

    def in_domain_summary(self, metric: str = "accuracy", head: str | None = None) -> pd.DataFrame:
        """The ``matrix`` diagonal as one row (:data:`IN_DOMAIN_ROW`) shaped like the ``lodo`` summary: columns =
        domain (trained on its training part, scored on its test part: the oracle of a transfer) and ``mean``
        (per-seed average over domains, then mean ± std over seeds), ``"mean ± std"`` in percent."""
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; available: {', '.join(METRICS)}")
        rows = self._select("matrix", "test_split", head)
        rows = rows[rows["train_domain"] == rows["test_domain"]]
        return self._per_domain_row(rows, metric, IN_DOMAIN_ROW, "domain")

    def _per_domain_row(self, rows: pd.DataFrame, metric: str, label: str, columns_name: str) -> pd.DataFrame:
        per_seed = rows.pivot_table(index="seed", columns="test_domain", values=metric)
        per_seed["mean"] = per_seed.mean(axis=1)
        order = [d for d in self.domains if d in per_seed.columns] + ["mean"]
        table = per_seed[order].agg(format_mean_std).to_frame(label).T
        table.columns.name = columns_name
        return table

    def _select(self, protocol: str, variant: str | None, head: str | None) -> pd.DataFrame:
        rows = self.scores[self.scores["protocol"] == protocol]
        if rows.empty:
            raise InputError(f"no {protocol!r} results; protocols run: {sorted(self.scores['protocol'].unique())}")
        heads = list(rows["head"].unique())
        if head is None and len(heads) > 1:
            raise InputError(f"several heads {heads}: pass head=")
        rows = rows[rows["head"] == (head or heads[0])]
        variants = [v for v in VARIANTS[protocol] if v in set(rows["variant"])]
        variant = variant or variants[0]
        if variant not in variants:
            raise InputError(f"no {protocol!r} results for variant {variant!r}; present: {variants}")
        return rows[rows["variant"] == variant]

    def summaries(self) -> list[tuple[str, str, str, pd.DataFrame]]:
        """Every (protocol, variant, metric, :meth:`summary`) present, in report order (single head)."""
        present = set(zip(self.scores["protocol"], self.scores["variant"]))
        return [(protocol, variant, metric, self.summary(metric, protocol, variant))
                for protocol in PROTOCOLS for variant in VARIANTS[protocol] if (protocol, variant) in present
                for metric in METRICS]

    def markdown(self) -> str:
        """All summaries as one Markdown report (needs ``tabulate``), with the split and skip notes."""
        head = self.config["head"]
        lines = [f"# Cross-domain evaluation: head `{head}`", "",
                 f"Seeds {list(self.config['seeds'])}; values are mean ± std (population) over seeds, in %. "
                 "Macro metrics average over the classes present in the test set.", ""]
        for protocol, variant, metric, table in self.summaries():
            lines += [f"## {protocol} / {variant} / {metric}", "", table.to_markdown(), ""]
        missing = self.scores[self.scores["classes_missing_in_train"] != ""]
        if not missing.empty:
            pairs = missing.drop_duplicates(["protocol", "train_domain", "test_domain", "classes_missing_in_train"])
            lines += ["## Test classes absent from training", "",
                      pairs[["protocol", "train_domain", "test_domain", "classes_missing_in_train"]]
                      .to_markdown(index=False), ""]
        across = self.config.get("groups_across_domains")
        if across and across["groups"]:
            lines += ["## Copies across domains", "",
                      f"{across['groups']} groups of identical images ({across['samples']} samples) lie in more than "
                      "one domain; within a domain every group stays on one side of the split, but across domains "
                      "such copies are on both sides of every cross-domain score.", ""]
        notes = self.splits[~self.splits["stratified"]].drop_duplicates(["domain", "reason"])
        if not notes.empty:
            lines += ["## Unstratified splits", "", notes[["seed", "domain", "reason"]].to_markdown(index=False), ""]
        if not self.skipped.empty:
            lines += ["## Skipped evaluations", "", self.skipped.to_markdown(index=False), ""]
        return "\n".join(lines)

    def confusion_frame(self) -> pd.DataFrame:
        """:attr:`confusion` as one tidy frame: protocol, variant, train_domain, test_domain, true, predicted,
        count."""
        frames = [matrix.stack().rename("count").reset_index().assign(
            protocol=key[0], variant=key[1], train_domain=key[2], test_domain=key[3])
            for key, matrix in self.confusion.items()]
        columns = ["protocol", "variant", "train_domain", "test_domain", "true", "predicted", "count"]
        return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)

    def to_files(self, out_dir: str | Path) -> list[Path]:
        """Write the results under ``out_dir`` (created) and return the paths written:

        ``scores.csv``, ``per_class.csv``, ``aggregate.csv``, ``confusion.csv`` (tidy, summed over seeds),
        ``splits.csv``, ``skipped.csv``, ``summary_<protocol>_<variant>_<metric>.csv`` and ``report.md``.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tables = {"scores": self.scores, "per_class": self.per_class, "aggregate": self.aggregate(),
                  "confusion": self.confusion_frame(), "splits": self.splits, "skipped": self.skipped}
        written = []
        for name, frame in tables.items():
            frame.to_csv(out_dir / f"{name}.csv", index=False)
            written.append(out_dir / f"{name}.csv")
        for protocol, variant, metric, table in self.summaries():
            path = out_dir / f"summary_{protocol}_{variant}_{metric}.csv"
            table.to_csv(path)
            written.append(path)
        (out_dir / "report.md").write_text(self.markdown(), encoding="utf-8")
        written.append(out_dir / "report.md")
        logger.info("wrote %d result files to %s", len(written), out_dir)
        return written


def format_mean_std(values: pd.Series) -> str:
    """``"mean ± std"`` of fractions (one per seed), in percent with one decimal; population std."""
    return f"{100 * values.mean():.1f} ± {100 * np.std(values.to_numpy()):.1f}"


def evaluate_cross_domain(X, y, domains, head: str | Callable[..., Any] = "rf", seeds: Iterable[int] = (0, 1, 2),
                          protocols: Iterable[str] = PROTOCOLS, head_params: dict | None = None,
                          test_size: float = 0.2, lodo_variants: Iterable[str] = ("whole_domain",),
                          domain_order: Sequence[str] | None = None, progress: bool = False,
                          groups=None, held_out: Sequence[str] | None = None) -> CrossDomainResult:
    """Run the cross-domain protocols (module docstring) for every seed.

    Args:
        X: (N, ...) features, indexable by integer arrays (an (N, D) float array for the sklearn heads).
        y: (N,) class labels, none missing (drop unlabelled cells first). domains: (N,) domain names.
        head: head name (:data:`classifiers.heads.HEADS`) or a factory ``head(**head_params)`` (module docstring).
        seeds: split and model seeds. protocols: subset of :data:`PROTOCOLS`.
        head_params: keyword arguments of the head (``random_state`` is set per seed when the head has it).
        test_size: test fraction of each domain's split.
        lodo_variants: subset of ``VARIANTS["lodo"]``.
        domain_order: order of domains in the reports (default sorted); must list every domain.
        progress: show a tqdm bar over trainings.
        groups: optional (N,) group keys (e.g. the content hash of each cell's image): a group never falls on
            both sides of a domain's split; groups spanning several domains are counted in
            ``config["groups_across_domains"]`` (module docstring).
        held_out: the leave-one-domain-out folds to run, by held-out domain (default every domain), e.g. one fold
            of features made by a model that never saw that domain.
    """
    y, domains = _check_inputs(X, y, domains)
    across = None
    if groups is not None:
        if len(groups) != len(y):
            raise InputError(f"groups has {len(groups)} entries for {len(y)} samples")
        across = groups_across_domains(groups, domains)
        if across["groups"]:
            logger.warning("%d groups of identical samples (%d samples) lie in more than one domain: their copies "
                           "are on both sides of every cross-domain evaluation", across["groups"], across["samples"])
    seeds, protocols, lodo_variants = list(seeds), list(protocols), list(lodo_variants)
    _check_choices("protocol", protocols, PROTOCOLS)
    _check_choices("lodo variant", lodo_variants, VARIANTS["lodo"])
    if not seeds:
        raise InputError("seeds must list at least one seed")
    order = _domain_order(domains, domain_order)
    folds = list(order if held_out is None else held_out)
    _check_choices("held-out domain", folds, order)
    head_name, make_model = _model_factory(head, head_params or {})
    run = _Run(X, y, head_name, make_model, np.unique(y))
    n_trainings = len(seeds) * (len(order) * ("matrix" in protocols)
                                + len(folds) * len(lodo_variants) * ("lodo" in protocols and len(order) > 1))
    bar = tqdm(total=n_trainings, desc=f"cross-domain {head_name}", disable=not progress)
    if "lodo" in protocols and len(order) < 2:
        logger.warning("leave-one-domain-out needs >= 2 domains, got %s: skipped", order)
    whole = {d: np.flatnonzero(domains == d) for d in order}
    for seed in seeds:
        splits = domain_splits(y, domains, seed, test_size, groups)
        run.splits += [{"seed": seed, "domain": d, "n": len(whole[d]), "n_train": len(s.train),
                        "n_test": len(s.test), "stratified": s.stratified, "reason": s.reason}
                       for d, s in ((d, splits[d]) for d in order)]
        if "matrix" in protocols:
            for source in order:
                model = run.fit(seed, "matrix", "*", source, splits[source].train)
                bar.update()
                for target in order:
                    parts = {"test_split": ("test_split", splits[target].test),
                             "whole_domain": ("test_split", splits[target].test) if target == source
                             else ("all", whole[target])}
                    run.score(model, seed, "matrix", parts, source, target)
        if "lodo" in protocols and len(order) > 1:
            for target in folds:
                others = [d for d in order if d != target]
                for variant in lodo_variants:
                    if variant == "whole_domain":
                        train, part = np.concatenate([whole[d] for d in others]), ("all", whole[target])
                    else:
                        train = np.concatenate([splits[d].train for d in others])
                        part = ("train_split", splits[target].train)
                    source = "+".join(others)
                    model = run.fit(seed, "lodo", variant, source, np.sort(train))
                    bar.update()
                    run.score(model, seed, "lodo", {variant: part}, source, target)
    bar.close()
    config = {"head": head_name, "head_params": dict(head_params or {}), "seeds": seeds, "protocols": protocols,
              "lodo_variants": lodo_variants, "test_size": test_size, "grouped": groups is not None,
              "held_out": folds}
    if across is not None:
        config["groups_across_domains"] = across
    return run.result(order, config)


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Predictions of one trained model on samples of one test domain, made outside
    :func:`evaluate_cross_domain` (e.g. by the few-shot workflow, whose training also uses labelled target
    samples), to be scored into the same tables by :func:`score_predictions`.

    ``indices``: (n,) global sample indices scored; ``y_pred``: (n,) their predicted labels; ``train_classes``:
    the classes the model was trained on; ``test_part``: what was scored (free text, e.g. "all_but_finetune").
    ``protocol`` / ``variant`` must be one of :data:`VARIANTS`; ``train_domain`` names the training data.
    """

    seed: int
    protocol: str
    variant: str
    train_domain: str
    test_domain: str
    test_part: str
    indices: np.ndarray
    y_pred: np.ndarray
    train_classes: Sequence
    n_train: int


class _Lookup:
    """A 'model' returning stored predictions for global sample indices (``X`` = ``np.arange(N)``)."""

    def __init__(self, indices: np.ndarray, y_pred: np.ndarray):
        self.by_index = dict(zip(np.asarray(indices).tolist(), np.asarray(y_pred).tolist()))

    def predict(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray([self.by_index[i] for i in np.asarray(indices).tolist()], dtype=object)


def score_predictions(predictions: Iterable[Predictions], y, domains, head: str, config: dict | None = None,
                      domain_order: Sequence[str] | None = None) -> CrossDomainResult:
    """Score :class:`Predictions` made outside :func:`evaluate_cross_domain` into a :class:`CrossDomainResult`
    (scores, per-class reports, confusion matrices, summaries, files) exactly as that function scores its own
    models. ``y`` (N,) and ``domains`` (N,) are the labels and domains of every sample the indices refer to;
    ``head`` names the method; ``config`` is stored (``seeds`` defaults to the seeds of the predictions).
    ``splits`` is empty (the caller made the splits)."""
    y, domains = _check_inputs(np.arange(len(y)), y, domains)
    run = _Run(np.arange(len(y)), y, head, lambda seed: None, np.unique(y))
    seeds = []
    for p in predictions:
        _check_choices("protocol", [p.protocol], PROTOCOLS)
        _check_choices(f"{p.protocol} variant", [p.variant], VARIANTS[p.protocol])
        if len(p.indices) != len(p.y_pred):
            raise InputError(f"{head}, {p.train_domain} -> {p.test_domain}: {len(p.indices)} indices but "
                             f"{len(p.y_pred)} predictions")
        fitted = _Fitted(_Lookup(p.indices, p.y_pred), p.n_train, np.asarray(p.train_classes))
        run.score(fitted, p.seed, p.protocol, {p.variant: (p.test_part, np.asarray(p.indices, dtype=np.int64))},
                  p.train_domain, p.test_domain)
        seeds.append(p.seed)
    config = {"head": head, "seeds": sorted(set(seeds)), **(config or {})}
    return run.result(_domain_order(domains, domain_order), config)


@dataclasses.dataclass(frozen=True)
class _Fitted:
    """A trained model; ``fit_seconds`` is NaN for predictions made elsewhere (a :class:`_Lookup`, whose
    predict is not timed) and for a model that reports unknown ``train_seconds_``."""

    model: Any
    n_train: int
    classes: np.ndarray
    fit_seconds: float = math.nan


class _Run:
    """Accumulates the rows of one :func:`evaluate_cross_domain` call."""

    def __init__(self, X, y: np.ndarray, head: str, make_model: Callable[[int], Any], classes: np.ndarray):
        self.X, self.y, self.head, self.make_model, self.classes = X, y, head, make_model, classes
        self.scores: list[dict] = []
        self.per_class: list[pd.DataFrame] = []
        self.confusion: dict[tuple[str, str, str, str], pd.DataFrame] = {}
        self.splits: list[dict] = []
        self.skipped: list[dict] = []

    def fit(self, seed: int, protocol: str, variant: str, source: str, train: np.ndarray) -> _Fitted | None:
        """A model fitted on samples ``train``, or None (recorded in ``skipped``, with variant "*" for every
        variant of that training) when it cannot be trained."""
        keys = {"head": self.head, "seed": seed, "protocol": protocol, "variant": variant, "train_domain": source}
        reason = "no training samples" if len(train) == 0 else ""
        model = None
        started = time.perf_counter()
        if not reason:
            try:
                model = self.make_model(seed).fit(self.X[train], self.y[train])
            except ValueError as err:  # what scikit-learn raises for untrainable data (e.g. a single class)
                reason = f"training failed: {err}"
        if reason:
            logger.warning("seed %d, %s, trained on %s: skipped: %s", seed, protocol, source, reason)
            self.skipped.append({**keys, "test_domain": "", "reason": reason})
            return None
        classes = getattr(model, "classes_", None)
        seconds = getattr(model, "train_seconds_", time.perf_counter() - started)
        return _Fitted(model, len(train), np.unique(self.y[train]) if classes is None else np.asarray(classes),
                       seconds)

    def score(self, fitted: _Fitted | None, seed: int, protocol: str, parts: dict[str, tuple[str, np.ndarray]],
              source: str, target: str) -> None:
        """Score ``fitted`` on each ``{variant: (test_part, indices)}`` of domain ``target``."""
        if fitted is None:
            return
        needed = np.unique(np.concatenate([indices for _, indices in parts.values()]))
        started = time.perf_counter()
        predicted = np.asarray(fitted.model.predict(self.X[needed])) if len(needed) else None
        timed = len(needed) and not isinstance(fitted.model, _Lookup)
        predict_ms = 1000 * (time.perf_counter() - started) / len(needed) if timed else math.nan
        for variant, (test_part, indices) in parts.items():
            keys = {"head": self.head, "seed": seed, "protocol": protocol, "variant": variant,
                    "train_domain": source, "test_domain": target}
            if len(indices) == 0:
                self.skipped.append({**keys, "reason": f"domain {target!r} has no {test_part} samples"})
                continue
            y_true = self.y[indices]
            y_pred = predicted[np.searchsorted(needed, indices)]
            self.scores.append({**keys, "test_part": test_part, "n_train": fitted.n_train,
                                "n_classes_train": len(fitted.classes),
                                **classification_scores(y_true, y_pred, fitted.classes),
                                "fit_s": fitted.fit_seconds, "predict_ms_per_sample": predict_ms})
            report = per_class_report(y_true, y_pred, fitted.classes)
            self.per_class.append(pd.concat([pd.DataFrame([keys] * len(report)), report], axis=1))
            key = (protocol, variant, source, target)
            counts = confusion(y_true, y_pred, self.classes)
            self.confusion[key] = counts if key not in self.confusion else self.confusion[key] + counts

    def result(self, order: list[str], config: dict) -> CrossDomainResult:
        score_columns = [*KEYS, "test_part", "n_train", "n_classes_train", *METRICS, "n_test", "n_classes_test",
                         "classes_missing_in_train", "n_test_missing_in_train", *COST_COLUMNS]
        return CrossDomainResult(
            scores=pd.DataFrame(self.scores, columns=score_columns),
            per_class=pd.concat(self.per_class, ignore_index=True) if self.per_class else pd.DataFrame(),
            confusion=self.confusion,
            splits=pd.DataFrame(self.splits, columns=["seed", "domain", "n", "n_train", "n_test", "stratified",
                                                      "reason"]),
            skipped=pd.DataFrame(self.skipped, columns=[*KEYS, "reason"]),
            classes=tuple(self.classes.tolist()), domains=tuple(order), config=config)


def _check_inputs(X, y, domains) -> tuple[np.ndarray, np.ndarray]:
    y, domains = np.asarray(y), np.asarray(domains).astype(str)
    if y.ndim != 1 or domains.ndim != 1 or not len(X) == len(y) == len(domains):
        raise InputError(f"X, y and domains must have the same length N and y, domains shape (N,); got "
                         f"len(X)={len(X)}, y {y.shape}, domains {domains.shape}")
    if len(y) == 0:
        raise InputError("no samples to evaluate")
    missing = pd.isna(y) | (y.astype(str) == "")
    if missing.any():
        raise InputError(f"{int(missing.sum())} of {len(y)} labels are missing (None/NaN/''); drop unlabelled "
                         "samples before evaluating")
    return y, domains


def _check_choices(what: str, given: list[str], allowed: Sequence[str]) -> None:
    unknown = [g for g in given if g not in allowed]
    if unknown or not given:
        raise InputError(f"{what} must be one or more of {list(allowed)}, got {given}")


def _domain_order(domains: np.ndarray, domain_order: Sequence[str] | None) -> list[str]:
    present = sorted(set(domains.tolist()))
    if domain_order is None:
        return present
    order = [str(d) for d in domain_order]
    if sorted(order) != present:
        raise InputError(f"domain_order {order} must list each domain of the data once: {present}")
    return order


def _model_factory(head, head_params: dict) -> tuple[str, Callable[[int], Any]]:
    """(head name, ``seed -> fresh unfitted model`` with ``random_state=seed`` when the model has it)."""
    if isinstance(head, str):
        from classifiers.heads import make_head

        make_head(head, **head_params)  # fail early on an unknown head or parameter
        name, build = head, lambda: make_head(head, **head_params)
    elif callable(head):
        name, build = getattr(head, "__name__", type(head).__name__), lambda: head(**head_params)
    else:
        raise InputError(f"head must be a head name or a callable returning a model, got {head!r}")

    def make_model(seed: int):
        model = build()
        if hasattr(model, "get_params") and "random_state" in model.get_params():
            model.set_params(random_state=seed)
        return model

    return name, make_model
