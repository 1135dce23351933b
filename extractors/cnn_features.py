"""The ResNet-RF baseline's features: a torchvision CNN's global-pooled last convolutional map of each cell crop.

``crop (3, 128, 128) uint8 -> [0, 1] -> resize to image_size -> featurizer (ImageNet normalisation inside)
-> (D,)``, D = 1280 for MobileNetV2, 512 for ResNet-18 (:func:`classifiers.dg.backbones.build_featurizer`).
With ImageNet weights this is the thesis's ResNet-RF; with ``weights=None`` the features of a randomly
initialised network (a from-scratch baseline that needs no download). The store stage that writes them is
:func:`aecfe.store.embeddings.cnn_stage`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.inference_mode()
def cnn_features(featurizer: torch.nn.Module, crops: np.ndarray, image_size: int = 128,
                 batch_size: int = 64) -> np.ndarray:
    """(N, 3, S, S) uint8 crops -> (N, D) float32 features of ``featurizer`` (eval mode, on the device of its
    parameters; the features come back on the CPU)."""
    featurizer.eval()
    device = next(featurizer.parameters()).device
    out = []
    for first in range(0, len(crops), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(crops[first:first + batch_size])).to(device).float().div_(255)
        if x.shape[-1] != image_size or x.shape[-2] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        with torch.inference_mode():
            out.append(featurizer(x).float().cpu().numpy())
    width = getattr(featurizer, "n_outputs", 0)
    return np.concatenate(out) if out else np.zeros((0, width), np.float32)
