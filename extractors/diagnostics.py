"""What a code holds: spread, effective rank, and cheap linear probes of class and domain information.

A falling total loss does not show that an autoencoder learns: the reference moment-matching alignment is
minimised by a constant code, which reaches the feature MSE of the mean cell and carries nothing (DESIGN, "Lessons
about the autoencoder"). These numbers, computed every epoch by the trainer on a fixed set of cells, show it:

* :func:`code_statistics` — per-dimension standard deviation (mean and minimum over dimensions) and the effective
  rank of the centred codes (Roy & Vetterli 2007: exp of the entropy of the normalised singular values; D for
  isotropic codes, 1 for codes on a line, → 0 spread for a constant code);
* :func:`linear_probe` — in-lab macro-F1 of a logistic regression on the codes (per domain, a fixed stratified
  half/half split, averaged over domains) and the balanced accuracy of a logistic regression that predicts the
  domain (lower = better mixed labs; chance = 1/number of domains);
* :func:`collapse_warning` — a message when the spread or the rank falls towards zero.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

COLLAPSE_STD = 0.02
"""Mean per-dimension std below which a code counts as collapsed (tanh codes span ±1; live codes spread 0.1-0.5)."""
COLLAPSE_RANK = 2.0
"""Effective rank below which a code counts as collapsed onto a line."""
CONSTANT_STD = 1e-6
"""Largest per-dimension std of a code that counts as constant (float32 rounding of a constant is far below)."""


def effective_rank(codes: np.ndarray) -> float:
    """exp(H(p)) with p_i = s_i / Σ s of the singular values s of the centred codes (N, D); 0 for a constant code."""
    centred = np.asarray(codes, dtype=np.float64) - np.mean(codes, axis=0)
    if len(codes) < 2 or centred.std(axis=0).max(initial=0.0) < CONSTANT_STD:
        return 0.0
    singular = np.linalg.svd(centred, compute_uv=False)
    p = singular[singular > 0] / singular.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def code_statistics(codes: np.ndarray) -> dict[str, float]:
    """``code_std`` (mean over dimensions of the per-dimension std), ``code_std_min`` and ``effective_rank``."""
    std = np.asarray(codes, dtype=np.float64).std(axis=0)
    return {"code_std": float(std.mean()), "code_std_min": float(std.min()), "effective_rank": effective_rank(codes)}


def collapse_warning(statistics: dict[str, float]) -> str | None:
    """A warning text when the code's spread or rank has collapsed (see ``COLLAPSE_STD``, ``COLLAPSE_RANK``)."""
    if statistics["code_std"] < COLLAPSE_STD or statistics["effective_rank"] < COLLAPSE_RANK:
        return (f"CODE COLLAPSE: per-dimension std {statistics['code_std']:.4f} (warning below {COLLAPSE_STD}), "
                f"effective rank {statistics['effective_rank']:.2f} (below {COLLAPSE_RANK}): the code is "
                "turning constant and carries little information; lower the alignment weight beta or measure the "
                "reconstruction as unexplained variance (feature_loss='fvu', the default recipe)")
    return None


def _probe_model(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=seed))


def _half_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(len(labels))
    counts = np.unique(labels, return_counts=True)[1]
    stratify = labels if counts.min() >= 2 else None
    return train_test_split(index, test_size=0.5, random_state=seed, stratify=stratify)


def linear_probe(codes: np.ndarray, labels: np.ndarray, domains: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Linear probes of codes (N, D): ``probe_f1_macro`` (in-lab, %) and ``domain_accuracy`` (balanced, %).

    ``labels`` (N,) ints, −1 for unlabelled cells (left out of the class probe); ``domains`` (N,) ints. The class
    probe trains on one half of each domain's labelled cells and scores macro-F1 on the other half (domains with
    fewer than 4 labelled cells or one class are skipped; NaN when none is left); the domain probe does the same on
    all cells with the domain as target (NaN with a single domain). Features are standardised first, so the probes
    see the code's structure, not its scale.
    """
    codes, labels, domains = np.asarray(codes), np.asarray(labels), np.asarray(domains)
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true" on tiny splits
        for domain in np.unique(domains):
            rows = np.flatnonzero((domains == domain) & (labels >= 0))
            if len(rows) < 4 or len(np.unique(labels[rows])) < 2:
                continue
            train, test = _half_split(labels[rows], seed)
            if len(np.unique(labels[rows[train]])) < 2:
                continue
            model = _probe_model(seed).fit(codes[rows[train]], labels[rows[train]])
            scores.append(f1_score(labels[rows[test]], model.predict(codes[rows[test]]), average="macro",
                                   zero_division=0))
        domain_accuracy = float("nan")
        if len(np.unique(domains)) > 1:
            train, test = _half_split(domains, seed)
            model = _probe_model(seed).fit(codes[train], domains[train])
            domain_accuracy = 100 * balanced_accuracy_score(domains[test], model.predict(codes[test]))
    return {"probe_f1_macro": 100 * float(np.mean(scores)) if scores else float("nan"),
            "domain_accuracy": domain_accuracy}
