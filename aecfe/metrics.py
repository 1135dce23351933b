"""Classification metrics of one (trained on, tested on) evaluation, as the cross-domain tables report them.

Conventions (they matter across labs, where test sets miss classes and training sets miss others):

* ``accuracy`` and ``f1_micro`` are over all test samples. For single-label multi-class data micro-F1 equals
  accuracy; it is reported because the DG papers (SADA, BoDA) report it.
* ``f1_macro`` and ``balanced_accuracy`` average over the classes **present in the test set** (labels of
  ``y_true``): a class a lab never labelled cannot be scored there, and averaging a 0 for it would only
  measure the label-space mismatch. A test class the model never predicts has F1 0 (precision 0/0 -> 0).
  ``balanced_accuracy`` is the mean recall over those classes (what ``sklearn.metrics.balanced_accuracy_score``
  computes, without its warning about predicted classes absent from ``y_true``).
* Test classes absent from the training labels (the model cannot predict them) are named in
  ``classes_missing_in_train`` (``";"``-joined, sorted) and their samples counted in
  ``n_test_missing_in_train``; they stay in every metric (they are real errors of that transfer).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, recall_score

METRICS: tuple[str, ...] = ("accuracy", "f1_macro", "f1_micro", "balanced_accuracy")
"""Names of the scalar metrics :func:`classification_scores` returns, in report order."""

MISSING_SEPARATOR = ";"
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support", "n_predicted", "in_train", "in_test")


def classification_scores(y_true, y_pred, train_classes: Iterable) -> dict[str, float | int | str]:
    """The scalar metrics of one evaluation.

    Args:
        y_true, y_pred: (N,) labels, N >= 1.
        train_classes: the classes the model was trained on (its ``classes_``).

    Returns:
        dict with :data:`METRICS` (floats in [0, 1]) and ``n_test``, ``n_classes_test``,
        ``classes_missing_in_train`` (str, "" when none), ``n_test_missing_in_train``.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must be non-empty and of equal length, got {len(y_true)} "
                         f"and {len(y_pred)}")
    present = np.unique(y_true)
    missing = np.setdiff1d(present, np.asarray(list(train_classes), dtype=present.dtype))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "balanced_accuracy": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "n_test": int(len(y_true)),
        "n_classes_test": int(len(present)),
        "classes_missing_in_train": MISSING_SEPARATOR.join(map(str, missing)),
        "n_test_missing_in_train": int(np.isin(y_true, missing).sum()),
    }


def per_class_report(y_true, y_pred, train_classes: Iterable, classes: Iterable | None = None) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support of one evaluation.

    One row per class of ``classes`` (default: the sorted union of ``y_true``, ``y_pred`` and
    ``train_classes``), columns :data:`PER_CLASS_COLUMNS`. Undefined values are NaN, not 0: precision of a
    class never predicted, recall (and F1) of a class absent from the test set. ``in_train`` / ``in_test``
    mark whether the class was in the training labels / the test labels.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    train_classes = list(train_classes)
    if classes is None:
        classes = np.unique(np.concatenate([y_true, y_pred, np.asarray(train_classes, dtype=y_true.dtype)]))
    classes = np.asarray(list(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, average=None,
                                                                     zero_division=np.nan)
    predicted = (y_pred[:, None] == classes[None, :]).sum(axis=0)
    return pd.DataFrame({
        "class": classes, "precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64),
        "n_predicted": predicted.astype(np.int64), "in_train": np.isin(classes, train_classes),
        "in_test": support > 0,
    }, columns=list(PER_CLASS_COLUMNS))


def confusion(y_true, y_pred, classes: Iterable) -> pd.DataFrame:
    """Confusion counts (K, K): rows = true class, columns = predicted class, both in the order of ``classes``."""
    classes = list(classes)
    counts = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=classes)
    return pd.DataFrame(counts, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))

