"""A run's store: create it with the run's provenance, reopen it to resume (the same provenance only), and the
run report computed from its committed content.

* :func:`open_existing_store` / :func:`create_run_store` / :func:`open_or_create_store` — a resumed run must
  bring the provenance the store was created with (detector identity, shard); an empty store left by a run that
  failed before its first commit is replaced.
* :func:`extraction_report` / :func:`store_report` — images read, cells found, images skipped and why, per
  domain, embeddings' progress, byte-identical images; right after any number of resumed runs.
  :func:`write_report` writes it as JSON beside the store (:func:`report_path`), :func:`format_report` gives the
  log's lines.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping

from aecfe.atomic import write_text_atomic
from aecfe.errors import StoreError
from aecfe.io import SkipCounter, duplicate_summary, find_duplicates, log_duplicates
from aecfe.shapes import CROP_SHAPE, ROI_SHAPE
from aecfe.store.core import CellStore

logger = logging.getLogger(__name__)


def report_path(store_path: str | os.PathLike) -> Path:
    """Where the run report of a store goes: ``<store>.report.json`` beside it."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".report.json")


def extraction_report(store: CellStore, scan_skips: SkipCounter | None = None, **extra) -> dict:
    """The run report, from the store's committed content (right after any number of resumed runs).

    ``{"store", "totals": {...}, "domains": {domain: {...}}, "scan_skipped": {reason: n}, "embeddings":
    {name: rows_done}, **extra}`` where each count block holds ``images`` (read into the store), ``ok``,
    ``undetected``, ``error``, ``cells``, ``skipped_reasons`` ({reason: n} over undetected and error
    images) and ``kept_with_note`` ({reason: n} over images with cells and a note, e.g. the centred
    fallback box of a single-cell image without a detection). ``duplicates``: the groups of byte-identical
    images in the store (same ``content_sha1`` under several names or domains,
    :func:`aecfe.io.duplicate_summary`), also logged.
    """
    images = store.images()
    domains = {}
    for domain, group in images.groupby("domain", sort=True):
        domains[str(domain)] = _counts(group)
    groups = find_duplicates(zip(images["image_path"], images["domain"], images["content_sha1"].fillna("")))
    log_duplicates(groups)
    return {
        "store": str(store.path),
        "totals": _counts(images),
        "domains": domains,
        "scan_skipped": dict(sorted(scan_skips.skipped.items())) if scan_skips else {},
        "scan_skip_examples": dict(scan_skips.examples) if scan_skips else {},
        "embeddings": {name: store.embedding_progress(name) for name in store.embedding_names()},
        "duplicates": duplicate_summary(groups),
        **extra,
    }


def _counts(images) -> dict:
    status = images["status"].value_counts()
    skipped = images[images["status"] != "ok"]
    reasons = (skipped["status"] + ": " + skipped["reason"]).value_counts()
    noted = images.loc[(images["status"] == "ok") & (images["reason"] != ""), "reason"].value_counts()
    return {"images": int(len(images)), "ok": int(status.get("ok", 0)),
            "undetected": int(status.get("undetected", 0)), "error": int(status.get("error", 0)),
            "cells": int(images["n_cells"].sum()),
            "skipped_reasons": {str(k): int(v) for k, v in sorted(reasons.items())},
            "kept_with_note": {str(k): int(v) for k, v in sorted(noted.items())}}


def format_report(report: Mapping) -> str:
    """A few lines for the log: totals, then one line per domain, then the scan's skips."""
    def line(name: str, counts: Mapping) -> str:
        text = (f"{name}: {counts['images']} images read, {counts['cells']} cells, {counts['ok']} with cells, "
                f"{counts['undetected']} undetected, {counts['error']} errors")
        notes = {**counts["skipped_reasons"], **counts["kept_with_note"]}
        if notes:
            text += " (" + ", ".join(f"{n} {reason}" for reason, n in notes.items()) + ")"
        return text

    lines = [line("all domains", report["totals"])]
    lines += [line(f"  {domain}", counts) for domain, counts in report["domains"].items()]
    if report.get("scan_skipped"):
        lines.append("left out by the input scan: " + ", ".join(f"{n} {reason}"
                                                                for reason, n in report["scan_skipped"].items()))
    if report.get("embeddings"):
        lines.append("embeddings (rows done): " + ", ".join(f"{k} {v}" for k, v in report["embeddings"].items()))
    duplicates = report.get("duplicates") or {}
    if duplicates.get("groups"):
        lines.append(f"byte-identical images: {duplicates['groups']} groups ({duplicates['images']} images, "
                     f"{duplicates['cross_domain_groups']} groups across domains)")
    return "\n".join(lines)


def write_report(report: Mapping, store_path: str | os.PathLike) -> Path:
    """Write ``report`` as JSON to :func:`report_path` (atomically) and log its summary."""
    path = report_path(store_path)
    write_text_atomic(path, json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    logger.info("extraction report %s\n%s", path, format_report(report))
    return path


def store_report(store_path: str | os.PathLike, scan_skips: SkipCounter | None = None, **extra) -> dict:
    """:func:`extraction_report` of the store at ``store_path`` (opened read-only, then closed)."""
    with CellStore.open(store_path) as store:
        return extraction_report(store, scan_skips, **extra)


def create_run_store(store_path: str | os.PathLike, provenance: Mapping, *, keep_roi: bool = True,
                     keep_crops: bool = True, chunk_cells: int = 256) -> CellStore:
    """A new store for a run: the RoI (:data:`~aecfe.shapes.ROI_SHAPE`) and crop
    (:data:`~aecfe.shapes.CROP_SHAPE`) stages asked for, the run's ``provenance``."""
    return CellStore.create(store_path, roi_shape=ROI_SHAPE if keep_roi else None,
                            crop_shape=CROP_SHAPE if keep_crops else None, provenance=provenance,
                            chunk_cells=chunk_cells)


def open_or_create_store(store_path: str | os.PathLike, provenance: Mapping, *, keep_roi: bool = True,
                         keep_crops: bool = True, chunk_cells: int = 256) -> CellStore:
    """Reopen ``store_path`` to resume (its provenance must equal ``provenance`` apart from ``"shard"``
    being the same too), or create it with the RoI and crop stages asked for (see :func:`open_existing_store`)."""
    store = open_existing_store(store_path, provenance)
    if store is not None:
        return store
    return create_run_store(store_path, provenance, keep_roi=keep_roi, keep_crops=keep_crops,
                            chunk_cells=chunk_cells)


def open_existing_store(store_path: str | os.PathLike, provenance: Mapping) -> CellStore | None:
    """The store at ``store_path`` opened to resume, or None when there is nothing to resume.

    A store holding no image and no embedding, left by a run that failed before its first commit, is
    removed (logged) when its provenance differs, so that the corrected run is not refused; a store with
    content and another provenance raises :class:`StoreError`.
    """
    store_path = Path(store_path)
    if not store_path.exists():
        return None
    store = CellStore.open(store_path, "a")
    found = store.provenance
    if json.loads(json.dumps(dict(provenance))) == found:
        return store
    empty = store.n_images == 0 and not store.embedding_names()
    store.close()
    if empty:
        logger.warning("%s: removing the empty store of a run that failed before writing anything (provenance "
                       "%s); this run writes it anew", store_path, json.dumps(found, sort_keys=True))
        store_path.unlink()
        return None
    raise StoreError(f"{store_path}: was written by another run (provenance {json.dumps(found, sort_keys=True)}, "
                     f"this run {json.dumps(dict(provenance), sort_keys=True, default=str)}); "
                     "resume with the same detector and shard, or write a new store")
