"""Train a classifier head on a store's embedding and save it as a model bundle, with in-store validation scores.

:func:`train_classifier` reads the labelled cells of one embedding, relabels them into a label scheme
(:func:`aecfe.taxonomy.relabel`; the store holds canonical classes), scores a held-out split, fits the final
head on every labelled cell and writes the bundle (:func:`aecfe.bundle.save_bundle`).

Validation: every domain is split once (seed ``seed``) into 80 % training and 20 % test cells with
:func:`aecfe.splits.domain_splits`, grouped by the image's content hash (:meth:`~aecfe.store.CellStore.cell_groups`)
so no image, and no byte-identical copy of it, lands on both sides; a head fitted on the union of the training
parts is scored on the union of the test parts (overall and per domain, :mod:`aecfe.metrics`). These are
in-store (in-distribution) scores: they say whether the head learned, not how it transfers to another lab.
They are written beside the bundle as ``<bundle>.validation.json`` / ``.md`` / ``_per_class.csv`` and kept in
the bundle's provenance.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from aecfe.bundle import embedder_from_store, save_bundle
from aecfe.errors import InputError
from aecfe.splits import domain_splits
from aecfe.metrics import METRICS, classification_scores, per_class_report
from aecfe.identity import sha256_file
from aecfe.store import CellStore
from aecfe.store.readers import labelled_in_scheme
from aecfe.taxonomy import CANONICAL

logger = logging.getLogger(__name__)


def labelled_rows(store: CellStore, scheme: str = CANONICAL, label_dataset: str | None = CANONICAL
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, y, domains, groups)`` of the store's cells labelled under ``scheme``
    (:func:`aecfe.store.readers.labelled_in_scheme`, the selection every method uses) and their
    :meth:`~aecfe.store.CellStore.cell_groups`; rows (N,) int64 cell ids; y, domains, groups (N,) str."""
    rows, labels, domains = labelled_in_scheme(store, scheme, label_dataset)
    return rows, labels, domains, store.cell_groups()[rows]


