"""Cell morphology and Beer-Lambert rendering of synthetic smear images (vectorised numpy/scipy).

Everything is drawn as dye *densities* on a float32 canvas (H, W, 4) whose last axis is the four
dyes of :class:`~aecfe.synthetic.styles.Stain` (nucleus, cytoplasm, eosin, granule);
:func:`render` turns densities into RGB with the domain's colours, lighting, blur and noise.
Shapes are signed distance functions (negative inside, in pixels) turned into soft coverage
``alpha = clip(0.5 - sdf, 0, 1)``. Sizes are in red-cell radii ("units"); the caller gives the
pixels per unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from aecfe.synthetic.styles import DomainStyle

NUCLEUS, CYTOPLASM, EOSIN, GRANULE = range(4)  # dye axis of a density canvas
N_DYES = 4

Sdf = Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]


def dyes(nucleus: float = 0.0, cytoplasm: float = 0.0, eosin: float = 0.0,
         granule: float = 0.0) -> tuple[float, float, float, float]:
    """Density of each dye, in canvas order."""
    return (nucleus, cytoplasm, eosin, granule)


# ---------------------------------------------------------------- signed distance primitives
def _disc(x, y, cx, cy, r):
    return np.hypot(x - cx, y - cy) - r


def _ellipse(x, y, a, b):
    """Approximate SDF of an axis-aligned ellipse with semi-axes a (x) and b (y)."""
    return (np.hypot(x / a, y / b) - 1.0) * min(a, b)


def _capsule(x, y, p, q, r):
    """SDF of the segment p-q thickened by r."""
    px, py, dx, dy = x - p[0], y - p[1], q[0] - p[0], q[1] - p[1]
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return np.hypot(px - t * dx, py - t * dy) - r


def _lobe_chain(x, y, R, rng, n_lobes, arc, lobe_r, strand_r):
    """Lobes of radius ~lobe_r*R on a curved arc of radius arc*R, joined by thin strands."""
    span = np.deg2rad(48.0) * (n_lobes - 1) * rng.uniform(0.9, 1.2)
    angles = np.linspace(-span / 2, span / 2, n_lobes) + rng.normal(0, 0.12, n_lobes)
    bend = arc * R * rng.uniform(0.85, 1.1)
    centres = np.stack([bend * np.sin(angles), bend * (1 - np.cos(angles)) - bend * 0.35], 1)
    centres += rng.normal(0, 0.04 * R, centres.shape)
    radii = lobe_r * R * rng.uniform(0.8, 1.15, n_lobes)
    sdf = np.min([_disc(x, y, cx, cy, r) for (cx, cy), r in zip(centres, radii)], axis=0)
    for p, q in zip(centres[:-1], centres[1:]):
        sdf = np.minimum(sdf, _capsule(x, y, p, q, strand_r * R))
    return sdf


def neutrophil_nucleus(x, y, R, rng):
    """3-5 segmented lobes on a C/S-shaped chain, joined by chromatin strands."""
    n = int(rng.choice([3, 4, 4, 5]))
    return _lobe_chain(x, y, R, rng, n, arc=0.55, lobe_r=0.31 - 0.015 * n, strand_r=0.07)


def eosinophil_nucleus(x, y, R, rng):
    """Two large lobes joined by a thin strand ("spectacles")."""
    return _lobe_chain(x, y, R, rng, 2, arc=0.75, lobe_r=0.32, strand_r=0.1)


def basophil_nucleus(x, y, R, rng):
    """Pale, irregular, bi- or tri-lobed nucleus (hidden under granules)."""
    return _lobe_chain(x, y, R, rng, int(rng.integers(2, 4)), arc=0.45, lobe_r=0.33, strand_r=0.2)


def lymphocyte_nucleus(x, y, R, rng):
    """Round dense nucleus filling most of the cell, slightly off centre."""
    off = rng.normal(0, 0.06 * R, 2)
    a, b = R * rng.uniform(0.74, 0.84), R * rng.uniform(0.68, 0.78)
    return _ellipse(x - off[0], y - off[1], a, b)


def monocyte_nucleus(x, y, R, rng):
    """Large kidney to horseshoe nucleus: an ellipse with a round bite out of one long side."""
    a, b = R * rng.uniform(0.6, 0.7), R * rng.uniform(0.42, 0.5)
    notch_r = R * rng.uniform(0.28, 0.36)
    bite = b * rng.uniform(0.35, 1.1)  # 0.35 kidney .. 1.1 horseshoe
    body = _ellipse(x, y - 0.08 * R, a, b)
    notch = _disc(x, y, rng.normal(0, 0.08 * R), 0.08 * R - b - notch_r + bite, notch_r)
    return np.maximum(body, -notch)


@dataclass(frozen=True)
class Granules:
    """Round dots scattered over a cell: dye density at a dot's centre (per dye), dot radius as
    a fraction of the cell radius, area coverage (expected dots * dot area / region area), and
    whether dots also lie over the nucleus."""

    dyes: tuple[float, float, float, float]
    radius: float
    coverage: float
    over_nucleus: bool = False


@dataclass(frozen=True)
class Morphology:
    """What a class looks like, identical in every domain.

    Attributes:
        radius: (low, high) cell radius in red-cell radii.
        nucleus: SDF builder ``f(x, y, R, rng)`` in a cell-centred, rotated frame (pixels).
        nucleus_density: nucleus dye density; chromatin: relative texture amplitude.
        cytoplasm: density of each dye (see :func:`dyes`) in the cytoplasm.
        rim: extra cytoplasm density at the cell edge (relative; the lymphocyte's blue rim).
        irregularity: amplitude of the outline's low-frequency wobble (fraction of R).
        granules: dot populations (granules, or negative-density vacuoles).
    """

    radius: tuple[float, float]
    nucleus: Sdf
    nucleus_density: float
    chromatin: float
    cytoplasm: tuple[float, float, float, float]
    rim: float = 0.0
    irregularity: float = 0.03
    granules: tuple[Granules, ...] = ()


MORPHOLOGY: dict[str, Morphology] = {
    "neutrophil": Morphology((1.6, 1.9), neutrophil_nucleus, 1.0, 0.25,
                             dyes(nucleus=0.02, cytoplasm=0.03, eosin=0.16),
                             granules=(Granules(dyes(nucleus=0.1, eosin=0.12), 0.03, 0.5),)),
    "lymphocyte": Morphology((1.05, 1.3), lymphocyte_nucleus, 1.35, 0.2, dyes(cytoplasm=0.55),
                             rim=0.8, irregularity=0.02),
    "monocyte": Morphology((2.0, 2.4), monocyte_nucleus, 0.8, 0.35,
                           dyes(nucleus=0.03, cytoplasm=0.4, eosin=0.07), rim=0.1,
                           irregularity=0.06,  # vacuoles: dots of negative density
                           granules=(Granules(dyes(cytoplasm=-0.35, eosin=-0.07), 0.07, 0.08),)),
    "eosinophil": Morphology((1.7, 2.0), eosinophil_nucleus, 1.0, 0.25,
                             dyes(cytoplasm=0.03, eosin=0.1),
                             granules=(Granules(dyes(granule=0.45), 0.05, 2.0),)),
    "basophil": Morphology((1.4, 1.7), basophil_nucleus, 0.8, 0.2,
                           dyes(nucleus=0.05, cytoplasm=0.1, eosin=0.06), irregularity=0.05,
                           granules=(Granules(dyes(nucleus=0.9, cytoplasm=0.15), 0.075, 1.0,
                                              over_nucleus=True),)),
}
NOMINAL_RADIUS = float(np.mean(MORPHOLOGY["neutrophil"].radius))
"""Radius (red-cell radii) of a typical neutrophil: the reference for single-cell framing."""


# ---------------------------------------------------------------- texture helpers
def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise (float32, ``shape``), correlation length
    ``sigma`` px. Wide kernels are filtered on a grid ``sigma // 2`` times coarser, then upsampled
    bilinearly (same look, a fraction of the cost)."""
    step = max(1, int(sigma // 2))
    coarse = (shape[0] // step + 2, shape[1] // step + 2)
    noise = rng.standard_normal(coarse, dtype=np.float32)
    noise = gaussian_filter(noise, sigma / step, mode="wrap")
    if step > 1:
        noise = zoom(noise, step, order=1)
    noise = noise[:shape[0], :shape[1]]
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _dots(rng, region: np.ndarray, R: float, granules: Granules) -> np.ndarray:
    """Density (h, w, 4) of granules placed at random inside the soft region (h, w)."""
    g = max(granules.radius * R, 0.6)
    area = float(region.sum())
    n = rng.poisson(granules.coverage * area / (np.pi * g * g))
    h, w = region.shape
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    keep = rng.random(n) < region[ys, xs]
    amplitude = rng.uniform(0.6, 1.4, n)[keep]
    impulses = np.bincount(ys[keep] * w + xs[keep], weights=amplitude, minlength=h * w)
    sigma = g / 1.3
    spots = gaussian_filter(impulses.reshape(h, w).astype(np.float32), sigma)
    return spots[..., None] * (2 * np.pi * sigma ** 2 * np.asarray(granules.dyes, np.float32))


# ---------------------------------------------------------------- cells
@dataclass
class Patch:
    """A drawn cell: density (h, w, 4), coverage alpha (h, w) in [0, 1], top-left (row, col)."""

    density: np.ndarray
    alpha: np.ndarray
    origin: tuple[int, int]


def outer_radius(label: str, radius: float) -> float:
    """Largest distance (px) from the centre that a ``label`` cell of ``radius`` px can cover."""
    return radius * (1 + 3 * MORPHOLOGY[label].irregularity) + 1


def draw_white_cell(rng: np.random.Generator, label: str, centre: tuple[float, float],
                    radius: float) -> Patch:
    """Draw one white cell of class ``label`` with radius ``radius`` px at ``centre`` (row, col)."""
    m = MORPHOLOGY[label]
    half = int(np.ceil(outer_radius(label, radius))) + 2
    row0, col0 = int(np.floor(centre[0])) - half, int(np.floor(centre[1])) - half
    ys, xs = np.mgrid[0:2 * half + 1, 0:2 * half + 1].astype(np.float32)
    y, x = ys + row0 - centre[0] + 0.5, xs + col0 - centre[1] + 0.5
    angle = rng.uniform(0, 2 * np.pi)
    c, s = float(np.cos(angle)), float(np.sin(angle))
    xr, yr = c * x + s * y, -s * x + c * y

    theta, dist = np.arctan2(yr, xr), np.hypot(xr, yr)
    wobble = sum(rng.uniform(0, m.irregularity) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
                 for k in (2, 3, 5))
    cell = np.clip(0.5 - (dist - radius * (1 + wobble)), 0, 1)
    shape = cell.shape
    ragged = 0.05 * radius * smooth_noise(rng, shape, radius / 6)
    nucleus = np.clip(0.5 - m.nucleus(xr, yr, radius, rng) - ragged, 0, 1) * cell

    edge = np.clip(dist / radius, 0, 1) ** 4
    texture = 1 + 0.15 * smooth_noise(rng, shape, 1.0)
    cytoplasm = cell * (1 + m.rim * edge) * texture
    density = cytoplasm[..., None] * np.asarray(m.cytoplasm, np.float32)
    chromatin = 1 + m.chromatin * smooth_noise(rng, shape, max(radius / 12, 0.8))
    density[..., NUCLEUS] += nucleus * m.nucleus_density * np.clip(chromatin, 0.2, None)
    for granules in m.granules:
        region = cell if granules.over_nucleus else cell * (1 - nucleus)
        density += _dots(rng, region, radius, granules) * cell[..., None]
    np.maximum(density, 0, out=density)
    return Patch(density, cell, (row0, col0))


def paste(canvas: np.ndarray, patch: Patch) -> np.ndarray:
    """Lay ``patch`` over ``canvas`` (H, W, 4) in place (hiding what is under it); return its
    bool (H, W) mask (alpha > 0.5), clipped to the canvas."""
    H, W = canvas.shape[:2]
    h, w = patch.alpha.shape
    r0, c0 = patch.origin
    top, left, bottom, right = max(r0, 0), max(c0, 0), min(r0 + h, H), min(c0 + w, W)
    mask = np.zeros((H, W), bool)
    if top >= bottom or left >= right:
        return mask
    local = (slice(top - r0, bottom - r0), slice(left - c0, right - c0))
    alpha = patch.alpha[local]
    region = canvas[top:bottom, left:right]
    region *= 1 - alpha[..., None]
    region += patch.density[local]
    mask[top:bottom, left:right] = alpha > 0.5
    return mask


def draw_red_cells(rng: np.random.Generator, canvas: np.ndarray, radius: float,
                   style: DomainStyle) -> None:
    """Add red cells (radius ~``radius`` px) to ``canvas`` (H, W, 4) in place, all at once.

    Count = coverage * H * W / (pi r^2) at uniform random centres (overlaps add density, as in
    thick smear areas). Profile of a disc at normalised radius rho: soft edge, central pallor
    ``1 - pallor * exp(-2 (rho / 0.55)^2)`` and a slightly denser rim.
    """
    H, W = canvas.shape[:2]
    n = rng.poisson(style.red_cell_coverage * H * W / (np.pi * radius ** 2))
    if n == 0:
        return
    half = int(np.ceil(radius * 1.12 * 1.15)) + 2  # largest radius * largest stretch
    centres = rng.uniform([-half, -half], [H + half, W + half], (n, 2)).astype(np.float32)
    radii = (radius * rng.uniform(0.88, 1.12, n)).astype(np.float32)[:, None, None]
    stretch = rng.uniform(1.0, 1.15, n).astype(np.float32)[:, None, None]
    angle = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
    corner = np.floor(centres) - half  # top-left pixel of each red cell's window
    offsets = np.arange(2 * half + 1, dtype=np.float32)
    y = (corner[:, 0] + 0.5 - centres[:, 0])[:, None, None] + offsets[None, :, None]
    x = (corner[:, 1] + 0.5 - centres[:, 1])[:, None, None] + offsets[None, None, :]
    u = (np.cos(angle) * x + np.sin(angle) * y) / stretch
    v = -np.sin(angle) * x + np.cos(angle) * y
    rho = np.hypot(u, v) / radii
    body = np.clip(0.5 + (1 - rho) * radii, 0, 1)
    profile = (1 - style.red_cell_pallor * np.exp(-2 * (rho / 0.55) ** 2)) \
        * (1 + 0.25 * np.exp(-((rho - 0.85) / 0.12) ** 2))
    density = body * profile * style.stain.red_cell_density
    steps = np.arange(2 * half + 1)
    top, left = corner.astype(np.int64).T
    rows = np.broadcast_to(top[:, None, None] + steps[:, None], density.shape)
    cols = np.broadcast_to(left[:, None, None] + steps, density.shape)
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W) & (density > 0)
    flat = np.bincount(rows[inside] * W + cols[inside], weights=density[inside], minlength=H * W)
    canvas[..., EOSIN] += flat.reshape(H, W).astype(np.float32)


# ---------------------------------------------------------------- optics
def illumination(rng: np.random.Generator, shape: tuple[int, int],
                 style: DomainStyle) -> np.ndarray:
    """Light field (H, W): gain * (1 + gradient * ramp) * (1 - vignetting * r^2), the ramp in
    [-1, 1] along a random direction, r the distance to the centre over the half-diagonal."""
    H, W = shape
    y = np.linspace(-1, 1, H, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
    phi = rng.uniform(0, 2 * np.pi)
    c, s = float(np.cos(phi)), float(np.sin(phi))
    ramp = (c * x + s * y) / (abs(c) + abs(s))
    light = style.illumination
    return light.gain * (1 + light.gradient * ramp) * (1 - light.vignetting * (x * x + y * y) / 2)


def render(rng: np.random.Generator, density: np.ndarray, style: DomainStyle) -> np.ndarray:
    """RGB uint8 (H, W, 3) from dye densities (H, W, 4) by Beer-Lambert, then blur and noise.

    I = light * background * exp(-density @ OD), OD[k] = -log(rgb of dye k) * (1 + U(-j, j)),
    j = ``style.stain_jitter`` (slide-to-slide variation; the light gain varies by U(-j/2, j/2));
    then a Gaussian blur of ``style.blur_sigma`` px and noise ``noise_std * sqrt(I) * e``, e
    zero-mean with unit variance (triangular: close to Gaussian at half the cost).
    """
    stain = style.stain
    od = -np.log(np.array([stain.nucleus_rgb, stain.cytoplasm_rgb, stain.eosin_rgb,
                           stain.granule_rgb], np.float32))
    jitter = style.stain_jitter
    od *= 1 + rng.uniform(-jitter, jitter, (len(od), 1)).astype(np.float32)
    gain = 1 + rng.uniform(-jitter / 2, jitter / 2)
    light = illumination(rng, density.shape[:2], style)[..., None] \
        * (np.asarray(stain.background_rgb, np.float32) * np.float32(gain))
    image = light * np.exp(-(density @ od))
    if style.blur_sigma > 0:
        image = gaussian_filter(image, (style.blur_sigma, style.blur_sigma, 0))
    if style.noise_std > 0:  # difference of two U(0, 1) has variance 1/6
        unit = rng.random(image.shape, dtype=np.float32)
        unit -= rng.random(image.shape, dtype=np.float32)
        image += (style.noise_std * np.sqrt(6.0)) * np.sqrt(np.clip(image, 0, None)) * unit
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
