"""One report of every method: results tables, confusion matrices, UMAPs, reconstruction grids, costs.

Every method's evaluation wrote ``<methods_dir>/<method>/<head>/scores.csv`` (the layout of
:meth:`aecfe.evaluation.CrossDomainResult.to_files`, used by ``evaluate_cross_domain`` and ``train_dg``).
:func:`collect_scores` stacks them; :func:`results_table` condenses each (method, head) into

* ``one -> others``: the thesis protocol, trained on one domain (its training part) and scored on each whole
  other domain (``matrix`` / ``whole_domain``, off-diagonal pairs);
* ``same domain``: scored on the training domain's own test part (``matrix`` / ``test_split`` diagonal);
* ``LODO``: trained on all other domains, scored on the whole held-out one (``lodo`` / ``whole_domain``),

each the per-seed mean over the pairs, then mean ± std over seeds, in percent. The deep baselines run on two
inputs (:data:`aecfe.comparison.plan.DG_INPUTS`): ``ERM`` on whole images, ``ERM (crop)`` (folder ``ERM_crop``)
on the detector's crops; :func:`input_table` puts the two side by side and the verdict names the best method
of each input (the feature methods read the detector's cells too).
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from aecfe.comparison.plan import (DG_INPUTS, DG_METHODS, TARGET_DATA, base_method, dg_method, method_folder,
                                   method_from_folder, method_input)
from aecfe.comparison.steps import StepRecord
from aecfe.evaluation import COST_COLUMNS

logger = logging.getLogger(__name__)

COLUMNS: dict[str, tuple[str, str, str]] = {
    "one -> others": ("matrix", "whole_domain", "cross"),
    "same domain": ("matrix", "test_split", "diagonal"),
    "LODO": ("lodo", "whole_domain", "all"),
}
"""Report column -> (protocol, variant, which (train, test) pairs)."""

REPORT_METRICS = ("accuracy", "f1_macro", "f1_micro")
RANK_BY = ("LODO", "f1_macro")
"""The column and metric that rank the methods (best and worst confusion matrices, the verdict)."""


def collect_scores(methods_dir: str | Path) -> pd.DataFrame:
    """Every ``<method>/<head>/scores.csv`` under ``methods_dir`` as one frame with a ``method`` column."""
    frames, methods_dir = [], Path(methods_dir)
    paths = (sorted(methods_dir.glob("*/*/scores.csv"), key=natural_key)
             + sorted(methods_dir.glob("*/folds/*/*/scores.csv"), key=natural_key))
    for path in paths:  # <method>/<head>/scores.csv, or <method>/folds/<held-out domain>/<head>/scores.csv
        # class and domain names such as "NA" stay text; an untimed model's empty cost cells are NaN
        scores = pd.read_csv(path, keep_default_na=False, na_values={column: [""] for column in COST_COLUMNS})
        if scores.empty:
            continue
        method = method_from_folder(path.relative_to(methods_dir).parts[0])
        frames.append(scores.assign(method=method, head=path.parent.name))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def natural_key(text) -> list:
    """Sort key that orders the numbers inside names by value: ``FewShot_k5`` before ``FewShot_k10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def _pairs(scores: pd.DataFrame, protocol: str, variant: str, which: str) -> pd.DataFrame:
    rows = scores[(scores["protocol"] == protocol) & (scores["variant"] == variant)]
    same = rows["train_domain"] == rows["test_domain"]
    return rows[~same] if which == "cross" else rows[same] if which == "diagonal" else rows


def results_table(scores: pd.DataFrame, metrics: Sequence[str] = REPORT_METRICS) -> pd.DataFrame:
    """One row per (method, head); columns ``(report column, metric)`` holding ``(mean, std, n_seeds)`` over
    seeds of the per-seed mean over that column's pairs (fractions), NaN where the method did not run it."""
    records, index = [], []
    for (method, head), rows in scores.groupby(["method", "head"], sort=False):
        index.append((method, head))
        record = {}
        for column, (protocol, variant, which) in COLUMNS.items():
            pairs = _pairs(rows, protocol, variant, which)
            per_seed = pairs.groupby("seed")[list(metrics)].mean()
            for metric in metrics:
                values = per_seed[metric].to_numpy(dtype=float)
                record[(column, metric)] = (float(values.mean()), float(values.std()), len(values)) if len(values) \
                    else (np.nan, np.nan, 0)
        records.append(record)
    return pd.DataFrame(records, index=pd.MultiIndex.from_tuples(index, names=["method", "head"]),
                        columns=pd.MultiIndex.from_tuples(list(records[0]) if records else []))


