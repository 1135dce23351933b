"""Colour operations on batches of RGB images (…, 3, H, W), float in [0, 1].

* Reinhard colour transfer in lαβ space to fixed reference statistics (the few-shot workflow, METHODS §5.3 and
  §8.16): :func:`rgb_to_lab`, :func:`lab_to_rgb`, :func:`reinhard`, :class:`ReinhardTransform`.
* :func:`color_jitter` — torchvision's ColorJitter semantics with an independent draw (factors *and* order of
  the four adjustments) for every image of a batch, vectorised (torchvision draws one set per call; jittering
  192 re-stained 224² views one by one costs ~80 s on two CPU cores, this ~1 s).

>>> x = torch.rand(2, 3, 8, 8) * 0.8 + 0.1
>>> lab = rgb_to_lab(reinhard(x, clip=False))
>>> torch.allclose(lab.mean(dim=(2, 3)), torch.tensor(REFERENCE_MEAN).expand(2, 3), atol=1e-4)
True
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import Tensor

REFERENCE_MEAN: tuple[float, float, float] = (-0.40528, -0.07203, 0.01748)
"""μ* of the few-shot workflow (hard-coded "Saint-Antoine" statistics, natural-log lαβ units)."""
REFERENCE_STD: tuple[float, float, float] = (0.45889, 0.15996, 0.02254)
"""σ* of the few-shot workflow."""

RGB_TO_LMS = torch.tensor([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]],
                          dtype=torch.float64)
LOG_LMS_TO_LAB = (torch.diag(torch.tensor([1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
                                          dtype=torch.float64))
                  @ torch.tensor([[1.0, 1, 1], [1, 1, -2], [1, -1, 0]], dtype=torch.float64))
ZERO_REPLACEMENT = 1 / 255
"""Value given to pixels that are exactly 0 before the logarithm (§8.16: the older uint8 pipeline's 0 -> 1)."""


def _channel_matrix(matrix: Tensor, x: Tensor) -> Tensor:
    """matrix (3, 3) applied to the channel axis (−3) of x."""
    return torch.einsum("ij,...jhw->...ihw", matrix.to(x.dtype).to(x.device), x)


def rgb_to_lab(x: Tensor) -> Tensor:
    """RGB (…, 3, H, W) in [0, 1] -> lαβ: LMS = A·RGB, natural log, then the lαβ rotation (Reinhard et al.)."""
    x = torch.where(x == 0, torch.full_like(x, ZERO_REPLACEMENT), x)
    lms = _channel_matrix(RGB_TO_LMS, x).clamp_min(1e-12)
    return _channel_matrix(LOG_LMS_TO_LAB, lms.log())


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_lab` (exact matrix inverses; not clipped)."""
    log_lms = _channel_matrix(torch.linalg.inv(LOG_LMS_TO_LAB), lab)
    return _channel_matrix(torch.linalg.inv(RGB_TO_LMS), log_lms.exp())


def reinhard(x: Tensor, mean: Sequence[float] = REFERENCE_MEAN, std: Sequence[float] = REFERENCE_STD,
             clip: bool = True) -> Tensor:
    """Reinhard transfer of each image to the lαβ statistics (``mean``, ``std``) per channel.

    ℓ′_c = (ℓ_c − m_c)·σ*_c / s_c + μ*_c with the image's own mean m_c and unbiased std s_c over all its pixels
    (background included; s_c floored at 1e-6 for flat channels), then back to RGB, clipped to [0, 1] when
    ``clip`` (§8.16). x: (3, H, W) or (N, 3, H, W).
    """
    lab = rgb_to_lab(x)
    own_mean = lab.mean(dim=(-2, -1), keepdim=True)
    own_std = lab.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    target_mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    target_std = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    rgb = lab_to_rgb((lab - own_mean) * target_std / own_std + target_mean)
    return rgb.clamp(0, 1) if clip else rgb


class ReinhardTransform:
    """:func:`reinhard` as a transform for one image (3, H, W) in [0, 1] (pipelines, datasets)."""

    def __init__(self, mean: Sequence[float] = REFERENCE_MEAN, std: Sequence[float] = REFERENCE_STD,
                 clip: bool = True):
        self.mean, self.std, self.clip = tuple(mean), tuple(std), clip

    def __call__(self, x: Tensor) -> Tensor:
        return reinhard(x, self.mean, self.std, self.clip)

    def __repr__(self) -> str:
        return f"ReinhardTransform(mean={self.mean}, std={self.std}, clip={self.clip})"


# ---- per-image colour jitter -------------------------------------------------------------------------------------

def _grayscale(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(…, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(dim=-3)
    max_c, min_c = x.amax(dim=-3), x.amin(dim=-3)
    delta = max_c - min_c
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(max_c == r, ((g - b) / safe_delta) % 6,
                      torch.where(max_c == g, (b - r) / safe_delta + 2, (r - g) / safe_delta + 4))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue)) % 1.0
    saturation = delta / torch.where(max_c > 0, max_c, torch.ones_like(max_c))
    return torch.stack([hue, saturation, max_c], dim=-3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    hue, saturation, value = (c.unsqueeze(-3) for c in hsv.unbind(dim=-3))
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(3, 1, 1)
    k = (offsets + hue * 6) % 6
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)


def _per_image(factor: Tensor, x: Tensor) -> Tensor:
    return factor.view(-1, *([1] * (x.ndim - 1)))


def _adjust(x: Tensor, which: int, factor: Tensor) -> Tensor:
    """Adjustment ``which`` (0 brightness, 1 contrast, 2 saturation, 3 hue) with per-image ``factor`` (N,)."""
    f = _per_image(factor, x)
    if which == 0:
        return (x * f).clamp(0, 1)
    if which == 1:
        mean = _grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
        return (f * x + (1 - f) * mean).clamp(0, 1)
    if which == 2:
        return (f * x + (1 - f) * _grayscale(x)).clamp(0, 1)
    hsv = rgb_to_hsv(x)
    hue = (hsv[:, :1] + f) % 1.0
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1)).clamp(0, 1)


def color_jitter(x: Tensor, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """ColorJitter(brightness, contrast, saturation, hue) with independent random factors and order per image.

    As torchvision: factors are uniform in [max(0, 1 − b), 1 + b] (likewise contrast, saturation) and the hue
    shift uniform in [−hue, hue]; the enabled adjustments run in a random order. x: (N, 3, H, W) in [0, 1].
    """
    n = len(x)
    ranges = [(max(0.0, 1 - brightness), 1 + brightness), (max(0.0, 1 - contrast), 1 + contrast),
              (max(0.0, 1 - saturation), 1 + saturation), (-hue, hue)]
    enabled = [i for i, amount in enumerate((brightness, contrast, saturation, hue)) if amount > 0]
    if not enabled or n == 0:
        return x
    factors = torch.stack([low + (high - low) * torch.rand(n, generator=generator) for low, high in ranges])
    factors = factors.to(x.device, x.dtype)
    orders = list(itertools.permutations(enabled))
    chosen = torch.randint(len(orders), (n,), generator=generator)
    out = torch.empty_like(x)
    for index in torch.unique(chosen).tolist():
        members = torch.nonzero(chosen == index).flatten().to(x.device)
        part = x[members]
        for which in orders[index]:
            part = _adjust(part, which, factors[which, members])
        out[members] = part
    return out