def labelled_cells(store: CellStore, embedding: str, scheme: str = CANONICAL,
                   label_dataset: str | None = CANONICAL) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X, y, domains, groups)`` of the store's cells labelled under ``scheme`` (:func:`labelled_rows`).
    X (N, D) float32; y, domains, groups (N,) str."""
    X = store.embedding(embedding)
    rows, labels, domains, groups = labelled_rows(store, scheme, label_dataset)
    return X[rows], labels, domains, groups


def validation_scores(make_head, X, y, domains, groups, seed: int = 0, test_size: float = 0.2) -> dict:
    """Held-out scores of ``make_head()`` (module docstring): ``{"overall": {...}, "domains": {domain: {...}},
    "per_class": [rows], "n_train", "n_test", "test_size", "seed", "grouped_by": "image content hash"}``."""
    splits = domain_splits(y, domains, seed, test_size, groups=groups)
    train = np.concatenate([split.train for split in splits.values()])
    test = np.concatenate([split.test for split in splits.values()])
    if len(test) == 0 or len(train) == 0:
        raise InputError("too few labelled cells for a held-out split (every domain needs >= 2 images)")
    head = make_head().fit(X[train], y[train])
    predicted = head.predict(X[test])
    overall = classification_scores(y[test], predicted, head.classes_)
    per_domain = {}
    for domain in np.unique(domains[test]):
        rows = domains[test] == domain
        per_domain[str(domain)] = classification_scores(y[test][rows], predicted[rows], head.classes_)
    per_class = per_class_report(y[test], predicted, head.classes_)
    return {"overall": overall, "domains": per_domain, "per_class": per_class.to_dict(orient="records"),
            "n_train": int(len(train)), "n_test": int(len(test)), "test_size": test_size, "seed": seed,
            "grouped_by": "image content hash"}


def validation_markdown(scores: Mapping) -> str:
    """The validation scores as a Markdown table: one row overall, one per domain."""
    rows = [{"cells": "all", **{m: scores["overall"][m] for m in METRICS}, "n_test": scores["overall"]["n_test"]}]
    rows += [{"cells": domain, **{m: s[m] for m in METRICS}, "n_test": s["n_test"]}
             for domain, s in scores["domains"].items()]
    table = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f")
    return (f"In-store validation ({scores['n_train']} training / {scores['n_test']} held-out cells, "
            f"{int(scores['test_size'] * 100)} % of each domain's images held out, seed {scores['seed']}, "
            f"grouped by {scores['grouped_by']}):\n\n{table}\n")


def train_classifier(store_path: str | os.PathLike, embedding: str, out: str | os.PathLike, *,
                     detector_checkpoint: str | os.PathLike, head: str = "rf", head_params: Mapping | None = None,
                     class_weight: str | None = None, scheme: str = CANONICAL, label_dataset: str | None = CANONICAL,
                     autoencoder_checkpoint: str | os.PathLike | None = None, cnn_weights: str | None = None,
                     cnn_image_size: int | None = None, seed: int = 0, test_size: float = 0.2, command: str = "",
                     overwrite: bool = False) -> dict:
    """Fit a ``head`` on ``embedding`` of the store, write the bundle ``out`` and its validation files.

    ``detector_checkpoint`` must be the detector that made the store (its SHA-256 is checked against the
    store's provenance); the embedder is rebuilt by :func:`aecfe.bundle.embedder_from_store`. Returns the
    validation scores (:func:`validation_scores`).
    """
    from classifiers.heads import make_head

    params = {**(head_params or {}), **({"class_weight": class_weight} if class_weight else {})}
    make_head(head, **params)  # unknown names and parameters fail before any work
    with CellStore.open(store_path) as store:
        recorded = (store.provenance.get("detector") or {}).get("weights_sha256")
        if recorded and sha256_file(detector_checkpoint) != recorded:
            raise InputError(f"{detector_checkpoint}: not the detector that made {store_path} "
                             f"(the store records sha256 {recorded[:12]}...)")
        detector_options = (store.provenance.get("detector") or {}).get("config") or {}
        embedder = embedder_from_store(store, embedding, autoencoder_checkpoint=autoencoder_checkpoint,
                                       cnn_weights=cnn_weights, cnn_image_size=cnn_image_size)
        X, y, domains, groups = labelled_cells(store, embedding, scheme, label_dataset)
    scores = validation_scores(lambda: make_head(head, **params), X, y, domains, groups, seed, test_size)
    logger.info("validation: accuracy %.3f, F1-macro %.3f on %d held-out cells", scores["overall"]["accuracy"],
                scores["overall"]["f1_macro"], scores["n_test"])
    fitted = make_head(head, **params).fit(X, y)
    provenance = {"training_store": str(Path(store_path).resolve()), "training_store_sha256": sha256_file(store_path),
                  "embedding": embedding, "n_cells": int(len(y)), "command": command,
                  "class_counts": {str(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))},
                  "validation": {"overall": scores["overall"], "n_train": scores["n_train"],
                                 "n_test": scores["n_test"], "seed": seed}}
    out = save_bundle(out, fitted, detector_checkpoint=detector_checkpoint, embedder=embedder, scheme=scheme,
                      detector_options=detector_options, provenance=provenance, overwrite=overwrite)
    try:
        check_reproduces(out, store_path, embedding)
    except InputError:
        shutil.rmtree(out)
        raise
    write_validation(scores, out)
    return scores


def check_reproduces(bundle_path: str | os.PathLike, store_path: str | os.PathLike, embedding: str,
                     n_cells: int = 8, tolerance: float = 1e-3) -> float:
    """Recompute the first ``n_cells`` rows of ``embedding`` with the saved bundle's embedder; returns the
    largest difference relative to the rows' scale, :class:`InputError` above ``tolerance`` (the bundle would
    not see new cells as the head was trained to)."""
    from aecfe.bundle import load_bundle

    stage = load_bundle(bundle_path).embedding_stage()
    with CellStore.open(store_path) as store:
        rows = slice(0, min(n_cells, len(store)))
        stored, again = store.embedding(embedding, rows), stage.compute(store, rows)
    scale = max(float(np.abs(stored).max()), 1e-6)
    difference = float(np.abs(np.asarray(again) - stored).max()) / scale if len(stored) else 0.0
    if not difference <= tolerance:
        raise InputError(f"{bundle_path}: its embedder does not reproduce embedding {embedding!r} of {store_path} "
                         f"(relative difference {difference:.3g} on the first {rows.stop} cells)")
    return difference


def write_validation(scores: Mapping, bundle: str | os.PathLike) -> list[Path]:
    """``<bundle>.validation.json``, ``<bundle>.validation.md`` and ``<bundle>.validation_per_class.csv``."""
    bundle = Path(bundle)
    paths = [bundle.with_name(bundle.name + suffix) for suffix in
             (".validation.json", ".validation.md", ".validation_per_class.csv")]
    paths[0].write_text(json.dumps(scores, indent=2, default=str) + "\n", encoding="utf-8")
    paths[1].write_text(validation_markdown(scores), encoding="utf-8")
    pd.DataFrame(scores["per_class"]).to_csv(paths[2], index=False)
    return paths