def format_table(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``"mean ± std"`` percent strings of one metric for every report column (the mean alone from a single seed,
    whose std says nothing), ``"—"`` where not run."""
    shown = pd.DataFrame({column: table[(column, metric)].map(cell_text) for column in COLUMNS}, index=table.index)
    shown = shown.reset_index()
    shown.insert(2, TARGET_COLUMN, [target_data(method, head) for method, head in table.index])
    return shown


TARGET_COLUMN = "scored domain in training"


def cell_text(cell: tuple[float, float, int]) -> str:
    """A ``(mean, std, n_seeds)`` cell of :func:`results_table` as percent text: ``"mean ± std"``, the mean
    alone from a single seed (whose std says nothing), ``"—"`` where not run."""
    mean, std, n = cell
    return "—" if n == 0 else f"{100 * mean:.1f}" if n == 1 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def target_data(method: str, head: str) -> str:
    """What (method, head) saw of the domain it is scored on during training (:data:`TARGET_DATA`)."""
    if uses_target_labels(method, head):
        return TARGET_DATA.get(method, "labelled")
    return "none" if base_method(method) == "FewShot" else TARGET_DATA.get(method, "?")


def ranking(table: pd.DataFrame, by: tuple[str, str] = RANK_BY) -> pd.Series:
    """Mean of ``by`` per (method, head), best first, methods that did not run it left out."""
    means = table[by].map(lambda cell: cell[0])
    return means.dropna().sort_values(ascending=False)


def uses_target_labels(method: str, head: str) -> bool:
    """Whether (method, head) trains on labelled images of the domain it is scored on: the Oracle, and the
    few-shot fine-tuning with k > 0 (heads ``<name>_k<k>``)."""
    shots = re.search(r"_k(\d+)$", head)
    return base_method(method) == "Oracle" or (shots is not None and int(shots.group(1)) > 0)


def verdict(table: pd.DataFrame, reference: str = "AE-CFE", by: tuple[str, str] = RANK_BY) -> list[str]:
    """Plain sentences: the best and worst method, the best one that sees no label of the scored domain, and
    where ``reference`` (every head) ranks, with its gap to that label-free best."""
    ranked = ranking(table, by)
    if ranked.empty:
        return [f"No method has {by[0]} {by[1]} results."]
    name = lambda key: f"{key[0]} ({key[1]})"  # noqa: E731
    lines = [f"Ranked by {by[0]} {by[1].replace('_', '-')} (mean over seeds), {len(ranked)} method/head pairs.",
             f"Best: {name(ranked.index[0])} at {100 * ranked.iloc[0]:.1f} %; "
             f"worst: {name(ranked.index[-1])} at {100 * ranked.iloc[-1]:.1f} %."]
    label_free = ranked[[not uses_target_labels(*key) for key in ranked.index]]
    if len(label_free) < len(ranked) and len(label_free):
        lines.append(f"Best without labels of the held-out domain: {name(label_free.index[0])} at "
                     f"{100 * label_free.iloc[0]:.1f} % (the few-shot runs with k > 0 fine-tune on k labelled "
                     f"images per class of it).")
    best = label_free.iloc[0] if len(label_free) else ranked.iloc[0]
    for key, value in ranked.items():
        if key[0] == reference:
            position = list(ranked.index).index(key) + 1
            gap = 100 * (best - value)
            lines.append(f"{name(key)} ranks {position} of {len(ranked)} at {100 * value:.1f} %"
                         + (f", {gap:.1f} points behind the best label-free method." if gap > 0
                            else ", the best label-free method."))
    if not any(key[0] == reference for key in ranked.index):
        lines.append(f"{reference} has no {by[0]} results in this run.")
    return lines + input_verdict(ranked)


def input_verdict(ranked: pd.Series) -> list[str]:
    """One sentence per input (:func:`aecfe.comparison.plan.method_input`) that has ranked methods: its best
    method, and its best one without labels of the scored domain when that differs; only when the ranking
    holds deep baselines (whose input is a choice)."""
    if not any(base_method(method) in DG_METHODS for method, _ in ranked.index):
        return []
    name = lambda key: f"{key[0]} ({key[1]})"  # noqa: E731
    lines = []
    for dg_input in DG_INPUTS.values():
        mine = ranked[[method_input(method) == dg_input for method, _ in ranked.index]]
        if mine.empty:
            continue
        line = f"Best on the {dg_input} input: {name(mine.index[0])} at {100 * mine.iloc[0]:.1f} %"
        label_free = mine[[not uses_target_labels(*key) for key in mine.index]]
        if len(label_free) and label_free.index[0] != mine.index[0]:
            line += f"; without labels of the held-out domain: {name(label_free.index[0])} at " \
                    f"{100 * label_free.iloc[0]:.1f} %"
        lines.append(line + ".")
    return lines


def input_table(table: pd.DataFrame, metric: str = "f1_macro") -> pd.DataFrame:
    """The deep baselines on both inputs side by side: one row per (algorithm, head), per report column the
    whole-image and the crop score (``"mean ± std"``, as :func:`format_table`), and ``LODO crop − image``
    (difference of the means, points). Empty when no deep baseline ran."""
    rows = []
    for algorithm in DG_METHODS:
        methods = {key: dg_method(algorithm, key) for key in DG_INPUTS}
        heads = sorted({head for method, head in table.index if method in methods.values()}, key=natural_key)
        for head in heads:
            cells = {key: table.loc[(method, head)] if (method, head) in table.index else None
                     for key, method in methods.items()}
            row = {"algorithm": algorithm, "head": head}
            for column in ("one -> others", "same domain", "LODO"):
                for key, label in DG_INPUTS.items():
                    cell = cells[key]
                    row[f"{column}: {label}"] = "—" if cell is None else cell_text(cell[(column, metric)])
            means = [np.nan if cells[key] is None else cells[key][("LODO", metric)][0] for key in DG_INPUTS]
            row["LODO crop − image"] = "—" if np.isnan(means).any() else f"{100 * (means[1] - means[0]):+.1f}"
            rows.append(row)
    return pd.DataFrame(rows)


def few_shot_table(table: pd.DataFrame, metric: str = "f1_macro") -> pd.DataFrame:
    """Every method with few-shot heads (``<head>_k<k>``: the deep few-shot fine-tuning, the embedding heads of
    :mod:`aecfe.few_shot`), one row per (method, head) and one LODO column per k (``"mean ± std"`` percent, as
    :func:`format_table`); an embedding head's k = 0 is its plain LODO row when there is no ``_k0`` one. Empty when
    no method has few-shot heads."""
    found: dict[tuple[str, str], dict[int, tuple]] = {}
    for method, head in table.index:
        shots = re.search(r"^(.*)_k(\d+)$", head)
        if shots:
            cell = table.loc[(method, head)][("LODO", metric)]
            found.setdefault((method, shots.group(1)), {})[int(shots.group(2))] = cell
    for (method, base), cells in found.items():
        if 0 not in cells and (method, base) in table.index:
            cells[0] = table.loc[(method, base)][("LODO", metric)]
    ks = sorted({k for cells in found.values() for k in cells})
    rows = [{"method": method, "head": base, **{f"k={k}": cell_text(cells[k]) if k in cells else "—" for k in ks}}
            for (method, base), cells in sorted(found.items())]
    return pd.DataFrame(rows)


def cost_table(records: Mapping[str, StepRecord]) -> pd.DataFrame:
    """Per step: method, kind, wall time and peak resident memory of its process tree."""
    return pd.DataFrame([{"step": r.name, "method": r.method, "kind": r.kind, "wall (s)": round(r.wall_s, 1),
                          "peak RSS (MiB)": round(r.peak_rss_mb)} for r in records.values()])


def model_cost_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (method, head): the models it trained (distinct seed, protocol and training domain(s); the matrix
    variants score one model, each LODO variant trains its own) and, from the scores'
    :data:`aecfe.evaluation.COST_COLUMNS`, the median training time of one model and the median inference time
    per sample; NA where the scores carry no timings (written before they were timed, or predictions made
    outside the evaluation, like the few-shot fine-tuning's). A deep baseline whose step was interrupted and run
    again loads the models it had finished (``train_dg`` keeps them) with the training time their checkpoints
    recorded (NA for checkpoints written before that was recorded, which the median leaves out)."""
    rows = []
    for (method, head), trained in scores.groupby(["method", "head"], sort=True):
        training = trained["variant"].where(trained["protocol"] != "matrix", "")
        models = trained.assign(training=training).drop_duplicates(["seed", "protocol", "training", "train_domain"])
        rows.append({"method": method, "head": head, "models trained": len(models),
                     "train per model (s)": _median(models, "fit_s"),
                     "inference (ms/sample)": _median(trained, "predict_ms_per_sample")})
    return pd.DataFrame(rows).astype({"train per model (s)": "Float64", "inference (ms/sample)": "Float64"})


def _median(frame: pd.DataFrame, column: str) -> float:
    values = frame[column].dropna() if column in frame else pd.Series(dtype=float)
    return round(float(values.median()), 3) if len(values) else np.nan


def plot_extremes(scores: pd.DataFrame, table: pd.DataFrame, methods_dir: Path, out_dir: Path) -> list[Path]:
    """Confusion matrices (summed over seeds and LODO folds) of the best and the worst (method, head)."""
    from aecfe.plots import plot_confusion_matrix

    ranked = ranking(table)
    written = []
    for tag, key in (("best", ranked.index[0]), ("worst", ranked.index[-1])) if len(ranked) else ():
        path = methods_dir / method_folder(key[0]) / key[1] / "confusion.csv"
        if not path.exists():
            continue
        tidy = pd.read_csv(path, keep_default_na=False)
        protocol, variant, _ = COLUMNS[RANK_BY[0]]
        tidy = tidy[(tidy["protocol"] == protocol) & (tidy["variant"] == variant)]
        counts = tidy.pivot_table(index="true", columns="predicted", values="count", aggfunc="sum", fill_value=0)
        classes = sorted(set(counts.index) | set(counts.columns))
        counts = counts.reindex(index=classes, columns=classes, fill_value=0)
        written.append(plot_confusion_matrix(counts, out_dir / f"confusion_{tag}.png",
                                             title=f"{tag}: {key[0]} ({key[1]}), {RANK_BY[0]} folds summed"))
    return written


def copy_figures(sources: Mapping[str, Path], out_dir: Path) -> dict[str, Path]:
    """Copy the PNGs named in ``sources`` (report name -> file) that exist into ``out_dir``."""
    copied = {}
    for name, source in sources.items():
        if source is not None and Path(source).exists():
            slug = re.sub(r"[^\w.-]+", "_", name).strip("_")
            copied[name] = Path(shutil.copyfile(source, out_dir / f"{slug}.png"))
    return copied


def optional_section(frame: pd.DataFrame, csv_path: Path, title: str, intro: str) -> list[str]:
    """A report section (Markdown lines) of ``frame``, also written to ``csv_path``; none when it is empty."""
    if frame.empty:
        return []
    frame.to_csv(csv_path, index=False)
    return [f"## {title}", "", intro, "", frame.to_markdown(index=False), ""]


def write_report(out_dir: str | Path, methods_dir: str | Path, records: Mapping[str, StepRecord], *,
                 title: str, command: str, figures: Mapping[str, Path] = (), reference: str = "AE-CFE") -> Path:
    """Write ``report.md`` (+ ``results_<metric>.csv``, ``costs.csv`` and the PNGs) under ``out_dir``."""
    out_dir, methods_dir = Path(out_dir), Path(methods_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = collect_scores(methods_dir)
    lines = [f"# {title}", "", f"Command: `{command}`", ""]
    if scores.empty:
        lines += ["No method has finished yet."]
    else:
        table = results_table(scores)
        lines += ["## Verdict", ""] + [f"* {line}" for line in verdict(table, reference)] + [""]
        lines += ["Columns: **one -> others** = trained on one domain's training part, scored on every other whole "
                  "domain (thesis); **same domain** = scored on the training domain's own test part; **LODO** = "
                  "trained on all other domains, scored on the whole held-out one. Mean ± std over seeds, in % "
                  "(a mean without ± comes from one seed); — = not run for that method. LODO trains on every "
                  "sample of the other domains, so a deterministic head (linear; XGBoost without subsampling) "
                  "scores the same for every seed there (± 0.0). **scored domain in training**: what the method "
                  "saw of the domain it is scored on (for LODO the held-out one): *unlabelled (UDA)* = the "
                  "autoencoder trained on every domain's cells, the held-out one's included, without labels "
                  "(unsupervised domain adaptation, as in the thesis); *none* = domain generalisation (AE-CFE-DG "
                  "trains one autoencoder per fold without the held-out domain); the detector of the feature "
                  "methods may have been trained on images of these labs too (say so with the command).", ""]
        for metric in REPORT_METRICS:
            shown = format_table(table, metric)
            shown.to_csv(out_dir / f"results_{metric}.csv", index=False)
            lines += [f"## {metric.replace('_', '-')}", "", shown.to_markdown(index=False), ""]
        lines += optional_section(
            input_table(table), out_dir / "results_dg_inputs_f1_macro.csv",
            "Deep baselines: whole image vs detector crop (f1-macro)",
            "Each deep baseline with the same settings on the whole images and on the detector's crops of the store's "
            "labelled cells (the cells, labels and split groups of the feature methods' heads); — = not run on that "
            "input.")
        lines += optional_section(
            few_shot_table(table), out_dir / "results_few_shot_f1_macro.csv",
            "Few-shot: k labelled cells per class of the held-out lab (LODO f1-macro)",
            "Leave one lab out with k labelled cells (images) per class of the held-out lab added to the training "
            "set, scored on the rest of that lab: the deep few-shot fine-tuning (FewShot) and the embedding heads "
            "(`<head>`, the head refitted with the k cells: seconds); every method gets the same k images per class "
            "(`aecfe.splits.few_shot_selection`, by the images' content hash), on whole images and on crops.")
        extremes = plot_extremes(scores, table, methods_dir, out_dir)
        if extremes:
            lines += ["## Confusion matrices (LODO, folds and seeds summed)", ""]
            lines += [f"![{path.stem}]({path.name})" for path in extremes] + [""]
    copied = copy_figures(dict(figures), out_dir)
    if copied:
        lines += ["## Figures", ""] + [f"### {name}\n\n![{name}]({path.name})\n" for name, path in copied.items()]
    if records or not scores.empty:
        lines += ["## Cost on this machine", ""]
    if records:
        costs = cost_table(records)
        costs.to_csv(out_dir / "costs.csv", index=False)
        lines += ["Wall time and peak resident memory of each step's process (training and inference together; "
                  "evaluation and deep-baseline steps train every model of every seed and fold).", "",
                  costs.to_markdown(index=False), ""]
    if not scores.empty:
        per_model = model_cost_table(scores)
        per_model.to_csv(out_dir / "costs_per_model.csv", index=False)
        lines += ["Per model, medians over every trained model: the training of one model and its inference per "
                  "sample (the head on a stored embedding, or the network on an image). An embedding method's "
                  "inference on a new image also pays its extraction steps (detector; autoencoder or CNN "
                  "encoding).", "",
                  per_model.astype(object).where(per_model.notna(), "—").to_markdown(index=False), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    logger.info("report: %s", path)
    return path


def report_figures(config) -> dict[str, Path]:
    """UMAPs of the embeddings before (``ae_none``) and after (``ae_mmd``) alignment, and the last
    reconstruction grid of each autoencoder run, as report name -> PNG (``config``: a
    :class:`~aecfe.comparison.plan.ComparisonConfig`)."""
    from aecfe.plots import plot_embedding
    from aecfe.store import CellStore

    figures: dict[str, Path] = {}
    if config.store.exists():
        umap_dir = config.out / "umap"
        with CellStore.open(config.store) as store:
            names = store.embedding_names()
            for embedding, when in (("rcnn_roi", "RoI features"), ("ae_none", "before alignment"),
                                    ("ae_mmd", "after alignment (mmd)")):
                if embedding in names and store.embedding_progress(embedding) == len(store):
                    X, y, domains = store.arrays(embedding)
                    plot_embedding(X, domains, y, umap_dir, prefix=embedding)
                    for by in ("domain", "class"):
                        figures[f"UMAP {when} ({embedding}) by {by}"] = umap_dir / f"{embedding}_by_{by}.png"
    for run in sorted((config.out / "autoencoders").glob("*")):
        grids = sorted(run.glob("reconstructions_*.png"))
        if grids:
            figures[f"reconstructions ae_{run.name}"] = grids[-1]
    return figures
