"""The ResNet-RF baseline's features: a torchvision CNN's global-pooled last convolutional map of each cell crop.

``crop (3, 128, 128) uint8 -> [0, 1] -> resize to image_size -> featurizer (ImageNet normalisation inside)
-> (D,)``, D = 1280 for MobileNetV2, 512 for ResNet-18 (:func:`classifiers.dg.backbones.build_featurizer`).
With ImageNet weights this is the thesis's ResNet-RF; with ``weights=None`` the features of a randomly
initialised network (a from-scratch baseline that needs no download).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aecfe.pipeline import EmbeddingStage
from aecfe.store import CellStore


@torch.inference_mode()
def cnn_features(featurizer: torch.nn.Module, crops: np.ndarray, image_size: int = 128,
                 batch_size: int = 64) -> np.ndarray:
    """(N, 3, S, S) uint8 crops -> (N, D) float32 features of ``featurizer`` (eval mode)."""
    featurizer.eval()
    out = []
    for first in range(0, len(crops), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(crops[first:first + batch_size])).float().div_(255)
        if x.shape[-1] != image_size or x.shape[-2] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        out.append(featurizer(x).float().numpy())
    width = getattr(featurizer, "n_outputs", 0)
    return np.concatenate(out) if out else np.zeros((0, width), np.float32)


def cnn_stage(backbone: str = "mobilenet_v2", weights: Any = None, image_size: int = 128, batch_size: int = 64,
              name: str = "cnn") -> EmbeddingStage:
    """The CNN embedding of the store's crops as an :class:`~aecfe.pipeline.EmbeddingStage` (resumable)."""
    from classifiers.dg.backbones import build_featurizer, weights_name

    featurizer = build_featurizer(backbone, weights, freeze_bn=True)
    attrs = {"features": f"{backbone} global-pooled last conv map of the crop at {image_size} px",
             "backbone": backbone, "weights": weights_name(weights)}

    def compute(store: CellStore, rows: slice) -> np.ndarray:
        return cnn_features(featurizer, store.crops(rows), image_size, batch_size)

    return EmbeddingStage(name, compute, attrs)
