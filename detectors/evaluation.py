"""Detector evaluation: COCO box and mask mAP (pycocotools), detection rate on single-cell image
folders, and overlay PNGs for a person to look at.

mAP is class-agnostic for a one-class detector (every category counts as "white cell"). The
thesis's "mAP 0.89" is matterport's AP at IoU 0.5, so :func:`evaluate_coco` reports ``AP50``
beside COCO's ``AP`` (IoU 0.5:0.95) and ``AP75``. Detections are scored down to
``score_threshold`` (default 0.05, as COCO evaluations do), not the detector's working threshold.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm.auto import tqdm

from aecfe import torchvision_compat  # noqa: F401  (before torchvision)
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks  # noqa: E402

from aecfe.errors import InputError  # noqa: E402
from aecfe.io import CocoImage, ImageReadError, ImageRecord, read_image  # noqa: E402
from detectors.base import Detections, Detector  # noqa: E402

logger = logging.getLogger(__name__)

_STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
               "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


@contextlib.contextmanager
def score_threshold(detector: Detector, value: float | None) -> Iterator[None]:
    """Temporarily run ``detector`` at another score threshold (None: leave it)."""
    if value is None:
        yield
        return
    backend = detector.backend
    previous = backend.score_threshold
    backend.score_threshold = float(value)
    try:
        yield
    finally:
        backend.score_threshold = previous


def _rle(mask: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _ground_truth(images: Sequence[CocoImage]) -> COCO:
    """A pycocotools COCO of the images (class-agnostic; a missing mask becomes its filled box)."""
    dataset = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "wbc"}]}
    for image_id, image in enumerate(images, start=1):
        dataset["images"].append({"id": image_id, "width": image.width, "height": image.height,
                                  "file_name": str(image.path)})
        masks = image.masks(missing="box") if len(image) else []
        for box, mask, crowd in zip(image.boxes, masks, image.iscrowd):
            x0, y0, x1, y1 = (float(v) for v in box)
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask.sum()), "iscrowd": int(crowd),
                "segmentation": _rle(mask)})
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco(detector: Detector, images: Sequence[CocoImage], *, batch_size: int = 4,
                  min_score: float | None = 0.05, progress: bool = False) -> dict:
    """COCO metrics of ``detector`` on annotated images.

    Returns ``{"bbox": {"AP", "AP50", "AP75", ...}, "segm": {...}, "images": n, "instances": n,
    "detections": n}`` (pycocotools ``COCOeval.stats`` under their names; -1 where undefined).
    """
    if not images:
        raise InputError("evaluate_coco: no images")
    gt = _ground_truth(images)
    results = []
    with score_threshold(detector, min_score):
        for start in tqdm(range(0, len(images), batch_size), desc="evaluate", disable=not progress):
            chunk = images[start:start + batch_size]
            pixels = [image.read() for image in chunk]
            for image_id, det in zip(range(start + 1, start + 1 + len(chunk)), detector.detect(pixels)):
                for box, mask, score in zip(det.boxes, det.masks, det.scores):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    results.append({"image_id": image_id, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                    "score": float(score), "segmentation": _rle(mask)})
    out = {"images": len(images), "instances": len(gt.dataset["annotations"]), "detections": len(results)}
    for iou_type in ("bbox", "segm"):
        if not results:
            out[iou_type] = {name: 0.0 for name in _STAT_NAMES}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results)
            evaluator = COCOeval(gt, dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        out[iou_type] = {name: float(v) for name, v in zip(_STAT_NAMES, evaluator.stats)}
    return out


def detection_rate(detector: Detector, records: Sequence[ImageRecord], *, batch_size: int = 8,
                   progress: bool = False) -> dict:
    """Share of single-cell images with a detection, per domain and overall.

    Returns ``{"overall": {...}, "per_domain": {domain: {...}}}`` where each entry holds
    ``images`` (read), ``detected``, ``rate`` (detected / images) and ``unreadable`` (counted
    apart, by reason). The centred-box fallback is not counted as a detection.
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    unreadable: dict[str, Counter] = defaultdict(Counter)
    for start in tqdm(range(0, len(records), batch_size), desc="detection rate", disable=not progress):
        batch = []
        for record in records[start:start + batch_size]:
            try:
                image = read_image(record.path)
                detector.check_image(image, str(record.path))
                batch.append((record.domain, image))
            except ImageReadError as err:
                unreadable[record.domain][err.reason] += 1
            except InputError:
                unreadable[record.domain]["unusable image"] += 1
        if not batch:
            continue
        for (domain, _), det in zip(batch, detector.detect([im for _, im in batch], single_cell=True)):
            counts[domain]["images"] += 1
            counts[domain]["detected"] += int(len(det) > 0 and not det.fallback)

    def entry(c: Counter, bad: Counter) -> dict:
        return {"images": c["images"], "detected": c["detected"],
                "rate": c["detected"] / c["images"] if c["images"] else float("nan"), "unreadable": dict(bad)}

    total, total_bad = Counter(), Counter()
    for domain in counts.keys() | unreadable.keys():
        total.update(counts[domain])
        total_bad.update(unreadable[domain])
    return {"overall": entry(total, total_bad),
            "per_domain": {d: entry(counts[d], unreadable[d]) for d in sorted(counts.keys() | unreadable.keys())}}


def overlay(image: np.ndarray, detections: Detections, truth_boxes: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3): masks tinted, detected boxes in yellow with their scores, and
    ground-truth boxes (if given) in cyan."""
    canvas = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if len(detections):
        canvas = draw_segmentation_masks(canvas, torch.from_numpy(detections.masks), alpha=0.35, colors="magenta")
        labels = [f"{s:.2f}" + (" fallback" if detections.fallback else "") for s in detections.scores]
        canvas = draw_bounding_boxes(canvas, torch.from_numpy(detections.boxes), labels=labels,
                                     colors="yellow", width=2)
    if truth_boxes is not None and len(truth_boxes):
        canvas = draw_bounding_boxes(canvas, torch.as_tensor(truth_boxes, dtype=torch.float32), colors="cyan", width=1)
    return canvas.permute(1, 2, 0).numpy()


def save_overlays(detector: Detector, items: Sequence[CocoImage | ImageRecord], out_dir: str | Path, *,
                  single_cell: bool = False, batch_size: int = 4) -> list[Path]:
    """Write one overlay PNG per item (COCO images also show their annotated boxes) into
    ``out_dir``, named ``<index>_<file stem>.png``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        pixels = [read_image(item.path) for item in chunk]
        for offset, (item, image, det) in enumerate(zip(chunk, pixels, detector.detect(pixels, single_cell=single_cell))):
            truth = item.boxes if isinstance(item, CocoImage) else None
            path = out_dir / f"{start + offset:04d}_{Path(item.path).stem}.png"
            Image.fromarray(overlay(image, det, truth)).save(path)
            written.append(path)
    return written
