"""The PCA-initialised linear path of the autoencoder (``AutoencoderConfig.linear_path`` = M > 0).

Why: the reference encoder (five strided conv/GN blocks) and decoder start from a random map and, on real cells,
spend their first epochs outputting the mean cell; after the recipe's full budget their 50-d code still explains
less of the scaled RoI maps than their first 10 principal components do (docs/autoencoder_training.md, "The
linear yardstick"). This path starts the autoencoder *at* the best linear code and lets the convolutions learn what
a linear map cannot, as a residual.

For the scaled map h (B,256,14,14), flattened to D = 50,176 values, and the code size K (``bottleneck``)::

    w = (vec h − μ) Vᵀ / s                         (B, M)  whitened scores on the top M principal axes
    z = tanh(E(h) + w Aᵀ)                          (B, K)  E: the convolutional encoder before its tanh
    ĥ = D(z) + μ + ((z Bᵀ) ⊙ s) V                  (B, D)  D: the convolutional feature decoder

Fixed buffers, fitted once on a sample of the training cells (:meth:`LinearPath.fit`): mean μ (D,), axes V (M, D)
(rows orthonormal), score standard deviations s (M,). Trained: A (K, M) and B (M, K). At the fit, A = c·[I 0] and
B = [I 0]ᵀ / c with c = ``CODE_GAIN`` (so the code of a cell one standard deviation out along an axis is
tanh(0.5) ≈ 0.46, in tanh's near-linear range), and the caller zeroes the last layer of E and of D, so training
starts from the PCA code and its reconstruction (up to tanh's bend on outlying cells).
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import Tensor, nn

from aecfe.errors import InputError

CODE_GAIN = 0.5
"""c: the code of a cell at one score standard deviation along axis k is tanh(c) at initialisation."""


class LinearPath(nn.Module):
    """w -> code and code -> map linear maps through the top ``components`` principal axes of the scaled maps.

    ``fitted`` (a bool buffer, saved in checkpoints) is False until :meth:`fit` has run; the path then adds
    nothing useful, so the trainer fits it before the first step.

    Example:
        >>> path = LinearPath(size=48, components=4, bottleneck=3)
        >>> _ = path.fit(torch.randn(20, 48))
        >>> path.into_code(torch.randn(2, 48)).shape, path.from_code(torch.zeros(2, 3)).shape
        (torch.Size([2, 3]), torch.Size([2, 48]))
    """

    def __init__(self, size: int, components: int, bottleneck: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("axes", torch.zeros(components, size))
        self.register_buffer("scale", torch.ones(components))
        self.register_buffer("fitted", torch.tensor(False))
        self.to_code = nn.Parameter(torch.zeros(bottleneck, components))
        self.to_map = nn.Parameter(torch.zeros(components, bottleneck))

    @property
    def components(self) -> int:
        return self.axes.shape[0]

    def fit(self, maps: Tensor, seed: int = 0) -> dict[str, float]:
        """Fit μ, V, s on ``maps`` (N, D) (N ≥ 2) with a randomized PCA, and reset A and B to the PCA code.

        With N ≤ M cells only the first N − 1 axes are fitted (the rest stay zero and add nothing). Returns
        ``{"pca_axes": axes fitted, "pca_explained": fraction of the maps' variance on them}``.
        """
        maps = maps.detach().float().cpu().numpy()
        if maps.ndim != 2 or maps.shape[1] != self.mean.numel() or len(maps) < 2:
            raise InputError(f"the linear path fits at least 2 maps of shape (N, {self.mean.numel()}), "
                             f"got {maps.shape}")
        axes = min(self.components, len(maps) - 1)
        pca = PCA(axes, svd_solver="randomized", random_state=seed).fit(maps)
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(pca.mean_))
            self.axes.zero_()
            self.axes[:axes] = torch.from_numpy(pca.components_)
            self.scale.fill_(1.0)
            self.scale[:axes] = torch.from_numpy(np.sqrt(np.maximum(pca.explained_variance_, 1e-12)))
            eye = torch.eye(*self.to_code.shape)
            self.to_code.copy_(eye * CODE_GAIN)
            self.to_map.copy_(eye.T / CODE_GAIN)
            self.fitted.fill_(True)
        return {"pca_axes": axes, "pca_explained": float(np.sum(pca.explained_variance_ratio_))}

    def into_code(self, flat_maps: Tensor) -> Tensor:
        """vec h (B, D) -> w Aᵀ (B, K), the path's share of the encoder's pre-tanh output."""
        scores = (flat_maps - self.mean) @ self.axes.T / self.scale
        return scores @ self.to_code.T

    def from_code(self, codes: Tensor) -> Tensor:
        """z (B, K) -> μ + ((z Bᵀ) ⊙ s) V (B, D), the path's share of the reconstructed map."""
        return self.mean + (codes @ self.to_map.T * self.scale) @ self.axes
