"""SADA's stain-based augmentation (METHODS §4.2, code procedure), batched in torch.

For a batch x (N, 3, H, W) of RGB images in [0, 1] (not yet ImageNet-normalised):

1. Dark pixels (all three channels < ``dark_threshold``) become white (1.0); the raw views keep this change.
2. Beer–Lambert optical density V = max(−ln max(x, 1e-6), 1e-6) (X₀ = 1 for [0, 1] images), per image 3 × n.
3. Background offset B = per-channel ``background_percentile`` (1st) percentile of V; V′ = V − B.
4. Sparse NMF V′ ≈ W·H with r stains (:func:`snmf`): W (3, r) unit-norm colour bases, H (r, n) densities.
5. k-means (k = ``n_clusters``, :func:`kmeans`) on the 9-d per-image vectors [vec(W), B]: per-batch
   pseudo-domains.
6. For each image i and each other cluster j, a uniformly drawn donor t of j re-stains i:
   H̃ = H_i ⊙ (P(H_t) + ε) / (P(H_i) + ε) per stain row (P = ``density_percentile``, 99th),
   V* = W_t·H̃ + B_t, x* = exp(−max(V*, ε)); then ColorJitter (:func:`~classifiers.dg.color.color_jitter`,
   drawn per image) on x* only.
7. Output (N·k, 3, H, W) ordered [raw_i, x*_i¹, …, x*_iᵏ⁻¹] for each i.

Degenerate batches (fewer distinct stains than clusters, N < k): donors of the missing clusters are drawn from the
images outside i's cluster (any other image if there is none, i itself if N = 1), so the output always has k
views per image.

Randomness: k-means initialisation, donors and colour jitter draw from ``generator`` (torch's global generator
when None).

>>> x = torch.rand(6, 3, 16, 16) * 0.5 + 0.4
>>> stain_augment(x, n_clusters=3, generator=torch.Generator().manual_seed(0)).shape
torch.Size([18, 3, 16, 16])
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from aecfe.errors import InputError
from classifiers.dg.color import color_jitter

EPS = 1e-6


def percentile(x: Tensor, q: float, dim: int = -1) -> Tensor:
    """The q-th percentile (0..100) along ``dim``, linear interpolation (numpy's and torch.quantile's default).

    Uses ``kthvalue``, so unlike ``torch.quantile`` it has no input size limit. ``dim`` is removed.
    """
    n = x.shape[dim]
    position = q / 100 * (n - 1)
    low = int(math.floor(position))
    high = min(low + 1, n - 1)
    value_low = x.kthvalue(low + 1, dim=dim).values
    if high == low or position == low:
        return value_low
    value_high = x.kthvalue(high + 1, dim=dim).values
    return value_low + (position - low) * (value_high - value_low)


def whiten_dark_pixels(x: Tensor, threshold: float = 0.05) -> Tensor:
    """x (N, 3, H, W) with every pixel whose three channels are all < ``threshold`` set to white (1.0)."""
    dark = (x < threshold).all(dim=1, keepdim=True)
    return x.masked_fill(dark, 1.0)


def optical_density(x: Tensor) -> Tensor:
    """V = max(−ln max(x, 1e-6), 1e-6) for x (N, 3, H, W) in [0, 1]; returned as (N, 3, H·W)."""
    return (-x.clamp_min(EPS).log()).clamp_min(EPS).flatten(2)


def snmf(v: Tensor, n_stains: int = 2, iterations: int = 10, sparsity: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Sparse NMF V ≈ W·H of the SADA code, batched over images.

    Args:
        v: (N, 3, n) background-corrected optical densities V′.

    Returns:
        W (N, 3, r) with unit-norm columns, H (N, r, n) ≥ 0.

    Init: column i of W is the per-channel quantile of V′ at level (i + 1)/r (r = 2: median and max),
    L2-normalised; H = 1. Each of ``iterations`` multiplicative steps (ε = 1e-6, λ = ``sparsity``):
    W ← W ⊙ (V′Hᵀ) ⊘ (WHHᵀ + ε), columns renormalised; a = H ⊘ (WᵀWH + ε);
    H ← H ⊙ (WᵀV′) ⊘ (WᵀWH + ε); H ← max(H − λ·a, 0).
    """
    if n_stains < 1:
        raise InputError(f"n_stains must be >= 1, got {n_stains}")
    w = torch.stack([percentile(v, 100 * (i + 1) / n_stains) for i in range(n_stains)], dim=-1)  # (N, 3, r)
    w = w / w.norm(dim=1, keepdim=True).clamp_min(EPS)
    h = torch.ones(v.shape[0], n_stains, v.shape[2], dtype=v.dtype, device=v.device)
    for _ in range(iterations):
        w = w * (v @ h.mT) / (w @ (h @ h.mT) + EPS)
        w = w / w.norm(dim=1, keepdim=True).clamp_min(EPS)
        # H ⊙ (WᵀV′) ⊘ (WᵀWH + ε) − λ·H ⊘ (WᵀWH + ε), in one expression
        h = (h * (w.mT @ v - sparsity) / ((w.mT @ w) @ h + EPS)).clamp_min(0)
    return w, h


class StainParameters(NamedTuple):
    """Per-image stain estimate: W (N, 3, r) colour bases, H (N, r, n) densities, B (N, 3, 1) background OD."""

    w: Tensor
    h: Tensor
    background: Tensor


def estimate_stains(x: Tensor, n_stains: int = 2, iterations: int = 10, sparsity: float = 1e-4,
                    background_percentile: float = 1.0) -> StainParameters:
    """Steps 2-4 of the module docstring for x (N, 3, H, W) in [0, 1] (dark pixels already whitened)."""
    v = optical_density(x)
    background = percentile(v, background_percentile).unsqueeze(-1)  # (N, 3, 1)
    w, h = snmf(v - background, n_stains, iterations, sparsity)
    return StainParameters(w, h, background)


