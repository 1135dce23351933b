"""The AE-CFE two-decoder group-norm autoencoder (METHODS §1.4–1.5, reference ``marrlab/AE-CFE`` ``model.py``).

Data flow for one cell (shapes per sample, batch dimension B in front)::

    roi (256,14,14) --scale_roi_features--> h (256,14,14) in [-1, 1]
    h --encoder--> z (bottleneck,)            tanh code, the cell embedding
    z --feature decoder--> ĥ (256,14,14)      tanh, compared with h (MSE)
    ĥ --image decoder--> r̂ (3,128,128)        sigmoid, compared with the crop r/255 (1 - SSIM)

The image decoder reads the *reconstructed* features ĥ, not z (two-stage decoding, as the reference code).
All convolutions have padding 0 and a bias. Encoder blocks are Conv -> ReLU -> GroupNorm (activation first).

Group normalisation (``AutoencoderConfig.group_norm``):

* ``"chunk"`` (default, faithful): :class:`ChunkGroupNorm`, the reference's custom GN. Layer 1 has 32 groups on
  200 channels, so the 28,800 values of a sample are cut into 32 contiguous chunks of 900 (6.25 channels each);
  variance is the unbiased one.
* ``"torch"``: :class:`torch.nn.GroupNorm` everywhere (biased variance) with 40 groups on layer 1 (5 channels per
  group), the library alternative of METHODS §8.1. It holds parameters of the same names and shapes, so a
  checkpoint loads into either variant.

Measured side by side (``benchmarks/autoencoder_speed.py --compare-group-norm``, 2 shared cores, medians of 3
alternating runs): encoder forward+backward at batch 64 takes 0.061 s with "chunk" (0.069 s computed with the
reference's own operations), 0.056 s with "torch" — ~1.5 % of a 3.9 s training step either way, and encoding runs
at ~1,100–1,250 cells/s with both. Trained from one seed for 21 steps (batch 16, synthetic cells) the two give
total losses 0.419 ("chunk") and 0.421 ("torch"); their feature and image terms stay within 0.1 % and 0.6 % of
each other at every step, the small alignment term (~0.003) within a factor 2.7. The same weights do give
different codes (unbiased vs biased variance: on layer 5 a chunk holds 3 values, so the two normalisers differ by
sqrt(3/2)), so a checkpoint must be used with the variant it was trained with. As the speed gain is nil, the
default is the faithful ``"chunk"``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecfe.errors import InputError
from aecfe.shapes import ROI_SHAPE
from extractors.linear_path import LinearPath

INPUT_SCALINGS = ("minmax", "none")
GROUP_NORMS = ("chunk", "torch")
IMAGE_DECODERS = ("reference", "light")

# (in, out, kernel, stride, groups of the faithful GN, groups of the nn.GroupNorm variant) per encoder block.
_ENCODER_BLOCKS = (
    (256, 200, 3, 1, 32, 40),
    (200, 150, 3, 2, 30, 30),
    (150, 100, 3, 1, 10, 10),
    (100, 70, 2, 1, 10, 10),
    (70, 60, 2, 1, 20, 20),
)


def scale_roi_features(features: Tensor, mode: str = "minmax") -> Tensor:
    """Scale RoI features (B, 256, 14, 14) to the autoencoder input h, returned as float32 of the same shape.

    * ``"minmax"`` (reference, METHODS §1.4): per sample, h = 2·(f − min f)/(max f − min f) − 1 over the whole
      256×14×14 tensor, so each sample spans [−1, 1]. A constant sample (max = min) maps to all zeros.
    * ``"none"``: f unchanged (only cast to float32).
    """
    if mode not in INPUT_SCALINGS:
        raise InputError(f"unknown input scaling {mode!r}; expected one of {INPUT_SCALINGS}")
    features = features.float()
    if mode == "none":
        return features
    flat = features.flatten(1)
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    scaled = torch.where(span > 0, 2 * (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny) - 1, 0.0)
    return scaled.view_as(features)


class ChunkGroupNorm(nn.Module):
    """The reference's group norm: normalise G contiguous chunks of each sample's flattened C×H×W values.

    For x of shape (B, C, H, W): view each sample as G chunks of L = C·H·W/G values, normalise each chunk with its
    own mean and **unbiased** variance, y = (x − mean)/sqrt(var + eps) (L ≥ 2), then apply a per-channel affine
    γ_c·y + β_c (γ = 1, β = 0 at init). Unlike :class:`torch.nn.GroupNorm`, C need not be divisible by G
    (only C·H·W must be), so a chunk may straddle channels. Parameters are named and shaped as nn.GroupNorm's
    (``weight``, ``bias``: (C,)).

    Example:
        >>> norm = ChunkGroupNorm(200, 32)
        >>> norm(torch.randn(2, 200, 12, 12)).shape
        torch.Size([2, 200, 12, 12])
    """

    def __init__(self, num_channels: int, num_groups: int, eps: float = 1e-5):
        super().__init__()
        self.num_channels = num_channels
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        size = channels * height * width // self.num_groups
        if channels != self.num_channels or size * self.num_groups != channels * height * width or size < 2:
            raise ValueError(f"ChunkGroupNorm({self.num_channels}, {self.num_groups}) cannot normalise an input "
                             f"of shape {tuple(x.shape)}: C·H·W must split into groups of >= 2 values")
        # The fused library kernel on (B, G, L) "channels" with the biased variance v_b = v_u·(L−1)/L:
        # (x − μ)/sqrt(v_u + eps) = sqrt((L−1)/L)·(x − μ)/sqrt(v_b + eps·(L−1)/L). Same values, several times
        # faster than var_mean + arithmetic (forward and backward).
        shrink = (size - 1) / size
        chunks = F.group_norm(x.reshape(batch, self.num_groups, size), self.num_groups, eps=self.eps * shrink)
        normalised = (chunks * math.sqrt(shrink)).view_as(x)
        return normalised * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_groups={self.num_groups}, eps={self.eps}"


class JsonConfig:
    """Mixin for flat dataclass configs: JSON-safe dict round trip that rejects unknown keys."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"unknown {cls.__name__} keys {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


@dataclass
class AutoencoderConfig(JsonConfig):
    """Hyper-parameters of :class:`AECFEAutoencoder`; JSON-serialisable (checkpoints, HDF5 store attributes).

    bottleneck: size of the code z (reference 50; the thesis studied 5 … 1000).
    group_norm: ``"chunk"`` (faithful :class:`ChunkGroupNorm`) or ``"torch"`` (nn.GroupNorm, 40 groups on layer 1).
    input_scaling: how RoI features become h, see :func:`scale_roi_features`.
    image_decoder: ``"reference"`` (METHODS §1.5, 3×128×128, ~2.8 GMAC per cell) or ``"light"`` (3×64×64 from
    channels 128/64/32, ~0.29 GMAC per cell, ~10x cheaper), see :func:`image_decoder`.
    linear_path: M > 0 adds the PCA-initialised linear path on the top M principal axes of the scaled maps beside
    the convolutions (:mod:`extractors.linear_path`); 0 [reference] is the convolutions alone.
    """

    bottleneck: int = 50
    group_norm: str = "chunk"
    input_scaling: str = "minmax"
    image_decoder: str = "reference"
    linear_path: int = 0

    def __post_init__(self):
        if not isinstance(self.bottleneck, int) or self.bottleneck < 1:
            raise InputError(f"bottleneck must be a positive integer, got {self.bottleneck!r}")
        if self.group_norm not in GROUP_NORMS:
            raise InputError(f"unknown group_norm {self.group_norm!r}; expected one of {GROUP_NORMS}")
        if self.input_scaling not in INPUT_SCALINGS:
            raise InputError(f"unknown input_scaling {self.input_scaling!r}; expected one of {INPUT_SCALINGS}")
        if self.image_decoder not in IMAGE_DECODERS:
            raise InputError(f"unknown image_decoder {self.image_decoder!r}; expected one of {IMAGE_DECODERS}")
        if not isinstance(self.linear_path, int) or self.linear_path < 0:
            raise InputError(f"linear_path must be an integer >= 0, got {self.linear_path!r}")


def _encoder(config: AutoencoderConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for in_ch, out_ch, kernel, stride, chunk_groups, torch_groups in _ENCODER_BLOCKS:
        norm = (ChunkGroupNorm(out_ch, chunk_groups) if config.group_norm == "chunk"
                else nn.GroupNorm(torch_groups, out_ch))
        layers += [nn.Conv2d(in_ch, out_ch, kernel, stride), nn.ReLU(), norm]
    layers += [nn.Conv2d(60, config.bottleneck, 1), nn.Tanh()]
    return nn.Sequential(*layers)


def _feature_decoder(bottleneck: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(bottleneck, 150, 5), nn.ReLU(),        # 150×5×5
        nn.ConvTranspose2d(150, 200, 4, stride=2), nn.ReLU(),     # 200×12×12
        nn.ConvTranspose2d(200, 256, 3), nn.Tanh(),               # 256×14×14
    )


def image_decoder(name: str = "reference") -> tuple[nn.Sequential, int]:
    """(decoder ĥ (B,256,14,14) -> r̂ (B,3,S,S) in (0, 1), its output side S) for an ``IMAGE_DECODERS`` name.

    * ``"reference"``: the five transposed convolutions of METHODS §1.5, S = 128.
    * ``"light"``: ConvT 256→128 k4 s2 (30×30), ConvT 128→64 k4 s2 (62×62), ConvT 64→32 k3 (64×64), ConvT 32→3
      k1 + sigmoid; S = 64. It is trained against the crop averaged to 64×64 (``F.interpolate(mode="area")``).
    """
    if name == "light":
        return nn.Sequential(
            nn.ConvTranspose2d(256, 128, 4, stride=2), nn.ReLU(),  # 128×30×30
            nn.ConvTranspose2d(128, 64, 4, stride=2), nn.ReLU(),   # 64×62×62
            nn.ConvTranspose2d(64, 32, 3), nn.ReLU(),              # 32×64×64
            nn.ConvTranspose2d(32, 3, 1), nn.Sigmoid(),            # 3×64×64
        ), 64
    return nn.Sequential(
        nn.ConvTranspose2d(256, 200, 5, stride=2), nn.ReLU(),     # 200×31×31
        nn.ConvTranspose2d(200, 180, 3, stride=2), nn.ReLU(),     # 180×63×63
        nn.ConvTranspose2d(180, 150, 3, stride=2), nn.ReLU(),     # 150×127×127
        nn.ConvTranspose2d(150, 128, 2), nn.ReLU(),               # 128×128×128
        nn.ConvTranspose2d(128, 3, 1), nn.Sigmoid(),              # 3×128×128
    ), 128


class AECFEAutoencoder(nn.Module):
    """AE-CFE autoencoder: h (B,256,14,14) -> z (B,bottleneck), ĥ (B,256,14,14), r̂ (B,3,S,S).

    S = ``image_size``: 128 for the reference image decoder, 64 for the light one (``config.image_decoder``).

    ``forward(h)`` returns (z, ĥ, r̂); ``encode(h)`` returns z only (the image decoder, ~97 % of the compute,
    is skipped). h is the *scaled* input: use :meth:`scale_input` on raw RoI features first. With
    ``config.linear_path`` the encoder's and feature decoder's outputs add the linear path's (``self.linear_path``,
    :mod:`extractors.linear_path`), which :meth:`init_linear_path` fits before training.

    Example:
        >>> model = AECFEAutoencoder(AutoencoderConfig(bottleneck=50))
        >>> h = model.scale_input(torch.randn(2, 256, 14, 14))
        >>> [tuple(t.shape) for t in model(h)]
        [(2, 50), (2, 256, 14, 14), (2, 3, 128, 128)]
    """

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = config or AutoencoderConfig()
        self.encoder = _encoder(self.config)
        self.feature_decoder = _feature_decoder(self.config.bottleneck)
        self.image_decoder, self.image_size = image_decoder(self.config.image_decoder)
        self.linear_path = (LinearPath(math.prod(ROI_SHAPE), self.config.linear_path, self.config.bottleneck)
                            if self.config.linear_path else None)

    def scale_input(self, roi: Tensor) -> Tensor:
        """Raw RoI features (B,256,14,14) -> h, per ``config.input_scaling``."""
        return scale_roi_features(roi, self.config.input_scaling)

    def init_linear_path(self, h: Tensor, seed: int = 0) -> dict[str, float]:
        """Fit the linear path's PCA on scaled maps h (N,256,14,14) and zero the last layer of the convolutional
        encoder and feature decoder, so that the model starts as the PCA code (:mod:`extractors.linear_path`).
        Returns the path's fit statistics."""
        if self.linear_path is None:
            raise InputError("this autoencoder has no linear path (AutoencoderConfig.linear_path = 0)")
        statistics = self.linear_path.fit(h.flatten(1), seed=seed)
        with torch.no_grad():
            for layer in (self.encoder[-2], self.feature_decoder[-2]):
                layer.weight.zero_()
                layer.bias.zero_()
        return statistics

    def encode(self, h: Tensor) -> Tensor:
        """h (B,256,14,14) -> z (B,bottleneck)."""
        if self.linear_path is None:
            return self.encoder(h).flatten(1)
        return torch.tanh(self.encoder[:-1](h).flatten(1) + self.linear_path.into_code(h.flatten(1)))

    def decode_features(self, z: Tensor) -> Tensor:
        """z (B,bottleneck) -> ĥ (B,256,14,14)."""
        h_hat = self.feature_decoder(z[:, :, None, None])
        if self.linear_path is None:
            return h_hat
        return h_hat + self.linear_path.from_code(z).view(-1, *ROI_SHAPE)

    def decode_image(self, h_hat: Tensor) -> Tensor:
        """ĥ (B,256,14,14) -> r̂ (B,3,S,S) in (0, 1), S = ``image_size``."""
        return self.image_decoder(h_hat)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.encode(h)
        h_hat = self.decode_features(z)
        return z, h_hat, self.decode_image(h_hat)
