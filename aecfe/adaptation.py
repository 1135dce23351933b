"""Adapt a model bundle to a new lab (the job behind ``aecfe-adapt``): the AE-CFE way to meet a lab that did not
train it.

:func:`adapt_bundle` runs, into ``out``:

1. **extract** the new lab's cells with the bundle's detector into ``cells.h5`` (resumable,
   :func:`aecfe.pipeline.run_extraction`), with the bundle's own embedding too (the "before" scores);
2. **continue training** the bundle's autoencoder (its weights; a fresh optimizer) on the source training store's
   cells plus every new-lab cell, the new lab being one more domain (id K after the K source domains, the source's
   alignment source staying id 0): the alignment loss pulls the new lab's codes onto the source's
   (:func:`aecfe.store.training_cells.load_joined_training_cells`; the new lab's labels, if any, are
   hidden); run folder ``autoencoder/`` (``checkpoint.pt``, curves);
3. **re-encode** both stores with the adapted autoencoder (the new lab's codes are written into ``cells.h5`` as
   ``<embedding>_adapted_<first 8 hex of the checkpoint's SHA-256>``; the source's are computed in memory, the
   source store is only read);
4. **refit** a fresh copy of the bundle's head (same class and hyper-parameters) on the source's labelled cells
   in the bundle's label scheme, plus labelled new-lab cells: those of ``labels_file`` (``bundle/``), or, to
   measure, the k labelled cells per class of :func:`aecfe.splits.few_shot_selection` for each k of ``shots``
   (``bundle_k<k>/``, the new lab's images must be labelled);
5. **write** the new bundle (:func:`aecfe.bundle.save_bundle`), its provenance saying it was adapted, from which
   bundle (path and manifest SHA-256), on which images, with which labelled cells; checked to reproduce the
   stored codes (:func:`aecfe.classifier_training.check_reproduces`).

When the new lab's cells carry labels, each k is scored on the new lab's cells outside the shots' image groups
(F1-macro, accuracy; the same rows for the bundle's own embedding refitted the same way, "before"): ``few_shot.csv``
/ ``few_shot.md``; ``adaptation.json`` holds the report (wall times of every step included).

The labels file (``--labels``): CSV with a header, columns ``image`` (the image path, absolute or relative to the
file's folder), ``class`` and optional ``cell_index`` (needed when the image has several cells). A row naming an
image not in the store, a cell index the image does not have, an image with several cells and no cell index, or a
class the bundle does not know (a canonical class is mapped by the bundle's scheme; anything else is never mapped)
is skipped, counted by reason in the report; a file without the columns, or with no usable row, is an
:class:`~aecfe.errors.InputError` naming it.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from aecfe.bundle import Bundle, embedder_from_store, save_bundle
from aecfe.errors import InputError
from aecfe.identity import sha256_file
from aecfe.io import identity_path
from aecfe.pipeline import ImageList, run_extraction
from aecfe.taxonomy import CANONICAL, load_taxonomy

logger = logging.getLogger(__name__)

STORE_NAME = "cells.h5"
ADAPTED_SUFFIX = "_adapted"
TARGET_DOMAIN = "new_lab"
"""The new lab's domain name in the autoencoder's training (one domain, whatever its folders)."""
LABEL_COLUMNS = ("image", "class")


@dataclasses.dataclass
class TargetLabels:
    """Labelled new-lab cells: ``rows`` (n,) cell ids of the new store, ``labels`` (n,) classes of the bundle,
    ``skipped`` ({reason: rows}), ``mapped`` (rows whose canonical class the bundle's scheme renamed)."""

    rows: np.ndarray
    labels: np.ndarray
    skipped: dict
    mapped: int = 0


def bundle_class(label: str, bundle_classes: Sequence[str], scheme: str) -> tuple[str | None, bool, str]:
    """``(class, renamed, why not)``: ``label`` when the bundle knows it; a canonical class mapped by ``scheme`` when
    that lands on a bundle class; else ``(None, False, reason)``: ``"class unknown to the bundle"`` or ``"class
    dropped by scheme <scheme>"`` (never mapped onto another class)."""
    if label in bundle_classes:
        return label, False, ""
    try:
        mapped = load_taxonomy(CANONICAL, scheme).map([label])[0]
    except InputError:
        return None, False, "class unknown to the bundle"
    if mapped is None:
        return None, False, f"class dropped by scheme {scheme}"
    return (mapped, True, "") if mapped in bundle_classes else (None, False, "class unknown to the bundle")


def read_labels_file(path: str | os.PathLike, cells: pd.DataFrame, bundle_classes: Sequence[str],
                     scheme: str) -> TargetLabels:
    """The labelled cells named by a labels CSV (module docstring) among the store's ``cells`` frame
    (:meth:`aecfe.store.CellStore.cells`: ``image_path``, ``cell_index``; row number = cell id)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: cannot read the labels file ({error})") from error
    missing = [column for column in LABEL_COLUMNS if column not in header]
    if missing:
        raise InputError(f"{path}: the labels file needs a header with columns {list(LABEL_COLUMNS)} "
                         f"(+ optional cell_index); missing {missing}")
    by_image: dict[str, list[tuple[int, int]]] = {}
    for cell_id, (image, index) in enumerate(zip(cells["image_path"].astype(str), cells["cell_index"])):
        by_image.setdefault(image, []).append((int(index), cell_id))
    chosen, labels, skipped, mapped = {}, {}, {}, 0

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for row in rows:
        image = (row.get("image") or "").strip()
        target = identity_path(path.parent / image) if image else None
        found = by_image.get(str(target)) if target else None
        if not found:
            skip("image not in the store")
            continue
        label, renamed, why = bundle_class((row.get("class") or "").strip(), bundle_classes, scheme)
        if label is None:
            skip(why)
            continue
        index_text = (row.get("cell_index") or "").strip()
        if index_text:
            try:
                index = int(index_text)
            except ValueError:
                skip("cell_index not an integer")
                continue
            cell_ids = [cell for i, cell in found if i == index]
            if not cell_ids:
                skip("cell_index not a cell of the image")
                continue
        elif len(found) > 1:
            skip("image has several cells and no cell_index")
            continue
        else:
            cell_ids = [found[0][1]]
        if cell_ids[0] in chosen and labels[cell_ids[0]] != label:
            skip("cell named twice with different classes")
            continue
        chosen[cell_ids[0]], labels[cell_ids[0]] = True, label
        mapped += renamed
    if not chosen:
        raise InputError(f"{path}: no usable labelled cell ({len(rows)} rows; skipped: {skipped or 'none'})")
    ids = np.asarray(sorted(chosen), dtype=np.int64)
    return TargetLabels(ids, np.asarray([labels[i] for i in ids], dtype=str), dict(sorted(skipped.items())), mapped)


def store_labels(cells: pd.DataFrame, bundle_classes: Sequence[str], scheme: str) -> TargetLabels:
    """The new store's own labelled cells (class-folder inputs) in the bundle's classes, for measuring; cells whose
    class the bundle does not know (or the scheme drops) are counted in ``skipped``, never mapped elsewhere."""
    rows, labels, skipped, mapped = [], [], {}, 0
    for cell_id, label in enumerate(cells["label"]):
        if not isinstance(label, str) or not label:
            continue
        name, renamed, why = bundle_class(label, bundle_classes, scheme)
        if name is None:
            key = f"{why}: {label}"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        rows.append(cell_id)
        labels.append(name)
        mapped += renamed
    return TargetLabels(np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=str), skipped, mapped)


def continue_training(bundle: Bundle, source_store: str | os.PathLike, target_store: str | os.PathLike,
                      out: str | os.PathLike, *, epochs: int, trainer_options: Mapping | None = None,
                      device: str = "cpu", max_memory_gb: float = 2.0, progress: bool = True) -> tuple[Path, list[str]]:
    """Train the bundle's autoencoder on for ``epochs`` epochs on the source store's cells plus the target store's
    (one more domain); returns the checkpoint (``out/checkpoint.pt``) and the domain names in id order.

    The model starts from the bundle's weights with a fresh optimizer; the trainer settings are the bundle's
    (``trainer_config``) except: ``image_from_epoch`` = ``epochs`` (the cheap path only: encoder, feature decoder
    and alignment; the codes come from the encoder) and ``beta_warmup_epochs`` = 0 (the model is trained: the
    alignment acts at full weight from the first step), then ``trainer_options`` (e.g. ``{"lr": 1e-4,
    "image_from_epoch": 8}``) and ``epochs`` replace theirs. The alignment source (id 0) is the source domain of the
    bundle's embedding (its ``domain_ids``), else the first source domain in sorted order.
    """
    import torch

    from aecfe.checkpoints import read_checkpoint
    from aecfe.store import CellStore
    from aecfe.store.training_cells import load_joined_training_cells
    from extractors.autoencoder import AECFEAutoencoder, AutoencoderConfig
    from extractors.trainer import CHECKPOINT_FORMAT, AutoencoderTrainer, TrainerConfig

    state = read_checkpoint(bundle.autoencoder_checkpoint, CHECKPOINT_FORMAT, "bundle autoencoder")
    adapting = {"image_from_epoch": epochs, "beta_warmup_epochs": 0.0}  # cheap path, alignment at full weight
    config = TrainerConfig.from_dict({**state["trainer_config"], **adapting, **dict(trainer_options or {}),
                                      "epochs": epochs, "progress": progress})
    with CellStore.open(source_store) as store:
        recorded = (store.embedding_attrs(bundle.embedding_name).get("domain_ids")
                    if bundle.embedding_name in store.embedding_names() else None)
    data, names = load_joined_training_cells(source_store, target_store, source=(recorded or [None])[0],
                                             target_domain=TARGET_DOMAIN, max_memory_gb=max_memory_gb,
                                             seed=config.seed)
    logger.info("adapting on %d cells, domains %s (id = position)", len(data), names)
    torch.manual_seed(config.seed)
    model = AECFEAutoencoder(AutoencoderConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.to(torch.device(device))
    out = Path(out)
    trainer = AutoencoderTrainer(model, config, n_domains=len(names), out_dir=out)
    try:
        trainer.fit(data)
    finally:
        data.close()
    checkpoint = out / "checkpoint.pt"
    if not checkpoint.exists() or epochs == 0:
        trainer.save_checkpoint(checkpoint)
    return checkpoint, names


def stage_codes(stage, store_path: str | os.PathLike, rows: np.ndarray, block: int = 1024) -> np.ndarray:
    """An embedding stage's codes (len(rows), D) of the cells ``rows`` of a store, computed and kept in memory
    (the store is only read)."""
    from aecfe.store import CellStore

    rows = np.asarray(rows, dtype=np.int64)
    parts = []
    with CellStore.open(store_path) as store:
        for start in range(0, len(store), block):
            wanted = rows[(rows >= start) & (rows < start + block)]
            if len(wanted):
                codes = np.asarray(stage.compute(store, slice(start, min(start + block, len(store)))))
                parts.append(codes[wanted - start])
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


@dataclasses.dataclass
class Embedded:
    """One embedding of the source's labelled cells and of every new-lab cell: ``source_X`` (n_s, D),
    ``source_y`` (n_s,), ``target_X`` (n_t, D) (row = new store's cell id)."""

    name: str
    source_X: np.ndarray
    source_y: np.ndarray
    target_X: np.ndarray


def embed_both(stage, bundle: Bundle, source_store: str | os.PathLike, target_store: str | os.PathLike) -> Embedded:
    """``stage``'s codes of the source store's cells labelled with a bundle class (in the bundle's scheme; computed
    in memory, the source store is only read) and of every new-lab cell (the target store's embedding
    ``stage.name``, written already)."""
    from aecfe.classifier_training import labelled_rows
    from aecfe.store import CellStore

    with CellStore.open(source_store) as store:
        rows, source_y, _, _ = labelled_rows(store, bundle.scheme, CANONICAL)
    known = np.isin(source_y, bundle.classes)
    with CellStore.open(target_store) as store:
        target_X = store.embedding(stage.name)
    return Embedded(stage.name, stage_codes(stage, source_store, rows[known]), source_y[known], target_X)


def fit_head(bundle: Bundle, embedded: Embedded, target_rows: np.ndarray, target_labels: np.ndarray):
    """A fresh copy of the bundle's head (same class and hyper-parameters) fitted on the source's labelled cells
    plus the new-lab cells ``target_rows`` labelled ``target_labels``; returns (head, fit seconds)."""
    from sklearn.base import clone

    X = np.concatenate([embedded.source_X, embedded.target_X[target_rows]])
    y = np.concatenate([embedded.source_y, np.asarray(target_labels, dtype=str)])
    started = time.perf_counter()
    head = clone(bundle.head).fit(X, y)
    return head, time.perf_counter() - started


def adapt_bundle(bundle: Bundle, listing: ImageList, out: str | os.PathLike, *,
                 source_store: str | os.PathLike | None = None, labels_file: str | os.PathLike | None = None,
                 shots: Sequence[int] = (), seeds: Sequence[int] = (0,), epochs: int = 10,
                 trainer_options: Mapping | None = None,
                 device: str = "cpu", batch_size: int = 4, encode_batch: int = 256, max_memory_gb: float = 2.0,
                 command: str = "", overwrite: bool = False, progress: bool = True) -> dict:
    """Adapt ``bundle`` to ``listing``'s images into ``out`` (module docstring); returns the report
    (``adaptation.json``). ``source_store``: the store the bundle was trained on (default the path its provenance
    records); ``shots``: k values to measure (each writes ``bundle_k<k>`` with the shots of the first seed);
    ``seeds``: the shots' selection seeds (each k is scored per seed)."""
    from aecfe.classifier_training import check_reproduces
    from aecfe.few_shot import shot_split
    from aecfe.splits import SHOT_SELECTION
    from aecfe.store import CellStore, autoencoder_stage, write_embedding

    if bundle.autoencoder_checkpoint is None:
        raise InputError(f"{bundle.path}: its embedder is {bundle.description['embedder']['kind']!r}; adapting needs "
                         "an autoencoder bundle (the unlabelled cells train the autoencoder)")
    if labels_file is not None and shots:
        raise InputError("give either a labels file or shots to measure, not both")
    if any(k < 0 for k in shots) or not seeds:
        raise InputError(f"shots must be k >= 0 and seeds at least one, got {list(shots)} and {list(seeds)}")
    seeds = list(seeds)
    provenance = bundle.description["provenance"]
    source_store = Path(source_store or provenance.get("training_store") or "")
    if not source_store.is_file():
        raise InputError(f"{source_store}: the bundle's training store is not there; give it (--source-store)")
    source_sha256 = sha256_file(source_store)
    source_matches = source_sha256 == provenance.get("training_store_sha256")
    if not source_matches:
        logger.warning("%s: not byte-identical to the store %s was trained on (changed since?); adapting on it",
                       source_store, bundle.path)
    out = Path(out)
    targets = {"bundle": out / "bundle"} if not shots else {f"bundle_k{k}": out / f"bundle_k{k}" for k in shots}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]}: exists already; choose another --out or overwrite")
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    started = time.perf_counter()
    store_path = out / STORE_NAME
    extraction = run_extraction(listing, store_path, detector_factory=lambda: bundle.detector(device),
                                detector_identity=bundle.detector_identity(), batch_size=batch_size,
                                embeddings=[bundle.embedding_stage(device, encode_batch)], progress=progress)
    times["extract_s"] = time.perf_counter() - started
    with CellStore.open(store_path) as store:
        cells, groups = store.cells(), store.cell_groups()
    if len(cells) == 0:
        raise InputError(f"{store_path}: no cell found in the new lab's images; nothing to adapt to")
    if labels_file is not None:
        given = read_labels_file(labels_file, cells, bundle.classes, bundle.scheme)
    else:
        given = store_labels(cells, bundle.classes, bundle.scheme)
        if shots and any(k > 0 for k in shots) and not len(given.rows):
            raise InputError("measuring shots > 0 needs labelled new-lab images (class folders); these have no "
                             "label the bundle knows")

    started = time.perf_counter()
    checkpoint, domain_names = continue_training(bundle, source_store, store_path, out / "autoencoder",
                                                 epochs=epochs, trainer_options=trainer_options, device=device,
                                                 max_memory_gb=max_memory_gb, progress=progress)
    times["autoencoder_s"] = time.perf_counter() - started
    started = time.perf_counter()
    adapted_name = f"{bundle.embedding_name}{ADAPTED_SUFFIX}_{sha256_file(checkpoint)[:8]}"  # one name per model
    stage = autoencoder_stage(checkpoint, adapted_name, encode_batch, device=device,
                              extra_attrs={"domain_ids": domain_names, "adapted_from": str(bundle.path)})
    write_embedding(store_path, stage, progress=progress)
    embedded = {"adapted": embed_both(stage, bundle, source_store, store_path),
                "bundle": embed_both(bundle.embedding_stage(device, encode_batch), bundle, source_store, store_path)}
    source_y = embedded["adapted"].source_y
    times["encode_s"] = time.perf_counter() - started
    with CellStore.open(store_path) as store:
        embedder = embedder_from_store(store, adapted_name, autoencoder_checkpoint=checkpoint)

    base_provenance = {
        "adapted": True, "adapted_from": {"bundle": str(Path(bundle.path).resolve()),
                                          "manifest_sha256": sha256_file(Path(bundle.path) / "manifest.json"),
                                          "embedding": bundle.embedding_name},
        "adapted_on": {"images": len(listing.images), "sources": list(listing.sources),
                       "store": str(store_path.resolve()), "cells": int(len(cells))},
        "training_store": str(source_store.resolve()), "training_store_sha256": source_sha256,
        "training_store_matches_bundle": bool(source_matches), "embedding": adapted_name,
        "autoencoder": {"epochs": epochs, "options": dict(trainer_options or {}), "domains": domain_names},
        "command": command, "n_cells": int(len(source_y))}
    bundles = {}
    plan = [("bundle", None)] if not shots else [(f"bundle_k{k}", k) for k in shots]
    for name, k in plan:
        if k is None:  # the labels file's cells (none without one: the new lab's own labels are never used)
            chosen, chosen_labels = (given.rows, given.labels) if labels_file else (given.rows[:0], given.labels[:0])
            note = {"labels_file": None if labels_file is None else str(Path(labels_file).resolve()),
                    "target_labelled_cells": int(len(chosen)),
                    "labels_skipped": given.skipped if labels_file else {}}
        else:
            local, _ = shot_split(given.labels, groups[given.rows], np.arange(len(given.rows)), k, seeds[0])
            chosen, chosen_labels = given.rows[local], given.labels[local]
            note = {"shots_per_class": k, "shot_seed": seeds[0], "shot_selection": SHOT_SELECTION,
                    "target_labelled_cells": int(len(chosen))}
        head, _ = fit_head(bundle, embedded["adapted"], chosen, chosen_labels)
        path = save_bundle(targets[name], head, detector_checkpoint=bundle.detector_checkpoint, embedder=embedder,
                           scheme=bundle.scheme, detector_options=bundle.preprocessing,
                           provenance={**base_provenance, **note,
                                       "class_counts": _counts(np.concatenate([source_y, chosen_labels]))},
                           overwrite=overwrite)
        check_reproduces(path, store_path, adapted_name)
        bundles[name] = str(path)
    rows_out = measure_shots(bundle, embedded, given, groups, shots, seeds) if shots else []
    report = {"bundle": str(bundle.path), "out": str(out), "store": str(store_path), "device": device,
              "bundles": bundles, "source_store": str(source_store), "source_store_matches_bundle": source_matches,
              "domains": domain_names, "epochs": epochs, "new_lab_cells": int(len(cells)),
              "labelled_new_lab_cells": int(len(given.rows)), "labels_skipped": given.skipped,
              "labels_mapped_by_scheme": given.mapped, "extraction_totals": extraction["totals"],
              "wall_s": {key: round(value, 2) for key, value in times.items()}, "few_shot": rows_out}
    if rows_out:
        table = pd.DataFrame(rows_out)
        table.to_csv(out / "few_shot.csv", index=False)
        (out / "few_shot.md").write_text(few_shot_markdown(table, report["wall_s"]), encoding="utf-8")
    (out / "adaptation.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report


def measure_shots(bundle: Bundle, embedded: Mapping[str, Embedded], given: TargetLabels, groups: np.ndarray,
                  shots: Sequence[int], seeds: Sequence[int]) -> list[dict]:
    """Per seed, k and embedding (``"bundle"``: the bundle's autoencoder, ``"adapted"``): a fresh copy of the
    bundle's head fitted on the source plus the k shots per class (:func:`aecfe.few_shot.shot_split` of the
    labelled new-lab cells ``given``, ``groups`` the new store's cell groups), scored on the new lab's labelled cells
    outside the shots' images: rows ``{embedding, seed, k, f1_macro, accuracy, n_shots, n_scored, head_fit_s}``."""
    from aecfe.few_shot import shot_split
    from aecfe.metrics import classification_scores

    rows = []
    for seed in seeds:
        for k in shots:
            local, scored = shot_split(given.labels, groups[given.rows], np.arange(len(given.rows)), k, seed)
            if not len(scored):
                continue
            for which, emb in embedded.items():
                head, seconds = fit_head(bundle, emb, given.rows[local], given.labels[local])
                predicted = head.predict(emb.target_X[given.rows[scored]])
                result = classification_scores(given.labels[scored], predicted, head.classes_)
                rows.append({"embedding": which, "seed": seed, "k": k, "f1_macro": result["f1_macro"],
                             "accuracy": result["accuracy"], "n_shots": int(len(local)), "n_scored": int(len(scored)),
                             "head_fit_s": round(seconds, 3)})
    return rows


def few_shot_markdown(table: pd.DataFrame, wall_s: Mapping[str, float]) -> str:
    """F1-macro and accuracy (%, mean ± std over seeds) per k, the bundle's embedding vs the adapted one, with the
    wall times."""
    def cell(values: pd.Series) -> str:
        return f"{100 * values.mean():.1f}" + (f" ± {100 * values.std(ddof=0):.1f}" if len(values) > 1 else "")

    grouped = table.groupby(["k", "embedding"], sort=True)
    shown = pd.DataFrame({"F1-macro": grouped["f1_macro"].agg(cell), "accuracy": grouped["accuracy"].agg(cell),
                          "shots": grouped["n_shots"].mean().round(1), "scored": grouped["n_scored"].mean().round(1),
                          "seeds": grouped["seed"].nunique()}).reset_index()
    times = ", ".join(f"{key.removesuffix('_s')} {value:.1f} s" for key, value in wall_s.items())
    return ("New lab's cells outside the shots' images, k labelled cells per class added to the head (F1-macro and "
            "accuracy in %, mean ± std over the selection seeds; embedding 'bundle' = the bundle's autoencoder, "
            f"'adapted' = after adaptation).\n\n{shown.to_markdown(index=False)}\n\nWall time: {times}.\n")


def _counts(labels: np.ndarray) -> dict:
    return {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
