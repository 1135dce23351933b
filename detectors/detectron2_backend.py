"""detectron2 Mask R-CNN backend: same :class:`~detectors.base.Detector` outputs as the
torchvision backend (boxes, masks, scores, 256x14x14 RoI features from the model's own
``roi_heads.mask_pooler``, crops).

Installing detectron2 (not on PyPI; needs a C++ compiler and a torch it can build against)::

    pip install 'git+https://github.com/facebookresearch/detectron2.git'

or a prebuilt wheel matching your torch/CUDA, see
https://detectron2.readthedocs.io/en/latest/tutorials/install.html. Then::

    from detectors import make_detector
    detector = make_detector("detectron2", config_file="COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
                             checkpoint="model_final.pth", min_size=512, max_size=853)

``config_file`` is a detectron2 model-zoo name or a YAML path; ``checkpoint`` the trained weights
(detectron2's own ``DetectionCheckpointer`` format; train with detectron2's tools on the same COCO
files). ``make_detector(backend="auto", config_file=...)`` picks this backend when detectron2
imports. Training in this package (:mod:`detectors.training`) is torchvision-only.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aecfe.errors import InputError
from detectors.base import DetectorBackend, RawDetections

logger = logging.getLogger(__name__)


class Detectron2Backend(DetectorBackend):
    """Runs a detectron2 ``GeneralizedRCNN`` with a mask head (eval mode)."""

    name = "detectron2"

    def __init__(self, *, config_file: str | None = None, checkpoint: str | None = None, min_size: int = 512,
                 max_size: int = 853, score_threshold: float = 0.5, num_classes: int = 2,
                 device: str | torch.device = "cpu", cfg_options: Sequence[str] = ()):
        from detectron2 import model_zoo
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        if config_file is None:
            config_file = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
        cfg = get_cfg()
        cfg.merge_from_file(config_file if Path(config_file).is_file() else model_zoo.get_config_file(config_file))
        cfg.merge_from_list(list(cfg_options))
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = int(num_classes) - 1  # detectron2 counts no background
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_threshold)
        cfg.INPUT.MIN_SIZE_TEST = int(min_size)
        cfg.INPUT.MAX_SIZE_TEST = int(max_size)
        cfg.MODEL.DEVICE = str(device)
        if not cfg.MODEL.MASK_ON:
            raise InputError(f"{config_file}: detectron2 config without a mask head (MODEL.MASK_ON False)")
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        weights = checkpoint or cfg.MODEL.WEIGHTS
        if weights:
            DetectionCheckpointer(self.model).load(str(weights))
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.score_threshold = float(score_threshold)
        self._info = {"backend": "detectron2", "config_file": str(config_file), "weights": str(weights) if weights else None,
                      "num_classes": int(num_classes), "min_size": int(min_size), "max_size": int(max_size)}
        self._capturing = False
        self._captured: torch.Tensor | None = None
        self.model.roi_heads.mask_pooler.register_forward_hook(self._capture)

    def config(self) -> dict:
        return {**self._info, "score_threshold": self.score_threshold}

    def to(self, device: str | torch.device) -> Detectron2Backend:
        self.model.to(device)
        return self

    def _capture(self, module, inputs, output) -> None:
        if self._capturing:
            self._captured = output

    def run(self, images: Sequence[np.ndarray]) -> tuple[list[RawDetections], Any]:
        """detectron2's inference path (preprocess, backbone, proposals, RoI heads with the mask
        head), keeping the features and the mask pooler's output; boxes back in input pixels."""
        model = self.model
        model.roi_heads.box_predictor.test_score_thresh = self.score_threshold
        bgr = self.cfg.INPUT.FORMAT == "BGR"
        inputs = []
        for image in images:
            pixels = image[:, :, ::-1] if bgr else image
            resized = self.resize.get_transform(pixels).apply_image(pixels)
            inputs.append({"image": torch.as_tensor(np.ascontiguousarray(resized).transpose(2, 0, 1)).float(),
                           "height": image.shape[0], "width": image.shape[1]})
        batched = model.preprocess_image(inputs)
        features = model.backbone(batched.tensor)
        proposals, _ = model.proposal_generator(batched, features, None)
        self._capturing, self._captured = True, None
        try:
            instances, _ = model.roi_heads(batched, features, proposals, None)
            pooled = self._captured
        finally:
            self._capturing, self._captured = False, None
        counts = [len(x) for x in instances]
        roi_per_image = pooled.split(counts) if pooled is not None else [None] * len(counts)
        raws = []
        for inst, roi, size, image in zip(instances, roi_per_image, batched.image_sizes, images):
            scale = torch.tensor([image.shape[1] / size[1], image.shape[0] / size[0]] * 2, device=inst.pred_boxes.tensor.device)
            order = torch.argsort(inst.scores, descending=True, stable=True)
            boxes = inst.pred_boxes.tensor[order] * scale
            raws.append(RawDetections(boxes=boxes.cpu().numpy().astype(np.float32),
                                      scores=inst.scores[order].cpu().numpy().astype(np.float32),
                                      roi_features=roi[order], mask_probs=inst.pred_masks[order]))
        return raws, (features, batched.image_sizes, [image.shape[:2] for image in images])

    def pool(self, state: Any, boxes: Sequence[np.ndarray]) -> list[torch.Tensor]:
        from detectron2.structures import Boxes

        features, image_sizes, original_sizes = state
        heads = self.model.roi_heads
        model_boxes = []
        for b, size, original in zip(boxes, image_sizes, original_sizes):
            scale = torch.tensor([size[1] / original[1], size[0] / original[0]] * 2, dtype=torch.float32)
            model_boxes.append(Boxes((torch.as_tensor(b, dtype=torch.float32) * scale).to(self.model.device)))
        pooled = heads.mask_pooler([features[f] for f in heads.mask_in_features], model_boxes)
        return list(pooled.split([len(b) for b in boxes]))
