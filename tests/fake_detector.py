"""A deterministic, instant detector backend for pipeline tests (no Mask R-CNN to train).

Each image gets one detection: the centred box covering 60 % of each side, score 0.9, RoI features
computed from the pixels in the box (so they differ between images and are reproducible). Images whose
mean brightness is below ``dark_below`` get no detection (the undetected path).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from detectors.base import Detector, DetectorBackend, RawDetections


class FakeBackend(DetectorBackend):
    name = "fake"

    def __init__(self, dark_below: float = 20.0):
        self.dark_below = dark_below
        self.calls = 0

    def config(self) -> dict:
        return {"backend": self.name, "score_threshold": 0.5, "dark_below": self.dark_below}

    def _features(self, image: np.ndarray, box: np.ndarray) -> torch.Tensor:
        x0, y0, x1, y1 = box.astype(int)
        region = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1])).permute(2, 0, 1).float()[None] / 255
        pooled = F.adaptive_avg_pool2d(region, 14)  # (1, 3, 14, 14)
        channels = torch.arange(256, dtype=torch.float32).view(1, 256, 1, 1)
        return pooled.repeat(1, 86, 1, 1)[:, :256] * (1 + channels / 256) - 0.5

    def run(self, images):
        self.calls += 1
        raws = []
        for image in images:
            height, width = image.shape[:2]
            if image.mean() < self.dark_below:
                raws.append(RawDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                          torch.zeros(0, 256, 14, 14), torch.zeros(0, 1, 28, 28)))
                continue
            box = np.array([[0.2 * width, 0.2 * height, 0.8 * width, 0.8 * height]], np.float32)
            raws.append(RawDetections(box, np.array([0.9], np.float32), self._features(image, box[0]),
                                      torch.ones(1, 1, 28, 28)))
        return raws, images

    def pool(self, state, boxes):
        return [torch.cat([self._features(image, b) for b in box]) if len(box) else torch.zeros(0, 256, 14, 14)
                for image, box in zip(state, boxes)]


def fake_detector(**options) -> Detector:
    return Detector(FakeBackend(**options))
