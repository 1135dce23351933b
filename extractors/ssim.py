"""SSIM as trained by AE-CFE (METHODS §1.6 and §8.3), and the loss 1 − SSIM.

Window: 1-D taps g_x = exp(−(x − c)²/(2σ²)) for x = 0 … size−1 with centre c = size // 2, normalised to sum 1;
the 2-D window is the outer product g gᵀ. The reference trains with size 10 (centre 5, so the window is slightly
asymmetric) and σ = 1.5. Filtering is per channel (depthwise) with zero padding size // 2, so a 128×128 input
gives a 129×129 map for size 10. With μ = w∗x, σ_x² = w∗x² − μ_x², σ_xy = w∗(xy) − μ_xμ_y::

    SSIM map = ((2μ_xμ_y + C1)(2σ_xy + C2)) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)),  C1 = 0.01², C2 = 0.03²

and SSIM is the mean of the map over batch, channels and pixels. Because the window is an outer product, the
filter runs as two 1-D passes (rows, then columns), which equals the 2-D zero-padded filtering and costs
2·size instead of size² multiply-adds per pixel; all five local moments are filtered in one depthwise call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def gaussian_window(size: int = 10, sigma: float = 1.5) -> Tensor:
    """The normalised 1-D window (size,): exp(−(x − size//2)²/(2σ²)) for x = 0 … size−1, float32."""
    if size < 1 or sigma <= 0:
        raise ValueError(f"SSIM window needs size >= 1 and sigma > 0, got size={size}, sigma={sigma}")
    x = torch.arange(size, dtype=torch.float64)
    taps = torch.exp(-((x - size // 2) ** 2) / (2 * sigma ** 2))
    return (taps / taps.sum()).float()


def _filter(stack: Tensor, taps: Tensor) -> Tensor:
    """Depthwise separable zero-padded filtering of (B, K, H, W) with the outer product of ``taps``."""
    channels, size = stack.shape[1], taps.numel()
    rows = taps.view(1, 1, size, 1).expand(channels, 1, size, 1).to(stack)
    stack = F.conv2d(stack, rows, padding=(size // 2, 0), groups=channels)
    return F.conv2d(stack, rows.transpose(2, 3), padding=(0, size // 2), groups=channels)


def ssim(x: Tensor, y: Tensor, window_size: int = 10, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of two image batches (B, C, H, W) with values in [0, 1]; a scalar tensor, 1 for x == y.

    Computed in float32 whatever the input dtype (σ² = E[x²] − μ² loses everything in half precision).

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> float(ssim(x, x))
        1.0
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.float(), y.float()
    channels = x.shape[1]
    moments = _filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), gaussian_window(window_size, sigma))
    mu_x, mu_y, xx, yy, xy = moments.split(channels, dim=1)
    mu_xy = mu_x * mu_y
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    numerator = (2 * mu_xy + C1) * (2 * (xy - mu_xy) + C2)
    denominator = (mu_xx + mu_yy + C1) * ((xx - mu_xx) + (yy - mu_yy) + C2)
    return (numerator / denominator).mean()


class SSIMLoss(nn.Module):
    """1 − SSIM(x, y) for (B, C, H, W) images in [0, 1]; see :func:`ssim` (defaults: window 10, σ 1.5).

    Example:
        >>> loss = SSIMLoss()
        >>> x = torch.rand(2, 3, 32, 32)
        >>> float(loss(x, x))
        0.0
    """

    def __init__(self, window_size: int = 10, sigma: float = 1.5):
        super().__init__()
        self.window_size = window_size
        self.sigma = sigma

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return 1 - ssim(x, y, self.window_size, self.sigma)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, sigma={self.sigma}"
