"""Synthetic smear images with white-cell instances: whole fields and single-cell crops.

Image ``i`` of a domain is drawn from its own random stream seeded by (seed, a SHA-256 of the
domain name, the kind of image, i), so it does not depend on ``n`` or on other images: the first
10 of ``n=20`` equal ``n=10``.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from aecfe.errors import InputError
from aecfe.synthetic.drawing import (MORPHOLOGY, N_DYES, NOMINAL_RADIUS, draw_red_cells,
                                     draw_white_cell, outer_radius, paste, render)
from aecfe.synthetic.styles import CLASSES, DomainStyle

logger = logging.getLogger(__name__)

RED_CELL_RADIUS_PX = 9.0
"""Red-cell radius in pixels of a whole field at magnification 1."""

_FIELD_STREAM, _SINGLE_CELL_STREAM = 1, 2


@dataclass
class Field:
    """One synthetic image and its N white cells.

    Attributes:
        image: uint8 (H, W, 3) RGB.
        masks: bool (N, H, W), one per white cell (clipped to the image, non-empty).
        boxes: float32 (N, 4) xyxy in pixels, tight around each mask: a mask whose pixels span
            columns x0..x1 and rows y0..y1 (inclusive) has the box (x0, y0, x1 + 1, y1 + 1),
            i.e. COCO's [x, y, w, h] = [x0, y0, x1 - x0 + 1, y1 - y0 + 1].
        labels: N class names from :data:`~aecfe.synthetic.styles.CLASSES`.
        domain: the domain's name.
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    labels: list[str]
    domain: str


def image_rng(seed: int, domain: str, stream: int, index: int) -> np.random.Generator:
    """The random generator of image ``index`` (stable across runs, Python versions, machines)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    name_key = int.from_bytes(hashlib.sha256(domain.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), name_key, stream, index]))


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight float32 xyxy box (x0, y0, x1 + 1, y1 + 1) of a non-empty bool (H, W) mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def _draw_labels(rng: np.random.Generator, style: DomainStyle, n: int) -> list[str]:
    return [CLASSES[k] for k in rng.choice(len(CLASSES), size=n, p=style.class_probabilities())]


def _cell_radius(rng: np.random.Generator, label: str, px_per_unit: float) -> float:
    return float(rng.uniform(*MORPHOLOGY[label].radius) * px_per_unit)


def _compose(rng, style: DomainStyle, shape: tuple[int, int], px_per_unit: float,
             cells: list[tuple[str, tuple[float, float], float]]) -> Field:
    """Red cells, then the white cells ``(label, (row, col), radius_px)``, then the optics."""
    canvas = np.zeros(shape + (N_DYES,), np.float32)
    draw_red_cells(rng, canvas, px_per_unit, style)
    masks, labels = [], []
    for label, centre, radius in cells:
        mask = paste(canvas, draw_white_cell(rng, label, centre, radius))
        if mask.any():
            masks.append(mask)
            labels.append(label)
    image = render(rng, canvas, style)
    masks_array = np.stack(masks) if masks else np.zeros((0,) + shape, bool)
    boxes = np.stack([mask_to_box(m) for m in masks]) if masks else np.zeros((0, 4), np.float32)
    return Field(image, masks_array, boxes, labels, style.name)


def _check_count(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"n must be a non-negative integer, got {n!r}")


def make_fields(domain: DomainStyle, n: int, *, seed: int, size: tuple[int, int] = (256, 256),
                cells_per_field: tuple[int, int] = (1, 3)) -> list[Field]:
    """Whole smear fields with several white cells among red cells.

    Args:
        domain: the lab's style (colours, lighting, optics, magnification, class mix).
        n: number of fields.
        seed: non-negative integer; field i depends only on (seed, domain.name, i).
        size: (height, width) in pixels.
        cells_per_field: (low, high) inclusive range of white cells drawn per field; cells never
            overlap each other (a cell that finds no free place is left out) and may be cut by
            the image border (centres lie inside the image, at least 0.2 radius from its edge).

    Returns:
        n :class:`Field` s with image (H, W, 3), masks (N, H, W), boxes (N, 4), N labels.
    """
    _check_count(n)
    low, high = cells_per_field
    if not 0 <= low <= high:
        raise InputError(f"cells_per_field must be (low, high) with 0 <= low <= high, got "
                         f"{cells_per_field!r}")
    H, W = size
    px_per_unit = RED_CELL_RADIUS_PX * domain.magnification
    fields = []
    for i in range(n):
        rng = image_rng(seed, domain.name, _FIELD_STREAM, i)
        cells: list[tuple[str, np.ndarray, float]] = []  # (label, centre (row, col), radius)
        for label in _draw_labels(rng, domain, int(rng.integers(low, high + 1))):
            radius = _cell_radius(rng, label, px_per_unit)
            margin = 0.2 * radius
            reach = outer_radius(label, radius)
            for _ in range(100):
                centre = rng.uniform([margin, margin], [H - margin, W - margin])
                if all(np.hypot(*(centre - c)) > reach + outer_radius(other, r) + 1
                       for other, c, r in cells):
                    cells.append((label, centre, radius))
                    break
            else:
                logger.debug("%s field %d: no free place for a %s; left out", domain.name, i, label)
        fields.append(_compose(rng, domain, (H, W), px_per_unit,
                               [(lab, (float(c[0]), float(c[1])), r) for lab, c, r in cells]))
    return fields


def make_single_cell_images(domain: DomainStyle, n: int, *, seed: int,
                            size: int = 128) -> list[Field]:
    """Square images of one white cell among red cells, framed like the lab's classification set.

    A typical neutrophil's diameter covers ``domain.crop_fill`` (drawn per image) of the side,
    other classes keep their relative size; the cell sits near the centre (jitter of 8 % of the
    side), so a tightly framed cell touches the border.

    Args:
        domain: the lab's style (``magnification`` is not used: ``crop_fill`` sets the scale).
        n: number of images; seed: as in :func:`make_fields`; size: side in pixels.

    Returns:
        n :class:`Field` s, each with exactly one white cell.
    """
    _check_count(n)
    images = []
    for i in range(n):
        rng = image_rng(seed, domain.name, _SINGLE_CELL_STREAM, i)
        label = _draw_labels(rng, domain, 1)[0]
        px_per_unit = rng.uniform(*domain.crop_fill) * size / (2 * NOMINAL_RADIUS)
        radius = _cell_radius(rng, label, px_per_unit)
        centre = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
        images.append(_compose(rng, domain, (size, size), px_per_unit,
                               [(label, (float(centre[0]), float(centre[1])), radius)]))
    return images
