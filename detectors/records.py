"""Detection over image records: read each image (and hash its bytes), check it, run the detector in batches,
and say per image what came out — cells, no cell, or an error with its reason. Nothing here writes anywhere:
the store's roi stage (:func:`aecfe.store.roi.write_roi_stage`) turns these outcomes into store rows.

Example::

    pending = [record_fields(r) for r in scan_domains("data/cls")]          # (path, domain, label)
    for batch in detect_records(detector, pending, single_cell=True, batch_size=4):
        for outcome in batch:
            print(outcome.path, outcome.error_reason or len(outcome.detections))
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aecfe.errors import InputError
from aecfe.io import CocoImage, ImageReadError, ImageRecord, identity_path, read_image, sha1_file
from detectors.base import Detections, Detector

logger = logging.getLogger(__name__)

Record = ImageRecord | CocoImage


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


@dataclass
class ImageOutcome:
    """What came of one image: ``path``, ``domain``, ``label`` (as :func:`record_fields` gives them),
    ``content_sha1`` (hex SHA-1 of the file's bytes, "" when unreadable), ``detected`` (the image reached the
    detector), and either ``detections`` (possibly empty) or ``error`` with its short ``error_reason``
    (e.g. ``"corrupt"``, ``"unusable image"``, ``"detector failed (RuntimeError)"``)."""

    path: str
    domain: str
    label: str | None
    content_sha1: str = ""
    detected: bool = False
    detections: Detections | None = None
    error: Exception | None = None
    error_reason: str = ""


def detect_records(detector: Detector, pending: Sequence[tuple[str, str, str | None]], *, single_cell: bool,
                   batch_size: int = 4, skip_errors: bool = True) -> Iterator[list[ImageOutcome]]:
    """Per batch of ``batch_size`` images of ``pending`` ((path, domain, label) triples), the list of their
    :class:`ImageOutcome`: first the images that could not be read or used (in order), then the detected ones.

    ``skip_errors=False`` raises an image's error instead of reporting it (the caller commits what it had).
    A failing batch call is retried image by image, so one bad image costs only itself.
    """
    for start in range(0, len(pending), batch_size):
        outcomes: list[ImageOutcome] = []
        good: list[tuple[ImageOutcome, np.ndarray]] = []
        for path, domain, label in pending[start:start + batch_size]:
            outcome = ImageOutcome(path, domain, label)
            try:
                outcome.content_sha1 = sha1_file(path)
                image = read_image(Path(path))
                detector.check_image(image, path)
                good.append((outcome, image))
            except ImageReadError as err:
                outcomes.append(_failed(outcome, err.reason, err, skip_errors))
            except InputError as err:
                outcomes.append(_failed(outcome, "unusable image", err, skip_errors))
        results = _detect_isolating_failures(detector, [image for _, image in good], single_cell, skip_errors)
        for (outcome, _), result in zip(good, results):
            outcome.detected = True
            if isinstance(result, Exception):
                outcomes.append(_failed(outcome, f"detector failed ({type(result).__name__})", result, skip_errors))
            else:
                outcome.detections = result
                outcomes.append(outcome)
        yield outcomes


def _failed(outcome: ImageOutcome, reason: str, err: Exception, skip_errors: bool) -> ImageOutcome:
    if not skip_errors:
        raise err
    outcome.error, outcome.error_reason = err, reason
    return outcome


def _detect_isolating_failures(detector: Detector, images: list[np.ndarray], single_cell: bool,
                               skip_errors: bool) -> list[Detections | Exception]:
    """Detect a batch; if the batch call fails, retry image by image so one bad image costs only
    itself (its exception is returned in its place when ``skip_errors``)."""
    if not images:
        return []
    try:
        return detector.detect(images, single_cell=single_cell, batch_size=len(images))
    except Exception as err:  # noqa: BLE001  isolate the failing image below
        if len(images) == 1:
            if not skip_errors:
                raise
            return [err]
        logger.warning("batch of %d images failed (%s); retrying one by one", len(images), err)
    return [result for image in images
            for result in _detect_isolating_failures(detector, [image], single_cell, skip_errors)]
