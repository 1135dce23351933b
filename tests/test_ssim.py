"""SSIM (extractors/ssim.py) against a literal per-pixel implementation of the reference formula."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from extractors.ssim import C1, C2, SSIMLoss, _filter, gaussian_window, ssim


def literal_ssim(x: np.ndarray, y: np.ndarray, size: int = 10, sigma: float = 1.5) -> float:
    """Per pixel, per channel: zero-padded windowed sums with the 2-D Gaussian, then the SSIM formula."""
    taps = np.array([math.exp(-((i - size // 2) ** 2) / (2 * sigma ** 2)) for i in range(size)])
    taps /= taps.sum()
    window = np.outer(taps, taps)
    pad = size // 2
    batch, channels, height, width = x.shape
    out_h, out_w = height + 2 * pad - size + 1, width + 2 * pad - size + 1
    values = []
    for b in range(batch):
        for c in range(channels):
            xp = np.pad(x[b, c], pad)
            yp = np.pad(y[b, c], pad)
            for i in range(out_h):
                for j in range(out_w):
                    wx, wy = xp[i:i + size, j:j + size], yp[i:i + size, j:j + size]
                    mx, my = (window * wx).sum(), (window * wy).sum()
                    vx = (window * wx * wx).sum() - mx * mx
                    vy = (window * wy * wy).sum() - my * my
                    cxy = (window * wx * wy).sum() - mx * my
                    values.append(((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx ** 2 + my ** 2 + C1) * (vx + vy + C2)))
    return float(np.mean(values))


def test_window_is_centred_on_index_five_for_size_ten():
    taps = gaussian_window(10, 1.5)
    assert taps.shape == (10,)
    assert int(taps.argmax()) == 5
    assert torch.isclose(taps.sum(), torch.tensor(1.0))
    assert torch.isclose(taps[4], taps[6]) and not torch.isclose(taps[0], taps[9])  # asymmetric tail


@pytest.mark.parametrize("size, sigma", [(10, 1.5), (11, 1.5), (7, 1.0)])
def test_ssim_matches_literal_per_pixel_reference(size, sigma):
    rng = np.random.default_rng(0)
    x = rng.random((2, 2, 9, 11))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    expected = literal_ssim(x, y, size, sigma)
    got = ssim(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), size, sigma)
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_separable_filtering_equals_two_dimensional_window_with_129_by_129_map():
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    taps = gaussian_window(10, 1.5)
    window = torch.outer(taps, taps).expand(3, 1, 10, 10)
    full = F.conv2d(x, window, padding=5, groups=3)
    assert full.shape[-2:] == (129, 129)
    assert torch.allclose(_filter(x, taps), full, atol=1e-6)


def test_identical_images_give_zero_loss_and_different_images_positive_loss():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 32, 32, generator=gen)
    loss = SSIMLoss()
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(x, torch.rand(3, 3, 32, 32, generator=gen))) > 0.5


def test_loss_gradient_is_finite_and_points_towards_the_target():
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 24, 24, generator=gen)
    x = torch.rand(2, 3, 24, 24, generator=gen).requires_grad_()
    loss = SSIMLoss()
    before = loss(x, target)
    before.backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        after = loss(x - 0.5 * x.grad / x.grad.abs().max(), target)
    assert after < before


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
