"""Write synthetic domains to disk in the layouts of the real data sets.

- class folders, like ``data/cls/<source>``: ``root/<domain>/<class>/<domain>_<i>.<fmt>``;
- COCO, like ``data/det/<source>``: ``root/<domain>/images/<domain>_<i>.png`` and
  ``root/<domain>/annotations.json`` (category 1 = "wbc", bbox [x, y, w, h], uncompressed RLE
  masks, the class in each annotation's ``wbc_subtype``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from aecfe.errors import InputError
from aecfe.synthetic.generator import make_fields, make_single_cell_images
from aecfe.synthetic.styles import DomainStyle

IMAGE_FORMATS = ("png", "jpg", "bmp", "tif")


def write_class_folders(root: str | Path, domains: Iterable[DomainStyle], n_per_domain: int, *,
                        seed: int, size: int = 128, fmt: str = "png") -> Path:
    """Write ``n_per_domain`` single-cell images per domain into class folders; return ``root``.

    Only classes that occur get a folder (a domain missing a class has no folder for it).
    ``fmt`` is the file suffix: one of :data:`IMAGE_FORMATS` (``jpg`` is lossy).
    """
    if fmt not in IMAGE_FORMATS:
        raise InputError(f"write_class_folders: fmt must be one of {IMAGE_FORMATS}, got {fmt!r}")
    root = Path(root)
    for domain in domains:
        cells = make_single_cell_images(domain, n_per_domain, seed=seed, size=size)
        for i, cell in enumerate(cells):
            folder = root / domain.name / cell.labels[0]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(cell.image).save(folder / f"{domain.name}_{i}.{fmt}")
    return root


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE ``{"size": [H, W], "counts": [...]}`` of a bool (H, W) mask.

    Counts are run lengths over the column-major (Fortran order) pixels, starting with a run of 0s
    (possibly empty); ``pycocotools.mask.frPyObjects`` reads it back.
    """
    flat = np.asarray(mask, bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def write_coco(root: str | Path, domain: DomainStyle, n_fields: int, *, seed: int,
               size: tuple[int, int] = (256, 256), single_cell: bool = False) -> Path:
    """Write ``n_fields`` whole fields of ``domain`` (or, with ``single_cell``, single-cell images of a square
    ``size``, :func:`make_single_cell_images`) as PNG images plus a COCO file.

    Returns the path of ``root/<domain>/annotations.json``. Image ids and annotation ids start
    at 1; ``area`` is the mask's pixel count; ``bbox`` is the tight box of the mask.
    """
    if single_cell and size[0] != size[1]:
        raise ValueError(f"single-cell images are square, got size {size}")
    fields = (make_single_cell_images(domain, n_fields, seed=seed, size=size[0]) if single_cell
              else make_fields(domain, n_fields, seed=seed, size=size))
    folder = Path(root) / domain.name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, field in enumerate(fields):
        file_name = f"{domain.name}_{i}.png"
        Image.fromarray(field.image).save(folder / "images" / file_name)
        height, width = field.image.shape[:2]
        images.append({"id": i + 1, "file_name": file_name, "width": width, "height": height})
        for mask, box, label in zip(field.masks, field.boxes, field.labels):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask.sum()), "iscrowd": 0,
                "segmentation": uncompressed_rle(mask), "wbc_subtype": label})
    coco = {
        "info": {"description": f"aecfe synthetic {'single-cell images' if single_cell else 'smear fields'}, "
                                f"domain {domain.name}",
                 "source": "aecfe.synthetic", "version": "1", "seed": int(seed)},
        "licenses": [],
        "categories": [{"id": 1, "name": "wbc", "supercategory": "cell"}],
        "images": images,
        "annotations": annotations,
    }
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path
