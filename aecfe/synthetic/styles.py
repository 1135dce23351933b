"""What differs between labs: stain colours, illumination, optics, framing and class mix.

A :class:`DomainStyle` is the whole "lab" of the synthetic generator. Cell morphology (what makes a
monocyte a monocyte) is shared by every domain and lives in :mod:`aecfe.synthetic.drawing`; a style
only changes how those cells are stained, lit, magnified, blurred, framed and how often each class
occurs. Colours are RGB triples in (0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from aecfe.errors import InputError

CLASSES: tuple[str, ...] = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
"""The five canonical white-cell classes the generator draws, in a fixed order."""

RGB = tuple[float, float, float]


def _check_rgb(owner: str, name: str, rgb: RGB) -> None:
    if len(rgb) != 3 or not all(0.0 < float(c) <= 1.0 for c in rgb):
        raise InputError(f"{owner}: {name} must be three floats in (0, 1], got {rgb!r}")


def _check_range(owner: str, name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(f"{owner}: {name} must lie in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class Stain:
    """Romanowsky-like stain of one lab, as the colour each dye shows at unit density on white.

    Rendering is Beer-Lambert: a pixel's RGB = illumination * background_rgb * prod_k rgb_k ** d_k,
    where d_k >= 0 is the density of dye k at that pixel (set by cell morphology).

    Attributes:
        background_rgb: plasma / glass colour (the brightest a pixel gets before illumination).
        nucleus_rgb: chromatin dye (nuclei, basophil granules): purple in MGG, red-brown in others.
        cytoplasm_rgb: basophilic (RNA) dye: blue lymphocyte rims, grey-blue monocyte cytoplasm.
        eosin_rgb: acidic dye: red cells, pink neutrophil cytoplasm.
        granule_rgb: eosinophil granules (orange in MGG). Basophil granules take the nucleus dye.
        red_cell_density: eosin density of a red cell (pale ghosts 0.3 .. dense 1.2).
    """

    background_rgb: RGB = (0.95, 0.90, 0.84)
    nucleus_rgb: RGB = (0.40, 0.22, 0.60)
    cytoplasm_rgb: RGB = (0.62, 0.68, 0.90)
    eosin_rgb: RGB = (0.88, 0.70, 0.70)
    granule_rgb: RGB = (0.85, 0.50, 0.30)
    red_cell_density: float = 0.8

    def __post_init__(self) -> None:
        for name in ("background_rgb", "nucleus_rgb", "cytoplasm_rgb", "eosin_rgb", "granule_rgb"):
            _check_rgb("Stain", name, getattr(self, name))
        _check_range("Stain", "red_cell_density", self.red_cell_density, 0.0, 5.0)


@dataclass(frozen=True)
class Illumination:
    """Bright-field lighting: intensity = gain * (1 + gradient * ramp) * (1 - vignetting * r^2).

    Attributes:
        gain: overall brightness multiplier (1 = nominal; above 1 saturates the background).
        gradient: amplitude of a linear ramp in a random direction per image (ramp in [-1, 1]).
        vignetting: darkening at the corners (r = distance to the centre / half-diagonal).
    """

    gain: float = 1.0
    gradient: float = 0.05
    vignetting: float = 0.05

    def __post_init__(self) -> None:
        _check_range("Illumination", "gain", self.gain, 0.1, 3.0)
        _check_range("Illumination", "gradient", self.gradient, 0.0, 0.9)
        _check_range("Illumination", "vignetting", self.vignetting, 0.0, 0.9)


@dataclass(frozen=True)
class DomainStyle:
    """One synthetic lab. Image ``i`` of a domain depends only on (seed, ``name``, i).

    Attributes:
        name: domain name (folder and file names; letters, digits, ``_``, ``-``, ``.``).
        stain: dye colours, see :class:`Stain`.
        illumination: lighting, see :class:`Illumination`.
        magnification: scale of whole fields; a red cell has radius 9 * magnification pixels
            (0.7 .. 1.4 are sensible).
        crop_fill: (low, high) fraction of a single-cell image's side that a nominal neutrophil
            diameter covers, drawn uniformly per image (0.9 = the cell fills the crop, 0.4 = the
            cell is a third to a half of the field, as in CellaVision crops).
        red_cell_coverage: fraction of a field's area covered by red cells (before overlaps).
        red_cell_pallor: depth of the red cells' pale centre, 0 (flat disc) .. 1 (ring).
        blur_sigma: Gaussian blur (pixels) applied to the rendered image (defocus).
        noise_std: sensor noise; std of intensity noise at full brightness, scaled by
            sqrt(intensity) (shot-noise-like), on a 0..1 intensity scale.
        stain_jitter: slide-to-slide variation inside the lab: per image, each dye's strength
            is scaled by 1 + U(-j, j) and the illumination gain by 1 + U(-j/2, j/2).
        class_weights: class -> relative frequency, over :data:`CLASSES`; absent or 0 means the
            class never occurs in this domain. Normalised on use; see :meth:`class_probabilities`.
    """

    name: str
    stain: Stain = Stain()
    illumination: Illumination = Illumination()
    magnification: float = 1.0
    crop_fill: tuple[float, float] = (0.6, 0.8)
    red_cell_coverage: float = 0.35
    red_cell_pallor: float = 0.45
    blur_sigma: float = 0.6
    noise_std: float = 0.01
    stain_jitter: float = 0.15
    class_weights: Mapping[str, float] = field(
        default_factory=lambda: {c: 1.0 for c in CLASSES}, hash=False)

    def __post_init__(self) -> None:
        owner = f"DomainStyle {self.name!r}"
        if not isinstance(self.name, str) or not self.name or not all(
                ch.isalnum() or ch in "_-." for ch in self.name) or self.name.startswith("."):
            raise InputError(f"{owner}: name must be non-empty letters, digits, '_', '-', '.'")
        if not isinstance(self.stain, Stain) or not isinstance(self.illumination, Illumination):
            raise InputError(f"{owner}: stain must be a Stain and illumination an Illumination")
        _check_range(owner, "magnification", self.magnification, 0.25, 4.0)
        low, high = self.crop_fill
        if not (0.05 <= low <= high <= 1.5):
            raise InputError(f"{owner}: crop_fill must be (low, high) with 0.05 <= low <= high "
                             f"<= 1.5, got {self.crop_fill!r}")
        _check_range(owner, "red_cell_coverage", self.red_cell_coverage, 0.0, 1.5)
        _check_range(owner, "red_cell_pallor", self.red_cell_pallor, 0.0, 1.0)
        _check_range(owner, "blur_sigma", self.blur_sigma, 0.0, 20.0)
        _check_range(owner, "noise_std", self.noise_std, 0.0, 1.0)
        _check_range(owner, "stain_jitter", self.stain_jitter, 0.0, 0.9)
        unknown = sorted(set(self.class_weights) - set(CLASSES))
        if unknown:
            raise InputError(f"{owner}: class_weights has unknown classes {unknown}; "
                             f"known: {list(CLASSES)}")
        weights = {c: float(self.class_weights.get(c, 0.0)) for c in CLASSES}
        if any(not math.isfinite(w) or w < 0 for w in weights.values()):
            raise InputError(f"{owner}: class_weights must be finite and >= 0, got {weights}")
        if sum(weights.values()) <= 0:
            raise InputError(f"{owner}: class_weights must give at least one class a weight > 0")
        object.__setattr__(self, "crop_fill", (float(low), float(high)))
        object.__setattr__(self, "class_weights", MappingProxyType(weights))

    def class_probabilities(self) -> tuple[float, ...]:
        """Probability of each class in :data:`CLASSES` order (sums to 1; 0 = missing class)."""
        total = sum(self.class_weights.values())
        return tuple(self.class_weights[c] / total for c in CLASSES)

    @property
    def present_classes(self) -> tuple[str, ...]:
        """The classes with a weight > 0, in :data:`CLASSES` order."""
        return tuple(c for c in CLASSES if self.class_weights[c] > 0)


def default_domains() -> tuple[DomainStyle, DomainStyle, DomainStyle]:
    """Three labs that share cell morphology but differ clearly in everything else.

    - ``lab_a``: CellaVision-like. Beige plasma, purple MGG nuclei, sharp, small framing (the cell
      covers a third to a half of a single-cell image), all five classes, balanced.
    - ``lab_b``: rapid stain on a camera. Yellow plasma, red-brown nuclei, faint ghost-like red
      cells, high magnification, the cell fills the crop, neutrophil-heavy, **no basophils**.
    - ``lab_c``: phone-like smear photos. Blue-grey background, blue-violet nuclei, dense pink red
      cells, blurred and noisy, dim with strong vignetting, tight crops, few monocytes/basophils.
    """
    lab_a = DomainStyle(
        name="lab_a",
        stain=Stain(background_rgb=(0.97, 0.89, 0.80), nucleus_rgb=(0.42, 0.22, 0.62),
                    cytoplasm_rgb=(0.66, 0.68, 0.92), eosin_rgb=(0.88, 0.72, 0.72),
                    granule_rgb=(0.86, 0.52, 0.32), red_cell_density=0.8),
        illumination=Illumination(gain=1.0, gradient=0.03, vignetting=0.03),
        magnification=1.0, crop_fill=(0.34, 0.5), red_cell_coverage=0.4, red_cell_pallor=0.6,
        blur_sigma=0.4, noise_std=0.008,
        class_weights={c: 1.0 for c in CLASSES},
    )
    lab_b = DomainStyle(
        name="lab_b",
        stain=Stain(background_rgb=(0.99, 0.96, 0.66), nucleus_rgb=(0.50, 0.18, 0.22),
                    cytoplasm_rgb=(0.80, 0.72, 0.62), eosin_rgb=(0.88, 0.66, 0.52),
                    granule_rgb=(0.80, 0.42, 0.28), red_cell_density=0.3),
        illumination=Illumination(gain=1.05, gradient=0.08, vignetting=0.02),
        magnification=1.35, crop_fill=(0.72, 0.92), red_cell_coverage=0.3, red_cell_pallor=0.85,
        blur_sigma=0.9, noise_std=0.012,
        class_weights={"neutrophil": 4.0, "lymphocyte": 1.5, "monocyte": 1.2, "eosinophil": 0.8,
                       "basophil": 0.0},
    )
    lab_c = DomainStyle(
        name="lab_c",
        stain=Stain(background_rgb=(0.84, 0.87, 0.90), nucleus_rgb=(0.40, 0.36, 0.86),
                    cytoplasm_rgb=(0.74, 0.74, 0.92), eosin_rgb=(0.80, 0.58, 0.64),
                    granule_rgb=(0.86, 0.36, 0.42), red_cell_density=1.0),
        illumination=Illumination(gain=0.92, gradient=0.12, vignetting=0.18),
        magnification=0.8, crop_fill=(0.85, 1.05), red_cell_coverage=0.5, red_cell_pallor=0.7,
        blur_sigma=1.6, noise_std=0.03,
        class_weights={"neutrophil": 4.0, "lymphocyte": 1.2, "monocyte": 0.6, "eosinophil": 1.8,
                       "basophil": 0.3},
    )
    return lab_a, lab_b, lab_c
