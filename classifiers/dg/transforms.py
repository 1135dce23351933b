"""Training and evaluation transforms of the DG algorithms, on float images (3, H, W) in [0, 1].

Training (:func:`train_transform`, by the ``augmentation`` hyper-parameter):

* ``"domainbed"`` (METHODS §3.1): RandomResizedCrop(size, scale 0.7-1) + horizontal flip +
  ColorJitter(0.3, 0.3, 0.3, 0.3) + RandomGrayscale(0.1).
* ``"boda"`` (§8.9; the paper gives no parameters, these are ours): RandomResizedCrop(0.7-1) + horizontal and
  vertical flips + rotation (±180°) + ColorJitter(0.3, 0.3, 0.3, 0.3) + Gaussian blur (kernel 5, σ 0.1-2, p 0.5)
  + RandomGrayscale(0.1).
* ``"sada"`` (§4.2): RandomResizedCrop(0.7-1) + horizontal flip; colour is handled inside the algorithm.
* ``"fewshot"`` / ``"fewshot_target"`` (§5.3, §8.16, §8.18): resize to size, Reinhard to the reference
  statistics; ``degrade=True`` (the high-quality source only) first applies :class:`RandomResolutionLoss` and
  :class:`RandomCenterZoom` (pixel ranges 50-200 and 100-200 at size 224, scaled with size).
* ``"none"``: resize only.

``crops=True``: the same recipes for the detector's cell crops (:mod:`classifiers.dg.crops`). A crop is the
cell's box plus a 10-20 px margin, resized to a square: the cell fills it, centred, at about the same scale in
every lab, which is much of what makes crops comparable across labs. Two steps assume a whole field and are
changed: RandomResizedCrop(0.7-1) becomes a plain resize (a 0.7-area crop cuts up to 16 % of each side, into
the cell's border, which the margin (4-8 % of the side) does not cover, and rescales the cell by up to 1.2x,
undoing the detector's scale normalisation); the few-shot degradation keeps its resolution loss but drops
:class:`RandomCenterZoom` (a 2x centre zoom of a crop shows half of the cell: the zoom it simulates, a lab
imaging at another magnification, is what the detector's crop removes). Flips, rotations, colour jitter, blur,
grayscale and Reinhard are unchanged (a cell has no up or left; the stain is what they vary).

Evaluation (:func:`eval_transform`): Resize((size, size)), plus Reinhard for the few-shot augmentations (the
same for crops).
ImageNet normalisation is the featurizer's job (:mod:`classifiers.dg.backbones`), not the transform's.
"""
from __future__ import annotations

import torch
from torch import Tensor

from aecfe import torchvision_compat  # noqa: F401  (must precede torchvision)
from aecfe.errors import InputError
from classifiers.dg.color import ReinhardTransform

from torchvision.transforms import v2  # noqa: E402

AUGMENTATIONS: tuple[str, ...] = ("domainbed", "boda", "sada", "fewshot", "fewshot_target", "none")


class RandomResolutionLoss:
    """Downscale to s × s with s ~ U{low, …, high}, then upscale to size × size (bilinear, antialiased)."""

    def __init__(self, size: int = 224, low: int = 50, high: int = 200):
        self.size, self.low, self.high = size, low, high

    def __call__(self, x: Tensor) -> Tensor:
        side = int(torch.randint(self.low, self.high + 1, ()))
        small = v2.functional.resize(x, [side, side], antialias=True)
        return v2.functional.resize(small, [self.size, self.size], antialias=True)


class RandomCenterZoom:
    """Centre crop n × n with n ~ U{low, …, high} (at most the image side), resized to size × size."""

    def __init__(self, size: int = 224, low: int = 100, high: int = 200):
        self.size, self.low, self.high = size, low, high

    def __call__(self, x: Tensor) -> Tensor:
        side = min(int(torch.randint(self.low, self.high + 1, ())), *x.shape[-2:])
        crop = v2.functional.center_crop(x, [side, side])
        return v2.functional.resize(crop, [self.size, self.size], antialias=True)


def _resize(size: int) -> v2.Resize:
    return v2.Resize((size, size), antialias=True)


def train_transform(augmentation: str, size: int = 224, degrade: bool = False, crops: bool = False):
    """The training transform named ``augmentation`` (module docstring) at ``size`` pixels; ``crops``: its
    version for cell crops (module docstring: no random resized crop, no centre zoom)."""
    crop = _resize(size) if crops else v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True)
    if augmentation == "domainbed":
        steps = [crop, v2.RandomHorizontalFlip(), v2.ColorJitter(0.3, 0.3, 0.3, 0.3), v2.RandomGrayscale(0.1)]
    elif augmentation == "boda":
        steps = [crop, v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(180),
                 v2.ColorJitter(0.3, 0.3, 0.3, 0.3), v2.RandomApply([v2.GaussianBlur(5, (0.1, 2.0))], p=0.5),
                 v2.RandomGrayscale(0.1)]
    elif augmentation == "sada":
        steps = [crop, v2.RandomHorizontalFlip()]
    elif augmentation in ("fewshot", "fewshot_target"):
        scale = size / 224  # the paper's pixel ranges are for 224-pixel inputs
        degradation = [RandomResolutionLoss(size, round(50 * scale), round(200 * scale))]
        if not crops:
            degradation.append(RandomCenterZoom(size, round(100 * scale), round(200 * scale)))
        steps = (degradation if degrade else []) + [_resize(size), ReinhardTransform()]
    elif augmentation == "none":
        steps = [_resize(size)]
    else:
        raise InputError(f"unknown augmentation {augmentation!r}; available: {', '.join(AUGMENTATIONS)}")
    if degrade and augmentation not in ("fewshot", "fewshot_target"):
        raise InputError("degrade=True is the few-shot source degradation; use it with the 'fewshot' augmentation")
    return v2.Compose(steps)


def eval_transform(augmentation: str, size: int = 224):
    """Resize((size, size)), plus Reinhard for the few-shot augmentations."""
    if augmentation not in AUGMENTATIONS:
        raise InputError(f"unknown augmentation {augmentation!r}; available: {', '.join(AUGMENTATIONS)}")
    steps = [_resize(size)]
    if augmentation in ("fewshot", "fewshot_target"):
        steps.append(ReinhardTransform())
    return v2.Compose(steps)
