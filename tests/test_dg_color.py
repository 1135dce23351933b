"""Colour operations (classifiers/dg/color.py): Reinhard transfer to fixed lαβ statistics, per-image ColorJitter."""
import pytest
import torch

from aecfe import torchvision_compat  # noqa: F401
from classifiers.dg.color import (REFERENCE_MEAN, REFERENCE_STD, ReinhardTransform, _adjust, color_jitter,
                                  hsv_to_rgb, lab_to_rgb, reinhard, rgb_to_hsv, rgb_to_lab)
from classifiers.dg.data import synthetic_dataset

import torchvision.transforms.v2.functional as TF  # noqa: E402


@pytest.fixture(scope="module")
def cells():
    data = synthetic_dataset(3, size=48)
    return torch.stack([data.image(i) for i in range(len(data))])


def lab_stats(x):
    lab = rgb_to_lab(x)
    return lab.mean(dim=(-2, -1)), lab.std(dim=(-2, -1))


def test_lab_round_trip_and_zero_pixels():
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-5)
    assert torch.isfinite(rgb_to_lab(torch.zeros(1, 3, 2, 2))).all()


def test_reinhard_matches_the_reference_statistics(cells):
    mean, std = lab_stats(reinhard(cells, clip=False))
    assert torch.allclose(mean, torch.tensor(REFERENCE_MEAN).expand_as(mean), atol=1e-4)
    assert torch.allclose(std, torch.tensor(REFERENCE_STD).expand_as(std), atol=1e-4)
    clipped = ReinhardTransform()(cells[0])
    assert clipped.shape == cells[0].shape and 0 <= clipped.min() and clipped.max() <= 1
    mean, std = lab_stats(clipped)
    assert torch.allclose(mean, torch.tensor(REFERENCE_MEAN), atol=0.01)
    assert torch.allclose(std, torch.tensor(REFERENCE_STD), rtol=0.05)


def test_reinhard_to_other_statistics_and_flat_images_stay_finite(cells):
    target_mean, target_std = (-0.5, 0.03, 0.02), (0.4, 0.15, 0.01)
    mean, std = lab_stats(reinhard(cells, target_mean, target_std, clip=False))
    assert torch.allclose(mean, torch.tensor(target_mean).expand_as(mean), atol=1e-4)
    assert torch.allclose(std, torch.tensor(target_std).expand_as(std), atol=1e-4)
    assert torch.isfinite(reinhard(torch.full((3, 4, 4), 0.5))).all()


def test_hsv_round_trip_and_adjustments_equal_torchvision(cells):
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(cells)), cells, atol=1e-5)
    for which, function, factor in [(0, TF.adjust_brightness, 1.3), (1, TF.adjust_contrast, 0.7),
                                    (2, TF.adjust_saturation, 1.4), (3, TF.adjust_hue, -0.12)]:
        ours = _adjust(cells, which, torch.full((len(cells),), factor))
        assert torch.allclose(ours, function(cells, factor), atol=1e-5), which


def test_color_jitter_draws_per_image_and_is_seeded(cells):
    batch = cells[:1].expand(4, -1, -1, -1).contiguous()
    out = color_jitter(batch, 0.2, 0.25, 0.25, 0.15, generator=torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.allclose(out[0], out[1])  # identical inputs, different draws
    again = color_jitter(batch, 0.2, 0.25, 0.25, 0.15, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(color_jitter(batch), batch)
    bright = color_jitter(batch, brightness=0.2, generator=torch.Generator().manual_seed(1))
    ratio = bright.sum(dim=(1, 2, 3)) / batch.sum(dim=(1, 2, 3))
    assert ((ratio > 0.75) & (ratio < 1.2)).all()
