"""The thesis's online detector augmentations (METHODS §1.3), applied to half the samples.

With probability ``p`` (0.5) a sample goes through the chain below, each step drawn independently
from the sample's own seeded generator; otherwise it is left untouched:

1. horizontal flip (prob. 0.5), vertical flip (prob. 0.5);
2. affine rotation by U(-180, 180) degrees and scaling by U(0.8, 1.2) about the centre (prob. 0.5;
   the image is filled with its median colour, masks with 0);
3. colour temperature (prob. 0.5): red and blue gains ``1 + t`` and ``1 - t``, t ~ U(-0.1, 0.1)
   (a warm/cool white-balance shift; imgaug's Kelvin table is not reproduced);
4. linear contrast (prob. 0.5): ``v' = 127 + a (v - 127)`` on 0-255 values, a ~ U(0.75, 1.25);
5. bilateral blur (prob. 0.25): :func:`bilateral_filter`, diameter 5, sigma_space U(1, 3),
   sigma_color U(10, 40)/255.

Geometry uses ``torchvision.transforms.v2.functional`` on ``tv_tensors`` (Image and Mask); boxes are
then recomputed from the transformed masks (``torchvision.ops.masks_to_boxes``), which is exact
under rotation, where rotating box corners would inflate the box. Instances whose mask leaves the
image are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aecfe import torchvision_compat  # noqa: F401  (before torchvision)
from torchvision import tv_tensors  # noqa: E402
from torchvision.ops import masks_to_boxes  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402


def bilateral_filter(image: torch.Tensor, diameter: int = 5, sigma_space: float = 2.0,
                     sigma_color: float = 0.1) -> torch.Tensor:
    """Edge-preserving blur of a (C, H, W) float image in [0, 1].

    ``out(p) = sum_q w(p, q) I(q) / sum_q w(p, q)`` over the ``diameter`` x ``diameter`` window,
    ``w = exp(-|p - q|^2 / (2 sigma_space^2)) * exp(-||I(p) - I(q)||^2 / (2 sigma_color^2))``
    (colour distance over all channels, reflect padding). One shifted copy per window offset, so
    memory stays at a few images. Measured: 512x512 RGB, diameter 5, about 40 ms on one core.
    """
    if diameter < 1 or diameter % 2 == 0:
        raise ValueError(f"diameter must be odd and positive, got {diameter}")
    radius = diameter // 2
    padded = F.pad(image[None], (radius,) * 4, mode="reflect")[0]
    height, width = image.shape[-2:]
    numerator = torch.zeros_like(image)
    denominator = torch.zeros_like(image[:1])
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[:, radius + dy:radius + dy + height, radius + dx:radius + dx + width]
            colour = ((shifted - image) ** 2).sum(dim=0, keepdim=True)
            weight = torch.exp(-colour / (2 * sigma_color ** 2) - (dy * dy + dx * dx) / (2 * sigma_space ** 2))
            numerator += weight * shifted
            denominator += weight
    return numerator / denominator


@dataclass(frozen=True)
class DetectionAugment:
    """Callable ``(image, boxes, masks, rng) -> (image, boxes, masks, keep)``.

    ``image`` (3, H, W) float in [0, 1]; ``boxes`` (N, 4) float32 xyxy; ``masks`` (N, H, W) bool;
    ``rng`` a numpy Generator (one per sample, for reproducible and resumable training). Returns
    the augmented image, the kept instances' boxes (unchanged when the sample is not augmented,
    else enclosing the transformed masks: x2 = last mask column + 1) and masks, and ``keep``, the
    indices of the kept instances.
    """

    p: float = 0.5
    max_rotation: float = 180.0
    scale: tuple[float, float] = (0.8, 1.2)
    temperature: float = 0.1
    contrast: tuple[float, float] = (0.75, 1.25)
    blur_p: float = 0.25

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if rng.random() >= self.p:
            return image, boxes, masks, torch.arange(len(masks))
        img = tv_tensors.Image(image)
        msk = tv_tensors.Mask(masks.to(torch.uint8))
        if rng.random() < 0.5:
            img, msk = TF.horizontal_flip(img), TF.horizontal_flip(msk)
        if rng.random() < 0.5:
            img, msk = TF.vertical_flip(img), TF.vertical_flip(msk)
        if rng.random() < 0.5:
            angle = float(rng.uniform(-self.max_rotation, self.max_rotation))
            scale = float(rng.uniform(*self.scale))
            fill = image.flatten(1).median(dim=1).values.tolist()
            img = TF.affine(img, angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                            interpolation=TF.InterpolationMode.BILINEAR, fill=fill)
            msk = TF.affine(msk, angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                            interpolation=TF.InterpolationMode.NEAREST, fill=0)
        out = img.as_subclass(torch.Tensor)
        if rng.random() < 0.5:
            t = float(rng.uniform(-self.temperature, self.temperature))
            out = out * torch.tensor([1 + t, 1.0, 1 - t]).view(3, 1, 1)
        if rng.random() < 0.5:
            a = float(rng.uniform(*self.contrast))
            out = 127 / 255 + a * (out - 127 / 255)
        out = out.clamp(0, 1)
        if rng.random() < self.blur_p:
            out = bilateral_filter(out, 5, float(rng.uniform(1, 3)), float(rng.uniform(10, 40)) / 255)
        masks_out = msk.as_subclass(torch.Tensor).bool()
        keep = torch.nonzero(masks_out.flatten(1).any(dim=1)).flatten()
        masks_out = masks_out[keep]
        return out, mask_boxes(masks_out), masks_out, keep


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) float32 xyxy boxes enclosing (N, H, W) masks at pixel edges (x2 = last column + 1,
    so a one-pixel mask still has x2 > x1, which torchvision requires of training boxes)."""
    if not len(masks):
        return torch.zeros((0, 4), dtype=torch.float32)
    boxes = masks_to_boxes(masks).float()
    boxes[:, 2:] += 1
    return boxes

