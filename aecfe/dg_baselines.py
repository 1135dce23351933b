"""The deep domain-generalization baselines (:mod:`classifiers.dg`) on folder-per-class image domains, in the
cross-domain protocols, tables and figures of the embedding heads (:func:`aecfe.evaluation.evaluate_cross_domain`).

* :func:`scan_image_domains`, :func:`load_image_domains` — the image records of the domains, their labels in a
  scheme (:func:`aecfe.taxonomy.relabel`), as one :class:`~classifiers.dg.ImageDataset` (optionally preloaded
  in memory, :func:`classifiers.dg.data.preload_images`).
* :func:`run_baselines` — every algorithm of a :class:`DGRunSettings`, one :class:`CrossDomainResult` per head:
  the DG algorithms as :class:`~classifiers.dg.DGClassifier` heads (``Oracle``: the ``matrix`` protocol, its
  diagonal being trained and scored in the same domain; ``CRT``: stage 1 is the BoDA of the same settings);
  ``FewShot``: the few-shot protocol (:func:`classifiers.dg.fewshot_protocol.few_shot_lodo`), heads
  ``FewShot_k0`` (the source model on the whole held-out domain) and ``FewShot_k<k>`` (fine-tuned on k labelled
  target images per class, scored on the rest).
* :func:`headline_tables`, :func:`write_summary` — one row per head: the leave-one-domain-out F1 per held-out
  domain and their mean (Oracle: its same-domain score), ``summary.md`` / ``summary_<metric>.csv``.

Every training runs under ``<out_dir>/runs`` (checkpoints, ``log.jsonl``); a finished one is loaded, not
recomputed, when the same run starts again.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from aecfe.errors import InputError
from aecfe.evaluation import CrossDomainResult, Predictions, evaluate_cross_domain, score_predictions

logger = logging.getLogger(__name__)

HEADLINE_METRICS = ("f1_macro", "f1_micro")
"""The metrics of the summary tables."""


# ---- data --------------------------------------------------------------------------------------------------------

def scan_image_domains(domain_dirs: Sequence[str] = (), domains_root: str | Path | None = None):
    """Image records (:class:`aecfe.io.ImageRecord`) of ``NAME=DIR`` items (DIR holds ``<class>/<image>``) or of
    every subfolder of ``domains_root`` (one of the two)."""
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


def scan_synthetic_domains(folder: str | Path, n_per_domain: int, size: int, seed: int = 0):
    """Image records of the synthetic labs (:func:`aecfe.synthetic.default_domains`), written as class folders
    under ``folder`` (which must outlive the records' use)."""
    from aecfe.synthetic import default_domains
    from aecfe.synthetic.writers import write_class_folders

    return scan_image_domains(domains_root=write_class_folders(Path(folder), default_domains(), n_per_domain,
                                                               seed=seed, size=size))


def class_domain_counts(labels, domains) -> pd.DataFrame:
    """Images per class (rows) and domain (columns)."""
    return pd.crosstab(pd.Series(labels, name="class"), pd.Series(domains, name="domain"))


def load_image_domains(records, scheme: str, preload_size: int):
    """(:class:`~classifiers.dg.ImageDataset`, labels (N,) str, domains (N,) str) of the records ``scheme``
    keeps: canonical labels, or each record's label through its class map into the scheme
    (:func:`aecfe.taxonomy.relabel`, None = dropped). ``preload_size`` > 0: images read once and kept in memory
    at that side; 0: the files are read at every access. The dataset's ``keys`` are the files' SHA-1 (a cell
    store's ``cell_groups``), so the few-shot workflow draws the same images as the heads' few-shot rows."""
    from aecfe.taxonomy import CANONICAL, relabel
    from aecfe.io import sha1_file
    from classifiers.dg.data import ImageDataset, preload_images

    if scheme == CANONICAL:
        labels = np.array([r.canonical for r in records], dtype=object)
    else:
        labels = relabel([r.label for r in records], [r.dataset for r in records], scheme)
    keep = np.array([label is not None for label in labels], dtype=bool)
    records = [r for r, k in zip(records, keep) if k]
    if not records:
        raise InputError(f"no images left under scheme {scheme!r}")
    labels = labels[keep].astype(str)
    domains = np.array([r.domain for r in records])
    paths = [r.path for r in records]
    images = preload_images(paths, preload_size) if preload_size > 0 else [str(p) for p in paths]
    logger.info("images per class and domain:\n%s", class_domain_counts(labels, domains).to_string())
    keys = [sha1_file(path) for path in paths]
    return ImageDataset(images, labels, domains, keys=keys), labels, domains


# ---- runs --------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DGRunSettings:
    """What a run of several DG algorithms shares.

    ``common``: backbone, weights, image_size, batch_size (per domain), lr for every algorithm (None = its
    default); ``steps`` / ``checkpoint_every`` the run length (the schedule scales to it) and ``overrides``
    ``{algorithm: {key: value}}`` applied last (:func:`classifiers.dg.hparams.algorithm_hparams`;
    ``overrides["FewShotFinetune"]`` is the few-shot fine-tuning). ``protocols`` / ``lodo_variant`` /
    ``seeds`` / ``holdout_fraction``: :func:`aecfe.evaluation.evaluate_cross_domain` and
    :class:`~classifiers.dg.DGClassifier`; ``few_shot_*`` and ``degrade_domains``: the few-shot protocol.
    """

    algorithms: Sequence[str]
    protocols: Sequence[str] = ("lodo",)
    lodo_variant: str = "whole_domain"
    seeds: Sequence[int] = (0,)
    holdout_fraction: float = 0.2
    few_shot_k: Sequence[int] = (5, 10, 20)
    few_shot_trainable: str = "all"
    degrade_domains: Sequence[str] = ()
    common: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    steps: int | None = None
    checkpoint_every: int | None = None
    overrides: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    device: str | None = None
    """Where every network trains and predicts (None: :func:`aecfe.devices.default_device`)."""

    def hparams(self, algorithm: str) -> dict[str, Any]:
        """The hyper-parameter overrides of ``algorithm`` in this run."""
        from classifiers.dg.hparams import algorithm_hparams

        return algorithm_hparams(algorithm, self.common, self.steps, self.checkpoint_every,
                                 self.overrides.get(algorithm, {}))


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
                     holdout_fraction: float, stage1_hparams: dict[str, Any] | None = None,
                     device: str | None = None) -> CrossDomainResult:
    """One DG algorithm through :func:`aecfe.evaluation.evaluate_cross_domain`; trainings under ``out_dir/runs``.
    Cell crops (:mod:`classifiers.dg.crops`) carry their split groups (the image's content hash): copies stay on
    one side of each split, as for the heads."""
    params = {"hparams": hparams, "holdout_fraction": holdout_fraction, "out_dir": out_dir / "runs",
              "progress": True, "device": device}
    if algorithm == "CRT":
        params["stage1_hparams"] = stage1_hparams
    if algorithm == "Oracle":
        protocols = ["matrix"]
    from classifiers.dg.crops import dataset_groups

    return evaluate_cross_domain(data, labels, domains, head=dg_head(algorithm), head_params=params, seeds=seeds,
                                 protocols=protocols, lodo_variants=lodo_variants, progress=True,
                                 groups=dataset_groups(data))