def kmeans(points: Tensor, k: int, restarts: int = 5, iterations: int = 100,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with squared Euclidean distance, as SADA's code runs it.

    Args:
        points: (N, F). k: clusters (at most N are used). restarts: runs *without an empty cluster* to try
        (at most 10·restarts attempts); the lowest-inertia one wins. iterations: per run (stops early at
        convergence). generator: for the initial centres (k distinct random points).

    Returns:
        labels (N,) long in 0..k−1, centres (k, F). If no run avoids an empty cluster (e.g. duplicate points),
        the lowest-inertia run is returned anyway.
    """
    n = len(points)
    k = min(k, n)
    points = points.detach().double()
    best, best_any = None, None
    valid = attempts = 0
    while valid < restarts and attempts < 10 * restarts:
        attempts += 1
        centres = points[torch.randperm(n, generator=generator, device="cpu")[:k].to(points.device)]
        for _ in range(iterations):
            labels = torch.cdist(points, centres).argmin(dim=1)
            sums = torch.zeros_like(centres).index_add_(0, labels, points)
            sizes = torch.bincount(labels, minlength=k)
            moved = torch.where(sizes[:, None] > 0, sums / sizes.clamp_min(1)[:, None], centres)
            if torch.equal(moved, centres):
                break
            centres = moved
        labels = torch.cdist(points, centres).argmin(dim=1)
        inertia = float((points - centres[labels]).pow(2).sum())
        run = (inertia, labels, centres)
        if best_any is None or inertia < best_any[0]:
            best_any = run
        if bool((torch.bincount(labels, minlength=k) > 0).all()):
            valid += 1
            if best is None or inertia < best[0]:
                best = run
    _, labels, centres = best if best is not None else best_any
    return labels, centres.float()


def choose_donors(clusters: Tensor, n_views: int, generator: torch.Generator | None = None) -> Tensor:
    """(N, n_views) donor indices: for image i, one uniform member of each other cluster in ascending cluster
    order, topped up (fewer other clusters than views) with uniform images outside i's cluster, else any other
    image, else i itself."""
    clusters = clusters.cpu()
    n = len(clusters)
    members = {int(c): torch.nonzero(clusters == c).flatten() for c in torch.unique(clusters)}
    donors = torch.empty(n, n_views, dtype=torch.long)

    def draw(pool: Tensor) -> int:
        return int(pool[torch.randint(len(pool), (1,), generator=generator)])

    for i in range(n):
        own = int(clusters[i])
        others = [c for c in sorted(members) if c != own][:n_views]
        outside = torch.nonzero(clusters != own).flatten()
        fallback = outside if len(outside) else torch.tensor([j for j in range(n) if j != i] or [i])
        for slot in range(n_views):
            donors[i, slot] = draw(members[others[slot]] if slot < len(others) else fallback)
    return donors


def restain(params: StainParameters, donors: Tensor, density_percentile: float = 99.0) -> Tensor:
    """Re-stained optical densities → images: (N, V, 3, n) in (0, 1] for donors (N, V) (step 6, without jitter).

    H̃ = H_i ⊙ (P(H_t) + ε)/(P(H_i) + ε) row-wise, V* = W_t·H̃ + B_t, x* = exp(−max(V*, ε)).
    """
    w, h, background = params
    scale = percentile(h, density_percentile).unsqueeze(-1) + EPS  # (N, r, 1)
    donors = donors.to(h.device)
    h_tilde = h[:, None] * (scale[donors] / scale[:, None])  # (N, V, r, n)
    v_star = w[donors] @ h_tilde + background[donors]  # (N, V, 3, n)
    return torch.exp(-v_star.clamp_min(EPS))


def stain_augment(x: Tensor, n_clusters: int = 3, *, n_stains: int = 2, snmf_iterations: int = 10,
                  snmf_sparsity: float = 1e-4, background_percentile: float = 1.0, density_percentile: float = 99.0,
                  dark_threshold: float = 0.05, kmeans_restarts: int = 5, kmeans_iterations: int = 100,
                  jitter: Sequence[float] | None = (0.2, 0.25, 0.25, 0.15),
                  generator: torch.Generator | None = None, return_clusters: bool = False):
    """The augmented batch (N·k, 3, H, W) of the module docstring for x (N, 3, H, W) in [0, 1].

    With ``return_clusters`` returns (views, clusters (N,)). ``jitter`` None skips the colour jitter.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"stain augmentation needs RGB images (N, 3, H, W), got {tuple(x.shape)}")
    if n_clusters < 1:
        raise InputError(f"n_clusters must be >= 1, got {n_clusters}")
    n, _, height, width = x.shape
    with torch.no_grad():
        raw = whiten_dark_pixels(x, dark_threshold)
        params = estimate_stains(raw, n_stains, snmf_iterations, snmf_sparsity, background_percentile)
        features = torch.cat([params.w.flatten(1), params.background.flatten(1)], dim=1)  # (N, 3r + 3)
        clusters, _ = kmeans(features, n_clusters, kmeans_restarts, kmeans_iterations, generator)
        donors = choose_donors(clusters, n_clusters - 1, generator)
        restained = restain(params, donors, density_percentile).reshape(n * (n_clusters - 1), 3, height, width)
        if jitter is not None and len(restained):
            restained = color_jitter(restained, *jitter, generator=generator)
        views = torch.cat([raw[:, None], restained.reshape(n, n_clusters - 1, 3, height, width)], dim=1)
        views = views.reshape(n * n_clusters, 3, height, width).to(x.dtype)
    return (views, clusters.to(x.device)) if return_clusters else views
