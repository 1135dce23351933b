"""The "roi" stage writer: append every image of a run (status ``ok``, ``undetected`` or ``error``) and its
cells — box, score, mask area, RoI features, crop — to a :class:`~aecfe.store.CellStore`, resuming where an
earlier run stopped. The detection itself is :func:`detectors.records.detect_records`.

Example::

    records = scan_domains("data/cls")
    with CellStore.create("run.h5", provenance={"detector": model_identity(detector.config(), ckpt)}) as store:
        report = write_roi_stage(detector, records, store, single_cell=True)
    print(report.to_dict())
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from aecfe.errors import InputError
from aecfe.shapes import ROI_SHAPE
from aecfe.store.core import CellStore

if TYPE_CHECKING:
    from detectors.base import Detections, Detector
    from detectors.records import Record

logger = logging.getLogger(__name__)

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
    if store.roi_shape is not None and tuple(store.roi_shape) != ROI_SHAPE:
        raise InputError(f"{store.path}: store RoI features are {store.roi_shape}, the detector makes {ROI_SHAPE}")


def write_roi_stage(detector: Detector, records: Iterable[Record], store: CellStore, *, single_cell: bool,
                    batch_size: int = 4, skip_errors: bool = True, progress: bool = True,
                    domain: str | None = None, flush_every: int = 64, retry_errors: bool = False) -> RoiStageReport:
    """Detect cells in every record not yet in ``store`` and append them.

    Args:
        detector: any :class:`~detectors.base.Detector`.
        records: ``aecfe.io.ImageRecord`` (folder sets) and/or ``CocoImage`` (COCO sets); stored
            fields as in :func:`detectors.records.record_fields`.
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
    from detectors.records import detect_records, record_fields

    if batch_size < 1 or flush_every < 1:
        raise InputError(f"batch_size and flush_every must be >= 1, got {batch_size} and {flush_every}")
    started = time.perf_counter()
    _check_shapes(detector, store)
    report = RoiStageReport()
    errors: Counter[str] = Counter()
    done = store.processed_images(include_errors=not retry_errors)
    pending: list[tuple[str, str, str | None]] = []
    for record in records:
        path, rec_domain, label = record_fields(record, domain)
        if path in done:
            report.images_skipped_done += 1
        else:
            done.add(path)  # a record listed twice is processed once
            pending.append((path, rec_domain, label))
    since_flush = 0
    try:
        with tqdm(total=len(pending), desc="detect", unit="img", disable=not progress) as bar:
            for batch in detect_records(detector, pending, single_cell=single_cell, batch_size=batch_size,
                                        skip_errors=skip_errors):
                for outcome in batch:
                    report.images_read += int(outcome.detected)
                    result = outcome.detections
                    fields = (outcome.path, outcome.domain, outcome.label)
                    if outcome.error is not None:
                        logger.warning("%s", outcome.error)
                        errors[outcome.error_reason] += 1
                        store.add_image(*fields, status="error",
                                        reason=f"{outcome.error_reason}: {outcome.error}"[:500],
                                        content_sha1=outcome.content_sha1, retry=retry_errors)
                    elif len(result) == 0:
                        report.undetected += 1
                        store.add_image(*fields, status="undetected", reason=result.undetected_reason or "no detection",
                                        content_sha1=outcome.content_sha1, retry=retry_errors)
                    else:
                        report.cells_found += len(result)
                        report.fallback += int(result.fallback)
                        store.add_image(*fields, status="ok", reason=FALLBACK_REASON if result.fallback else "",
                                        cells=_cells(result, store), content_sha1=outcome.content_sha1,
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
