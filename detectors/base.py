"""The backend-agnostic white-cell detector: per image, per cell a box, mask, score, RoI features
(256x14x14, the input of the detector's own mask head) and an image crop (3x128x128 uint8).

Choosing a backend (:func:`make_detector`):

* ``"torchvision"`` (default, always installed): Mask R-CNN with a ResNet-18/34/50/101-FPN or
  MobileNetV2-FPN backbone, see :mod:`detectors.torchvision_backend`.
* ``"detectron2"``: a detectron2 Mask R-CNN, see :mod:`detectors.detectron2_backend`. detectron2 is
  not on PyPI; install it from source (``pip install 'git+https://github.com/facebookresearch/detectron2.git'``,
  needs a compiler and the matching torch) following https://detectron2.readthedocs.io/en/latest/tutorials/install.html.
* ``"auto"``: detectron2 when ``checkpoint`` names a detectron2 checkpoint or ``config_file`` is
  given and ``import detectron2`` works, else torchvision.

A backend only runs its model (:class:`DetectorBackend`): boxes, scores, 28x28 mask
probabilities and the RoI features of every final detection. Everything else lives here, once:
input checks, batching, single-cell selection (highest score; optional centred-box fallback whose
RoI features are pooled by the backend), mask pasting and crops.

Example::

    detector = make_detector(backbone="mobilenet_v2", checkpoint="runs/det/last.pt")
    for det in detector.detect([image_a, image_b], single_cell=True):
        det.roi_features.shape   # (1, 256, 14, 14), or (0, 256, 14, 14) when undetected
"""
from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from aecfe.errors import InputError
from aecfe.shapes import ROI_SHAPE

logger = logging.getLogger(__name__)

CROP_SIZE = 128
MIN_IMAGE_SIDE = 32
"""Images with a shorter side below this are rejected: too small to hold a white cell."""
MAX_IMAGE_SIDE = 4096
"""Images with a longer side above this are rejected by default (full-size masks would cost
N x H x W bytes each); pass ``max_image_side`` to :class:`Detector` to allow more."""
Fallback = Literal["none", "center"]


@dataclass
class Detections:
    """The cells found in one image (N may be 0).

    Attributes:
        boxes: (N, 4) float32 xyxy, pixels of the input image.
        masks: (N, H, W) bool, the input image's size (mask probability > 0.5; a fallback box's
            mask is the filled box).
        scores: (N,) float32 (0 for a fallback box).
        roi_features: (N, 256, 14, 14) float32, RoIAlign of the final box on the FPN levels,
            exactly the mask head's input.
        crops: (N, 3, 128, 128) uint8, the box plus margin cut from the input image and resized.
        undetected_reason: why N == 0 (e.g. ``"no detection above score 0.5"``), else None.
        fallback: True when the single cell is the centred fallback box, not a detection.
    """

    boxes: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    roi_features: np.ndarray
    crops: np.ndarray
    undetected_reason: str | None = None
    fallback: bool = False

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def mask_areas(self) -> np.ndarray:
        """(N,) int64 pixel counts of the masks."""
        return self.masks.reshape(len(self.masks), -1).sum(axis=1).astype(np.int64)


@dataclass
class RawDetections:
    """A backend's output for one image: every final detection, score-sorted (descending).

    ``boxes`` (N, 4) float32 xyxy in input-image pixels; ``scores`` (N,) float32; ``mask_probs``
    (N, 1, 28, 28) float32 tensor of mask probabilities in box coordinates (or None for a backend
    that returns pasted masks in ``masks`` (N, H, W) bool); ``roi_features`` (N, 256, 14, 14)
    float32 tensor.
    """

    boxes: np.ndarray
    scores: np.ndarray
    roi_features: torch.Tensor
    mask_probs: torch.Tensor | None = None
    masks: np.ndarray | None = None


