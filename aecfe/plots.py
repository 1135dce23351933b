"""PNG figures of the evaluation: confusion matrices and 2-d embeddings (UMAP) coloured by domain and class.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas (no pyplot, no global backend
switch, no display needed); every function writes one PNG and returns its :class:`~pathlib.Path`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

MIN_UMAP_POINTS = 50
"""Below this many points :func:`embed_2d` uses PCA instead of UMAP (UMAP's 15-neighbour graph and spectral
initialisation are unreliable on a handful of points)."""


def plot_confusion_matrix(counts: pd.DataFrame | np.ndarray, path: str | Path, labels: Sequence[str] | None = None,
                          title: str = "") -> Path:
    """Write a confusion matrix normalised by true class (row %), each cell annotated with its count.

    Args:
        counts: (K, K) counts, rows = true class, columns = predicted class (a DataFrame from
            :func:`aecfe.metrics.confusion` carries its labels).
        path: PNG to write (parent folders are created).
        labels: class names (default: the DataFrame's index, else 0..K-1).
        title: figure title.

    Rows without samples (a class absent from the test set) are left blank.
    """
    if isinstance(counts, pd.DataFrame):
        labels = list(labels if labels is not None else counts.index)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"counts must be a square (K, K) matrix, got shape {counts.shape}")
    labels = [str(label) for label in (labels if labels is not None else range(len(counts)))]
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(totals > 0, counts / totals, np.nan)
    size = 1.2 + 0.6 * len(labels)
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(rates), cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="fraction of true class")
    for row, column in np.ndindex(counts.shape):
        if totals[row, 0] > 0:
            axes.text(column, row, f"{100 * rates[row, column]:.0f}%\n({counts[row, column]})", ha="center",
                      va="center", fontsize=7, color="white" if rates[row, column] > 0.6 else "black")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return _save(figure, path)


def embed_2d(X: np.ndarray, seed: int = 0, max_points: int = 5000,
             n_neighbors: int = 15) -> tuple[np.ndarray, np.ndarray, str]:
    """2-d coordinates of (a random subsample of) ``X`` (N, D) for scatter plots.

    At most ``max_points`` rows are kept (uniformly at random with ``seed``). UMAP (umap-learn,
    ``random_state=seed``) is used from :data:`MIN_UMAP_POINTS` points on; below that PCA, with a warning.

    Returns:
        ``(coords (n, 2) float, rows (n,) indices into X, method "umap" or "pca")``.
    """
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    rows = np.arange(len(X))
    if len(X) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(X), max_points, replace=False))
    data = X[rows]
    if len(data) >= MIN_UMAP_POINTS:
        import umap

        reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(data) - 1), random_state=seed, n_jobs=1)
        return reducer.fit_transform(data), rows, "umap"
    logger.warning("%d points are too few for UMAP (< %d): using PCA for the 2-d embedding", len(data),
                   MIN_UMAP_POINTS)
    from sklearn.decomposition import PCA

    n_components = min(2, len(data) - 1, data.shape[1])
    coords = np.zeros((len(data), 2))
    if n_components:
        coords[:, :n_components] = PCA(n_components=n_components, random_state=seed).fit_transform(data)
    return coords, rows, "pca"


def plot_scatter(coords: np.ndarray, groups: Sequence, path: str | Path, title: str = "",
                 legend_title: str = "") -> Path:
    """Write a 2-d scatter of ``coords`` (n, 2), one colour per distinct value of ``groups`` (n,)."""
    coords, groups = np.asarray(coords), np.asarray(groups).astype(str)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(groups):
        raise ValueError(f"coords must be (n, 2) and groups (n,), got {coords.shape} and {groups.shape}")
    names = sorted(set(groups.tolist()))
    figure = Figure(figsize=(7.5, 6), layout="constrained")
    axes = figure.add_subplot()
    colours = _colours(len(names))
    size = float(np.clip(3000 / max(len(coords), 1), 2, 30))
    for name, colour in zip(names, colours):
        chosen = groups == name
        axes.scatter(coords[chosen, 0], coords[chosen, 1], s=size, color=colour, label=f"{name} ({chosen.sum()})",
                     alpha=0.7, linewidths=0)
    axes.legend(title=legend_title, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title)
    return _save(figure, path)


def plot_embedding(X: np.ndarray, domains: Sequence, labels: Sequence, out_dir: str | Path, prefix: str = "umap",
                   seed: int = 0, max_points: int = 5000) -> list[Path]:
    """Embed ``X`` (N, D) in 2-d once (:func:`embed_2d`) and write ``<prefix>_by_domain.png`` and
    ``<prefix>_by_class.png`` under ``out_dir``; returns both paths."""
    domains, labels = np.asarray(domains), np.asarray(labels)
    if not len(X) == len(domains) == len(labels):
        raise ValueError(f"X, domains and labels must have the same length, got {len(X)}, {len(domains)}, "
                         f"{len(labels)}")
    coords, rows, method = embed_2d(X, seed=seed, max_points=max_points)
    shown = f"{len(rows)} of {len(X)} cells" if len(rows) < len(X) else f"{len(X)} cells"
    out_dir = Path(out_dir)
    return [plot_scatter(coords, values[rows], out_dir / f"{prefix}_by_{name}.png",
                         title=f"{method.upper()} of {shown}, coloured by {name}", legend_title=name)
            for name, values in (("domain", domains), ("class", labels))]


def _colours(n: int) -> list:
    """n distinguishable colours: tab10 up to 10, tab20 up to 20, then a sampled continuous map."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


CURVE_PANELS = (("feature", "feature loss (MSE, or unexplained variance)"), ("image", "1 - SSIM"), ("alignment", "alignment (unweighted)"),
                ("code_std", "code std (mean over dims)"), ("effective_rank", "code effective rank"),
                ("probe_f1_macro", "in-lab linear-probe F1-macro (%)"),
                ("domain_accuracy", "domain-probe balanced accuracy (%)"))


def plot_learning_curves(runs: dict[str, Sequence[dict]], path: str | Path, x: str = "cells_seen") -> Path:
    """Per-epoch learning curves of one or more autoencoder runs (records of ``curves.jsonl``), one panel per
    quantity of :data:`CURVE_PANELS`, against ``x`` (``"cells_seen"``, ``"train_seconds"`` or ``"epoch"``).

    ``runs`` maps a run's name to its records; a quantity a run did not log is left out of its panel.
    """
    figure = Figure(figsize=(4.2 * 4, 3.4 * 2), layout="constrained")
    axes = figure.subplots(2, 4).ravel()
    colours = _colours(len(runs))
    for ax, (key, title) in zip(axes, CURVE_PANELS):
        for colour, (name, records) in zip(colours, runs.items()):
            points = [(r[x], r[key]) for r in records if r.get(key) is not None and np.isfinite(r[key])]
            if points:
                ax.plot(*zip(*points), marker=".", color=colour, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(x.replace("_", " "), fontsize=8)
        if key in ("feature", "code_std"):
            ax.set_yscale("log")
    axes[-1].axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[-1].legend(handles, labels, loc="center", fontsize=8)
    return _save(figure, path)
