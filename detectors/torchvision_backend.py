"""torchvision Mask R-CNN backend (the default): builders and the model runner.

Backbones (all with a 256-channel FPN over strides 4, 8, 16, 32 plus max-pool, like the thesis's
ResNet-101 FPN P2-P5): ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` and
``mobilenet_v2`` (its stride-4/8/16/32 blocks 2, 4, 7, 14 feed the FPN).

Weights (``weights=`` of :func:`build_maskrcnn`):

* None: from scratch. BatchNorm layers are ordinary, trainable ``nn.BatchNorm2d`` and every
  backbone stage trains (torchvision freezes BatchNorm by default, which only makes sense for
  pretrained statistics).
* a backbone weights enum or its name, e.g. ``MobileNet_V2_Weights.IMAGENET1K_V1``,
  ``"MobileNet_V2_Weights.IMAGENET1K_V1"`` or ``"IMAGENET1K_V1"`` (of ``backbone``): ImageNet
  initialisation through torchvision's weights API (it downloads, or finds the file in
  ``$TORCH_HOME/hub/checkpoints`` offline). BatchNorm frozen, the top ``trainable_layers`` (3)
  stages train.
* ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1`` (or its name): torchvision's COCO Mask R-CNN (backbone
  ``resnet50``); its box and mask predictors are replaced for ``num_classes``.
* a local file: the classification network's state dict (e.g. torchvision's
  ``mobilenet_v2-b0353104.pth``), loaded with ``torch.load(weights_only=True)``.

Detector checkpoints from :mod:`detectors.training` (``checkpoint=``) carry their architecture.

RoI features are the output of the model's own ``roi_heads.mask_roi_pool`` (MultiScaleRoIAlign,
14x14, sampling ratio 2) on the final boxes, captured with a forward hook while the mask head runs:
the same tensor the mask head sees, at no extra cost.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aecfe import torchvision_compat  # noqa: F401  (before torchvision)
import torchvision  # noqa: E402
from torchvision.models import detection  # noqa: E402
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor  # noqa: E402
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor  # noqa: E402
from torchvision.models.detection.transform import resize_boxes  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

from aecfe.checkpoints import load_weights_only, read_checkpoint  # noqa: E402
from aecfe.errors import InputError  # noqa: E402
from aecfe.identity import file_tag  # noqa: E402
from detectors.base import DetectorBackend, RawDetections  # noqa: E402

logger = logging.getLogger(__name__)

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")
CHECKPOINT_FORMAT = "aecfe.detector.torchvision"
_MOBILENET_V2_FPN_STAGES = [1, 2, 3, 4]  # stage indices of blocks 2, 4, 7, 14: strides 4, 8, 16, 32
_PRETRAINED_TRAINABLE_LAYERS = 3
CPU_FRIENDLY_OPTIONS = {"box_batch_size_per_image": 128, "rpn_pre_nms_top_n_train": 1000,
                        "rpn_post_nms_top_n_train": 1000, "rpn_pre_nms_top_n_test": 500,
                        "rpn_post_nms_top_n_test": 300}
"""MaskRCNN defaults that differ from torchvision's (512 sampled RoIs per training image, 2000/1000
proposals): the box head's 12544x1024 layer runs once per RoI and dominates CPU time, and a smear
field holds tens of cells, not hundreds of objects. Matterport (the thesis) samples 200 RoIs per
image. Override any of them through ``maskrcnn_options``."""
THESIS_OPTIONS = {"box_nms_thresh": 0.3}
"""Matterport's DETECTION_NMS_THRESHOLD (METHODS §1.3), instead of torchvision's 0.5: after short
training runs, partial-cell boxes overlapping the whole cell by IoU 0.3-0.5 survived NMS at 0.5
(seen on BCCD overlays) and would become duplicate cells in multi-cell extraction."""


def _resolve_weights(backbone: str, weights: Any) -> tuple[str, Any]:
    """(kind, value): kind is "none", "detector" (a Mask R-CNN enum), "backbone" (a classification
    enum) or "file" (a local state dict path)."""
    if weights is None:
        return "none", None
    if isinstance(weights, torchvision.models.WeightsEnum):
        enum = weights
    elif isinstance(weights, (str, Path)) and Path(weights).is_file():
        return "file", Path(weights)
    elif isinstance(weights, str):
        try:
            enum = (torchvision.models.get_weight(weights) if "." in weights
                    else torchvision.models.get_model_weights(backbone)[weights])
        except (KeyError, ValueError, AttributeError) as err:
            raise InputError(f"weights {weights!r}: neither a file nor a torchvision weights name "
                             f"of {backbone} ({err})") from err
    else:
        raise InputError(f"weights must be None, a torchvision weights enum or name, or a file; "
                         f"got {weights!r}")
    if type(enum).__name__.startswith("MaskRCNN"):
        if type(enum).__name__ != "MaskRCNN_ResNet50_FPN_Weights" or backbone != "resnet50":
            raise InputError(f"weights {enum}: only MaskRCNN_ResNet50_FPN_Weights (backbone "
                             f"resnet50) is supported, backbone is {backbone!r}")
        return "detector", enum
    if enum not in torchvision.models.get_model_weights(backbone):
        raise InputError(f"weights {enum} do not belong to backbone {backbone!r}")
    return "backbone", enum


def _weights_name(kind: str, value: Any) -> str | None:
    if kind == "none":
        return None
    if kind == "file":
        return file_tag("file", value)
    return f"{type(value).__name__}.{value.name}"


def build_maskrcnn(backbone: str = "mobilenet_v2", *, num_classes: int = 2, weights: Any = None,
                   min_size: int = 512, max_size: int = 853, trainable_layers: int | None = None,
                   frozen_batchnorm: bool | None = None, **maskrcnn_options: Any) -> tuple[nn.Module, dict]:
    """A torchvision ``MaskRCNN`` and its JSON-able architecture record.

    Args:
        backbone: one of :data:`BACKBONES`.
        num_classes: including background (2 = background + white cell).
        weights: see the module docstring.
        min_size / max_size: ``GeneralizedRCNNTransform`` resize (always set: the 800 px default
            upscales cells and costs 3-4x).
        trainable_layers: backbone stages that train; default all from scratch, 3 pretrained.
        frozen_batchnorm: FrozenBatchNorm2d (True) or trainable BatchNorm2d (False); default
            frozen exactly when pretrained backbone weights are loaded.
        maskrcnn_options: passed to ``torchvision.models.detection.MaskRCNN`` (e.g.
            ``box_detections_per_img``, ``rpn_post_nms_top_n_test``).

    Returns:
        (model, arch): ``arch`` holds everything needed to rebuild the same module tree.
    """
    if backbone not in BACKBONES:
        raise InputError(f"backbone must be one of {BACKBONES}, not {backbone!r}")
    if num_classes < 2:
        raise InputError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    kind, value = _resolve_weights(backbone, weights)
    pretrained = kind != "none"
    frozen = pretrained if frozen_batchnorm is None else bool(frozen_batchnorm)
    norm_layer = FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    all_layers = 6 if backbone == "mobilenet_v2" else 5
    if trainable_layers is None:
        trainable_layers = _PRETRAINED_TRAINABLE_LAYERS if pretrained else all_layers
    maskrcnn_options = {**CPU_FRIENDLY_OPTIONS, **THESIS_OPTIONS, **maskrcnn_options}
    arch = {"backend": "torchvision", "backbone": backbone, "num_classes": int(num_classes),
            "min_size": int(min_size), "max_size": int(max_size), "trainable_layers": int(trainable_layers),
            "frozen_batchnorm": frozen, "initial_weights": _weights_name(kind, value),
            "maskrcnn_options": dict(maskrcnn_options)}

    if kind == "detector":
        model = detection.maskrcnn_resnet50_fpn(weights=value, trainable_backbone_layers=trainable_layers,
                                                min_size=min_size, max_size=max_size, **maskrcnn_options)
        _replace_predictors(model, num_classes)
        return model, arch

    classifier = torchvision.models.get_model(backbone, weights=value if kind == "backbone" else None,
                                              norm_layer=norm_layer)
    if kind == "file":
        state = load_weights_only(value, f"{backbone} backbone weights file")
        try:
            classifier.load_state_dict(state)
        except RuntimeError as err:
            raise InputError(f"{value}: not a state dict of torchvision's {backbone} ({err})") from err
    if backbone == "mobilenet_v2":
        body = _mobilenet_extractor(classifier, True, trainable_layers, returned_layers=_MOBILENET_V2_FPN_STAGES)
    else:
        body = _resnet_fpn_extractor(classifier, trainable_layers)
    model = detection.MaskRCNN(body, num_classes=num_classes, min_size=min_size, max_size=max_size,
                               **maskrcnn_options)
    return model, arch


def _replace_predictors(model: nn.Module, num_classes: int) -> None:
    """New box and mask predictors for ``num_classes`` (e.g. after COCO weights)."""
    box_in = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(box_in, num_classes)
    mask_in = model.roi_heads.mask_predictor.conv5_mask.in_channels
    model.roi_heads.mask_predictor = MaskRCNNPredictor(mask_in, 256, num_classes)


def model_from_arch(arch: dict) -> nn.Module:
    """An untrained module tree matching ``arch`` (from :func:`build_maskrcnn`), for loading a state dict."""
    model, _ = build_maskrcnn(arch["backbone"], num_classes=arch["num_classes"], weights=None,
                              min_size=arch["min_size"], max_size=arch["max_size"],
                              trainable_layers=arch["trainable_layers"],
                              frozen_batchnorm=arch["frozen_batchnorm"], **arch.get("maskrcnn_options", {}))
    return model


def load_checkpoint(path: str | Path) -> dict:
    """A detector checkpoint (read with ``torch.load(weights_only=True)``): ``format``, ``arch``,
    ``model`` (state dict) and training fields. InputError naming the file when it is not one."""
    if not Path(path).is_file():
        raise InputError(f"{path}: detector checkpoint not found")
    return read_checkpoint(path, CHECKPOINT_FORMAT, "detector checkpoint")


class TorchvisionBackend(DetectorBackend):
    """Runs a torchvision ``MaskRCNN`` (eval mode) for :class:`detectors.base.Detector`.

    ``model``: the MaskRCNN; ``arch``: its record from :func:`build_maskrcnn`;
    ``score_threshold``: sets ``roi_heads.score_thresh``; ``source``: where the weights came from.
    """

    name = "torchvision"

    def __init__(self, model: nn.Module, arch: dict, *, score_threshold: float = 0.5,
                 device: str | torch.device = "cpu", source: str | None = None):
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.model = model
        self.arch = dict(arch)
        self.score_threshold = float(score_threshold)
        self.source = source
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self._capturing = False
        self._captured: torch.Tensor | None = None
        self.model.roi_heads.mask_roi_pool.register_forward_hook(self._capture)

    @classmethod
    def build(cls, *, backbone: str = "mobilenet_v2", weights: Any = None, checkpoint: str | Path | None = None,
              min_size: int | None = None, max_size: int | None = None, score_threshold: float = 0.5,
              num_classes: int = 2, device: str | torch.device = "cpu", **options: Any) -> TorchvisionBackend:
        """From a training checkpoint (its architecture; ``min_size``/``max_size`` given here win
        over the recorded ones) or from :func:`build_maskrcnn` arguments (sizes default 512/853)."""
        if checkpoint is not None:
            saved = load_checkpoint(checkpoint)
            arch = dict(saved["arch"])
            arch["min_size"] = int(min_size or arch["min_size"])
            arch["max_size"] = int(max_size or arch["max_size"])
            arch["maskrcnn_options"] = {**arch.get("maskrcnn_options", {}), **options}
            model = model_from_arch(arch)
            model.load_state_dict(saved["model"])
            source = file_tag("checkpoint", checkpoint)
        else:
            model, arch = build_maskrcnn(backbone, num_classes=num_classes, weights=weights,
                                         min_size=min_size or 512, max_size=max_size or 853, **options)
            source = arch["initial_weights"]
        return cls(model, arch, score_threshold=score_threshold, device=device, source=source)

    def config(self) -> dict:
        return {**self.arch, "weights": self.source, "score_threshold": self.score_threshold}

    def to(self, device: str | torch.device) -> TorchvisionBackend:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def _capture(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if self._capturing:
            self._captured = output

    def _tensors(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1).float().div_(255)
                for image in images]

    def run(self, images: Sequence[np.ndarray]) -> tuple[list[RawDetections], Any]:
        """GeneralizedRCNN's eval forward (transform, backbone, RPN, RoI heads), keeping the
        feature maps and the mask head's pooled input; boxes mapped back to input pixels."""
        model = self.model
        if model.training:
            model.eval()
        model.roi_heads.score_thresh = self.score_threshold
        original_sizes = [tuple(image.shape[:2]) for image in images]
        image_list, _ = model.transform(self._tensors(images))
        features = model.backbone(image_list.tensors)
        proposals, _ = model.rpn(image_list, features)
        self._capturing, self._captured = True, None
        try:
            detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
            pooled = self._captured
        finally:
            self._capturing, self._captured = False, None
        counts = [len(d["boxes"]) for d in detections]
        roi_per_image = pooled.split(counts) if pooled is not None else [None] * len(counts)
        raws = []
        for det, roi, size, original in zip(detections, roi_per_image, image_list.image_sizes, original_sizes):
            order = torch.argsort(det["scores"], descending=True, stable=True)
            boxes = resize_boxes(det["boxes"][order], size, original)
            raws.append(RawDetections(boxes=boxes.cpu().numpy().astype(np.float32),
                                      scores=det["scores"][order].cpu().numpy().astype(np.float32),
                                      roi_features=roi[order], mask_probs=det["masks"][order]))
        return raws, (features, image_list.image_sizes, original_sizes)

    def pool(self, state: Any, boxes: Sequence[np.ndarray]) -> list[torch.Tensor]:
        features, image_sizes, original_sizes = state
        model_boxes = [resize_boxes(torch.as_tensor(b, dtype=torch.float32, device=self.device), original, size)
                       for b, size, original in zip(boxes, image_sizes, original_sizes)]
        pooled = self.model.roi_heads.mask_roi_pool(features, model_boxes, image_sizes)
        return list(pooled.split([len(b) for b in boxes]))