class DetectorBackend(ABC):
    """What a detection framework must provide: run its model, and pool RoI features for boxes.

    ``score_threshold``: detections scoring below it are not returned (read at every :meth:`run`).
    """

    name: str = "abstract"
    score_threshold: float = 0.5

    @abstractmethod
    def config(self) -> dict:
        """JSON-able description of the model (backend, architecture, weights, sizes)."""

    @abstractmethod
    def run(self, images: Sequence[np.ndarray]) -> tuple[list[RawDetections], Any]:
        """Detect in a batch of RGB uint8 (H, W, 3) images; also return an opaque state (the
        feature maps) that :meth:`pool` can use for extra boxes of the same batch."""

    @abstractmethod
    def pool(self, state: Any, boxes: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """RoI features (n_i, 256, 14, 14) for boxes (n_i, 4) xyxy in input-image pixels of each
        image of the batch that :meth:`run` returned ``state`` for (the mask head's pooler)."""

    def to(self, device: str | torch.device) -> DetectorBackend:
        """Move the model to ``device``."""
        return self


class Detector:
    """Finds white cells and extracts what the cell store keeps, for any :class:`DetectorBackend`.

    Args:
        backend: the model runner.
        single_cell_fallback: for ``detect(..., single_cell=True)`` images without a detection:
            ``"none"`` (record them as undetected) or ``"center"`` (use a centred box of
            ``center_box_fraction`` of each side, score 0, mask = the box, RoI features pooled).
        crop_margin: (before, after) pixels added to the box before cropping, as in METHODS §1.4
            (rows ``[y1 - 10, y2 + 20)``, columns ``[x1 - 10, x2 + 20)``, clipped to the image).
        crop_size: side of the square crop (128).
        min_image_side / max_image_side: images outside these sides raise InputError.
    """

    def __init__(self, backend: DetectorBackend, *, single_cell_fallback: Fallback = "none",
                 center_box_fraction: float = 0.6, crop_margin: tuple[float, float] = (10, 20),
                 crop_size: int = CROP_SIZE, min_image_side: int = MIN_IMAGE_SIDE,
                 max_image_side: int = MAX_IMAGE_SIDE):
        if single_cell_fallback not in ("none", "center"):
            raise ValueError(f"single_cell_fallback must be 'none' or 'center', not {single_cell_fallback!r}")
        if not 0 < center_box_fraction <= 1:
            raise ValueError(f"center_box_fraction must be in (0, 1], got {center_box_fraction}")
        self.backend = backend
        self.single_cell_fallback = single_cell_fallback
        self.center_box_fraction = float(center_box_fraction)
        self.crop_margin = (float(crop_margin[0]), float(crop_margin[1]))
        self.crop_size = int(crop_size)
        self.min_image_side = int(min_image_side)
        self.max_image_side = int(max_image_side)

    @property
    def config(self) -> dict:
        """JSON-able configuration (the store's ``provenance["detector"]``)."""
        return {**self.backend.config(), "single_cell_fallback": self.single_cell_fallback,
                "center_box_fraction": self.center_box_fraction, "crop_margin": list(self.crop_margin),
                "crop_size": self.crop_size}

    def to(self, device: str | torch.device) -> Detector:
        self.backend.to(device)
        return self

    def check_image(self, image: np.ndarray, name: str = "image") -> None:
        """InputError naming ``name`` unless ``image`` is RGB uint8 (H, W, 3) within the size limits."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise InputError(f"{name}: expected an RGB image array (H, W, 3), got shape {shape} "
                             "(read files with aecfe.io.read_image, which converts gray/RGBA/16-bit)")
        if image.dtype != np.uint8:
            raise InputError(f"{name}: expected uint8 pixels, got {image.dtype} (read files with "
                             "aecfe.io.read_image, which rescales 16-bit images)")
        height, width = image.shape[:2]
        if min(height, width) < self.min_image_side:
            raise InputError(f"{name}: {width}x{height} px is too small (shorter side below "
                             f"{self.min_image_side} px)")
        if max(height, width) > self.max_image_side:
            raise InputError(f"{name}: {width}x{height} px is too large (longer side above "
                             f"{self.max_image_side} px; tile or downscale it, or raise max_image_side)")

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray], *, single_cell: bool = False,
               batch_size: int = 4) -> list[Detections]:
        """Detect the white cells of each image.

        Args:
            images: RGB uint8 (H, W, 3) arrays (sizes may differ).
            single_cell: one white cell per image (PBC, Zheng, Matek): keep the highest-scoring
                detection; none -> undetected, or the centred fallback box.
            batch_size: images per model call.

        Returns:
            one :class:`Detections` per image, in order. Raises InputError for a bad image
            (checked for the whole list before any model call).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for i, image in enumerate(images):
            self.check_image(image, f"image {i}")
        out: list[Detections] = []
        for start in range(0, len(images), batch_size):
            batch = list(images[start:start + batch_size])
            raws, state = self.backend.run(batch)
            out.extend(self._finish(batch, raws, state, single_cell))
        return out

    def _finish(self, images: list[np.ndarray], raws: list[RawDetections], state: Any,
                single_cell: bool) -> list[Detections]:
        """Select, add fallback boxes, paste masks and cut crops for one batch."""
        threshold = self.backend.score_threshold
        selections: list[np.ndarray] = []
        fallback_boxes: list[np.ndarray] = []
        for image, raw in zip(images, raws):
            keep = np.arange(len(raw.scores))
            if single_cell and len(keep):
                keep = keep[[int(np.argmax(raw.scores))]]
            selections.append(keep)
            needs_box = single_cell and not len(keep) and self.single_cell_fallback == "center"
            fallback_boxes.append(self.center_box(image.shape[:2])[None] if needs_box
                                  else np.zeros((0, 4), np.float32))
        pooled = (self.backend.pool(state, fallback_boxes) if any(len(b) for b in fallback_boxes)
                  else [None] * len(images))
        results = []
        for image, raw, keep, extra_box, extra_roi in zip(images, raws, selections, fallback_boxes, pooled):
            if len(extra_box):
                results.append(self._fallback(image, extra_box, extra_roi))
            elif not len(keep):
                results.append(self._empty(image, f"no detection above score {threshold}"))
            else:
                boxes = raw.boxes[keep]
                masks = (raw.masks[keep] if raw.masks is not None
                         else paste_masks(raw.mask_probs[torch.as_tensor(keep)], boxes, image.shape[:2]))
                results.append(Detections(
                    boxes=boxes.astype(np.float32), masks=masks, scores=raw.scores[keep].astype(np.float32),
                    roi_features=raw.roi_features[torch.as_tensor(keep)].float().cpu().numpy(),
                    crops=self.crops(image, boxes)))
        return results

    def center_box(self, shape: tuple[int, int]) -> np.ndarray:
        """(4,) float32 xyxy: the centred box covering ``center_box_fraction`` of each side."""
        height, width = shape
        f = self.center_box_fraction
        return np.array([width * (1 - f) / 2, height * (1 - f) / 2, width * (1 + f) / 2,
                         height * (1 + f) / 2], dtype=np.float32)

    def _fallback(self, image: np.ndarray, box: np.ndarray, roi: torch.Tensor) -> Detections:
        masks = np.zeros((1, *image.shape[:2]), dtype=bool)
        x0, y0 = np.floor(box[0, :2]).astype(int)
        x1, y1 = np.ceil(box[0, 2:]).astype(int)
        masks[0, y0:y1, x0:x1] = True
        return Detections(boxes=box.astype(np.float32), masks=masks, scores=np.zeros(1, np.float32),
                          roi_features=roi.float().cpu().numpy(), crops=self.crops(image, box),
                          fallback=True)

    def _empty(self, image: np.ndarray, reason: str) -> Detections:
        return Detections(boxes=np.zeros((0, 4), np.float32),
                          masks=np.zeros((0, *image.shape[:2]), dtype=bool),
                          scores=np.zeros(0, np.float32),
                          roi_features=np.zeros((0, *ROI_SHAPE), np.float32),
                          crops=np.zeros((0, 3, self.crop_size, self.crop_size), np.uint8),
                          undetected_reason=reason)

    def crops(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) uint8: for each box, the image region ``[x1 - before, x2 + after) x
        [y1 - before, y2 + after)`` (``crop_margin``; integer-rounded outwards, clipped to the
        image, at least 1 px) resized bilinearly (with antialiasing) to S = ``crop_size``."""
        height, width = image.shape[:2]
        before, after = self.crop_margin
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        out = np.zeros((len(boxes), 3, self.crop_size, self.crop_size), dtype=np.uint8)
        for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64)):
            c0 = int(np.clip(np.floor(x1 - before), 0, width - 1))
            r0 = int(np.clip(np.floor(y1 - before), 0, height - 1))
            c1 = int(np.clip(np.ceil(x2 + after), c0 + 1, width))
            r1 = int(np.clip(np.ceil(y2 + after), r0 + 1, height))
            region = tensor[:, r0:r1, c0:c1].float()[None]
            resized = F.interpolate(region, size=(self.crop_size, self.crop_size), mode="bilinear",
                                    align_corners=False, antialias=True)
            out[i] = resized[0].round().clamp(0, 255).to(torch.uint8).numpy()
        return out


def paste_masks(mask_probs: torch.Tensor, boxes: np.ndarray, shape: tuple[int, int],
                threshold: float = 0.5) -> np.ndarray:
    """(N, H, W) bool: torchvision's ``paste_masks_in_image`` of (N, 1, M, M) probabilities into
    boxes (N, 4) xyxy of an H x W image, thresholded at ``threshold``; one mask at a time so a
    large image costs H x W floats, not N x H x W."""
    from aecfe import torchvision_compat  # noqa: F401
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    out = np.zeros((len(boxes), *shape), dtype=bool)
    box_tensor = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    for i in range(len(boxes)):
        pasted = paste_masks_in_image(mask_probs[i:i + 1].float().cpu(), box_tensor[i:i + 1], shape)
        out[i] = (pasted[0, 0] > threshold).numpy()
    return out


def detectron2_available() -> bool:
    """True when ``import detectron2`` can work (the package is installed)."""
    return importlib.util.find_spec("detectron2") is not None


def make_detector(backend: Literal["auto", "torchvision", "detectron2"] = "auto", *,
                  backbone: str = "mobilenet_v2", weights: Any = None, checkpoint: str | None = None,
                  min_size: int | None = None, max_size: int | None = None, score_threshold: float = 0.5,
                  single_cell_fallback: Fallback = "none", device: str | torch.device = "cpu",
                  num_classes: int = 2, crop_margin: tuple[float, float] = (10, 20),
                  center_box_fraction: float = 0.6, max_image_side: int = MAX_IMAGE_SIDE,
                  **backend_options: Any) -> Detector:
    """Build a :class:`Detector`.

    Args:
        backend: ``"torchvision"``, ``"detectron2"`` or ``"auto"`` (detectron2 only when it is
            installed and ``backend_options`` hold its ``config_file``; otherwise torchvision).
        backbone: torchvision backbone name (``resnet18``, ``resnet34``, ``resnet50``,
            ``resnet101``, ``mobilenet_v2``); ignored when ``checkpoint`` records one.
        weights: initial weights (see :func:`detectors.torchvision_backend.build_maskrcnn`):
            a torchvision weights enum or name, or a local weights file; None = from scratch.
        checkpoint: a detector checkpoint written by :mod:`detectors.training` (its recorded
            architecture is used).
        min_size / max_size: the model's resize (shorter side to ``min_size``, longer side at
            most ``max_size``); default: the checkpoint's, else 512 and 853 (torchvision's 800 px
            default upscales cells and costs 3-4x).
        score_threshold: detections below it are dropped.
        single_cell_fallback, crop_margin, center_box_fraction, max_image_side: see :class:`Detector`.
        device: ``"cpu"``, ``"cuda"``...
        backend_options: passed to the backend builder.
    """
    if backend not in ("auto", "torchvision", "detectron2"):
        raise ValueError(f"backend must be 'auto', 'torchvision' or 'detectron2', not {backend!r}")
    if backend == "auto":
        backend = ("detectron2" if detectron2_available() and "config_file" in backend_options
                   else "torchvision")
    if backend == "detectron2":
        from detectors.detectron2_backend import Detectron2Backend

        runner: DetectorBackend = Detectron2Backend(
            checkpoint=checkpoint, min_size=min_size or 512, max_size=max_size or 853,
            score_threshold=score_threshold, num_classes=num_classes, device=device, **backend_options)
    else:
        from detectors.torchvision_backend import TorchvisionBackend

        runner = TorchvisionBackend.build(
            backbone=backbone, weights=weights, checkpoint=checkpoint, min_size=min_size,
            max_size=max_size, score_threshold=score_threshold, num_classes=num_classes,
            device=device, **backend_options)
    return Detector(runner, single_cell_fallback=single_cell_fallback, crop_margin=crop_margin,
                    center_box_fraction=center_box_fraction, max_image_side=max_image_side)