def score_few_shot(folds, labels, domains, classes: Sequence[str], shots: Sequence[int],
                   config: Mapping[str, Any]) -> dict[str, CrossDomainResult]:
    """The :class:`~classifiers.dg.fewshot_protocol.FewShotFold` s scored like every head (leave-one-domain-out,
    ``whole_domain``): ``{"FewShot_k0": ..., "FewShot_k<k>": ...}``; ``labels`` / ``domains`` (N,) of the dataset
    the folds index, ``classes`` its class names (fold class ids -> names)."""
    classes = np.asarray(classes, dtype=object)
    predictions: dict[int, list[Predictions]] = {0: [], **{k: [] for k in shots}}
    for fold in folds:
        part = "all" if fold.shots == 0 else f"all_but_{fold.shots}_shots_per_class"
        predictions[fold.shots].append(Predictions(
            fold.seed, "lodo", "whole_domain", "+".join(fold.sources), fold.target, part, fold.test_indices,
            classes[fold.y_pred], classes[fold.train_classes], fold.n_train))
    return {f"FewShot_k{k}": score_predictions(rows, labels, domains, f"FewShot_k{k}", {**config, "shots": k})
            for k, rows in predictions.items()}


def run_few_shot(data, domains, shots: Sequence[int], out_dir: Path, *, seeds: Sequence[int],
                 source_hparams: dict[str, Any], finetune_hparams: dict[str, Any], trainable: str,
                 degrade_domains: Sequence[str], device: str | None = None) -> dict[str, CrossDomainResult]:
    """The few-shot protocol (trainings under ``out_dir/runs``) scored: heads ``FewShot_k0`` and
    ``FewShot_k<k>``."""
    from classifiers.dg.fewshot_protocol import few_shot_lodo

    folds = few_shot_lodo(data, shots, out_dir / "runs", seeds=seeds, source_hparams=source_hparams,
                          finetune_hparams=finetune_hparams, trainable=trainable, degrade_domains=degrade_domains,
                          device=device)
    labels = np.asarray(data.classes, dtype=object)[data.targets]
    config = {"source_hparams": source_hparams, "finetune_hparams": finetune_hparams, "trainable": trainable}
    return score_few_shot(folds, labels, domains, data.classes, shots, config)


def run_baselines(data, labels, domains, settings: DGRunSettings, out_dir: Path
                  ) -> Iterator[dict[str, CrossDomainResult]]:
    """Every algorithm of ``settings`` in turn on the dataset of :func:`load_image_domains`; yields each one's
    results (``{head: result}``) when it is done, so the caller can write them before the next one starts."""
    for algorithm in settings.algorithms:
        hparams = settings.hparams(algorithm)
        logger.info("=== %s: hyper-parameter overrides %s", algorithm, hparams)
        if algorithm == "FewShot":
            if "lodo" not in settings.protocols or len(data.domain_names) < 2:
                logger.warning("FewShot runs leave-one-domain-out only (protocol lodo, >= 2 domains): skipped")
                continue
            yield run_few_shot(data, domains, settings.few_shot_k, out_dir, seeds=settings.seeds,
                               source_hparams=hparams, finetune_hparams=dict(settings.overrides.get(
                                   "FewShotFinetune", {})),
                               trainable=settings.few_shot_trainable, degrade_domains=settings.degrade_domains,
                               device=settings.device)
        else:
            stage1 = settings.hparams("BoDA") if algorithm == "CRT" else None
            yield {algorithm: run_dg_algorithm(
                algorithm, data, labels, domains, hparams, out_dir, seeds=settings.seeds,
                protocols=settings.protocols, lodo_variants=[settings.lodo_variant],
                holdout_fraction=settings.holdout_fraction, stage1_hparams=stage1, device=settings.device)}


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
