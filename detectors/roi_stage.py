"""The "roi" stage of the cell store: run a :class:`~detectors.base.Detector` over image records
and append every image (status ``ok``, ``undetected`` or ``error``) and its cells to a
:class:`~aecfe.store.CellStore`, resuming where an earlier run stopped.

Example::

    records = scan_domains("data/cls")
    with CellStore.create("run.h5", provenance={"detector": model_identity(detector.config, ckpt)}) as store:
        report = write_roi_stage(detector, records, store, single_cell=True)
    print(report.to_dict())
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from aecfe.errors import InputError
from aecfe.io import CocoImage, ImageReadError, ImageRecord, identity_path, read_image, sha1_file
from aecfe.store import CellStore
from detectors.base import Detections, Detector

logger = logging.getLogger(__name__)

Record = ImageRecord | CocoImage
FALLBACK_REASON = "centred fallback box (no detection)"


@dataclass
class RoiStageReport:
    """What a :func:`write_roi_stage` run did.

    ``images_read``: images decoded and run through the detector; ``images_skipped_done``: images
    already in the store (not read again); ``cells_found``: cells written; ``undetected``: images
    without a cell; ``fallback``: single-cell images given the centred box; ``errors``: images
    recorded with status "error", by reason (e.g. ``{"corrupt": 2, "too small": 1}``).
    """

    images_read: int = 0
    images_skipped_done: int = 0
    cells_found: int = 0
    undetected: int = 0
    fallback: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"images_read": self.images_read, "images_skipped_done": self.images_skipped_done,
                "cells_found": self.cells_found, "undetected": self.undetected, "fallback": self.fallback,
                "errors": dict(self.errors), "images_with_error": sum(self.errors.values()),
                "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        errors = ", ".join(f"{n} {reason}" for reason, n in sorted(self.errors.items(), key=lambda kv: -kv[1]))
        return (f"roi stage: {self.images_read} images read, {self.cells_found} cells, "
                f"{self.undetected} undetected, {self.fallback} fallback boxes, "
                f"{self.images_skipped_done} already in the store, "
                f"{sum(self.errors.values())} errors" + (f" ({errors})" if errors else ""))


def record_fields(record: Record, domain: str | None = None) -> tuple[str, str, str | None]:
    """(image path, domain, label) of a record as stored.

    The path is the record's resolved path (:func:`aecfe.io.identity_path`), the store's resume key, so the
    same file reached by a relative, absolute or symlinked path is one image. ImageRecord: its path, domain
    and canonical class. CocoImage: its path, ``domain`` or else the COCO set's folder name
    (``<set>/images/<file>`` -> ``<set>``), and its ``image_label`` attribute if any (BCCD) else no label.
    """
    if isinstance(record, ImageRecord):
        return str(identity_path(record.path)), domain or record.domain, record.canonical
    if isinstance(record, CocoImage):
        folder = record.path.parent
        default = folder.parent.name if folder.name == "images" else folder.name
        label = record.attributes.get("image_label")
        return str(identity_path(record.path)), domain or default, label if isinstance(label, str) and label else None
    raise TypeError(f"records must be aecfe.io.ImageRecord or CocoImage, got {type(record).__name__}")


def _cells(detections: Detections, store: CellStore) -> dict:
    cells = {"box": detections.boxes, "score": detections.scores, "mask_area": detections.mask_areas}
    if store.roi_shape is not None:
        cells["roi"] = detections.roi_features
    if store.crop_shape is not None:
        cells["crop"] = detections.crops
    return cells


def _check_shapes(detector: Detector, store: CellStore) -> None:
    crop_shape = (3, detector.crop_size, detector.crop_size)
    if store.crop_shape is not None and tuple(store.crop_shape) != crop_shape:
        raise InputError(f"{store.path}: store crops are {store.crop_shape}, the detector makes {crop_shape}")
    if store.roi_shape is not None and tuple(store.roi_shape) != (256, 14, 14):
        raise InputError(f"{store.path}: store RoI features are {store.roi_shape}, the detector makes (256, 14, 14)")


def write_roi_stage(detector: Detector, records: Iterable[Record], store: CellStore, *, single_cell: bool,
                    batch_size: int = 4, skip_errors: bool = True, progress: bool = True,
                    domain: str | None = None, flush_every: int = 64, retry_errors: bool = False) -> RoiStageReport:
    """Detect cells in every record not yet in ``store`` and append them.

    Args:
        detector: any :class:`Detector`.
        records: ``aecfe.io.ImageRecord`` (folder sets) and/or ``CocoImage`` (COCO sets); stored
            fields as in :func:`record_fields`.
        store: a writable CellStore; images in ``store.processed_images()`` are skipped, so a
            re-run after a crash resumes without duplicates.
        single_cell: one white cell per image (see :meth:`Detector.detect`).
        batch_size: images per model call.
        skip_errors: an unreadable or unusable image becomes a status "error" row counted by
            reason; False raises (after committing what was already written).
        progress: tqdm bar.
        domain: overrides every record's domain.
        flush_every: commit the store at least every this many images.
        retry_errors: images the store holds with status "error" are processed again (the error row
            becomes status "retried"); otherwise they count as done.

    Every image's row records the SHA-1 of its file's bytes (``content_sha1``), "" when unreadable.

    Returns:
        a :class:`RoiStageReport` (also logged).
    """
    if batch_size < 1 or flush_every < 1:
        raise InputError(f"batch_size and flush_every must be >= 1, got {batch_size} and {flush_every}")
    started = time.perf_counter()
    _check_shapes(detector, store)
    report = RoiStageReport()
    errors: Counter[str] = Counter()
    done = store.processed_images(include_errors=not retry_errors)
    pending: list[tuple[str, str, str | None, Record]] = []
    for record in records:
        path, rec_domain, label = record_fields(record, domain)
        if path in done:
            report.images_skipped_done += 1
        else:
            done.add(path)  # a record listed twice is processed once
            pending.append((path, rec_domain, label, record))
    since_flush = 0

    hashes: dict[str, str] = {}

    def error(path: str, rec_domain: str, label: str | None, reason: str, err: Exception) -> None:
        if not skip_errors:
            store.flush()
            raise err
        logger.warning("%s", err)
        errors[reason] += 1
        store.add_image(path, rec_domain, label, status="error", reason=f"{reason}: {err}"[:500],
                        content_sha1=hashes.pop(path, ""), retry=retry_errors)

    try:
        with tqdm(total=len(pending), desc="detect", unit="img", disable=not progress) as bar:
            for start in range(0, len(pending), batch_size):
                batch = pending[start:start + batch_size]
                good: list[tuple[str, str, str | None, np.ndarray]] = []
                for path, rec_domain, label, record in batch:
                    try:
                        hashes[path] = sha1_file(path)
                        image = read_image(Path(path))
                        detector.check_image(image, path)
                        good.append((path, rec_domain, label, image))
                    except ImageReadError as err:
                        error(path, rec_domain, label, err.reason, err)
                    except InputError as err:
                        error(path, rec_domain, label, "unusable image", err)
                results = _detect_isolating_failures(detector, good, single_cell, skip_errors)
                for (path, rec_domain, label, _), result in zip(good, results):
                    report.images_read += 1
                    if isinstance(result, Exception):
                        error(path, rec_domain, label, f"detector failed ({type(result).__name__})", result)
                    elif len(result) == 0:
                        report.undetected += 1
                        store.add_image(path, rec_domain, label, status="undetected",
                                        reason=result.undetected_reason or "no detection",
                                        content_sha1=hashes.pop(path), retry=retry_errors)
                    else:
                        report.cells_found += len(result)
                        report.fallback += int(result.fallback)
                        store.add_image(path, rec_domain, label, status="ok",
                                        reason=FALLBACK_REASON if result.fallback else "",
                                        cells=_cells(result, store), content_sha1=hashes.pop(path),
                                        retry=retry_errors)
                since_flush += len(batch)
                if since_flush >= flush_every:
                    store.flush()
                    since_flush = 0
                bar.update(len(batch))
    finally:
        if store.writable:
            store.flush()
        report.errors = dict(errors)
        report.seconds = time.perf_counter() - started
    logger.info("%s", report.summary())
    return report


def _detect_isolating_failures(detector: Detector, good: list, single_cell: bool,
                               skip_errors: bool) -> list[Detections | Exception]:
    """Detect a batch; if the batch call fails, retry image by image so one bad image costs only
    itself (its exception is returned in its place when ``skip_errors``)."""
    if not good:
        return []
    images = [image for *_, image in good]
    try:
        return detector.detect(images, single_cell=single_cell, batch_size=len(images))
    except Exception as err:  # noqa: BLE001  isolate the failing image below
        if len(images) == 1:
            if not skip_errors:
                raise
            return [err]
        logger.warning("batch of %d images failed (%s); retrying one by one", len(images), err)
    return [result for item in good
            for result in _detect_isolating_failures(detector, [item], single_cell, skip_errors)]
