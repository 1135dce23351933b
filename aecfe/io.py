"""Readers: single images, folder-per-class image sets, and COCO instance annotations.

Every reader turns bad input into an :class:`~aecfe.errors.InputError` (for images the subclass
:class:`ImageReadError`, which carries the file and a short reason) or, where the caller asks for
``on_error="skip"``, into a counted skip in a :class:`SkipCounter`, which logs one summary line
such as ``skipped 3 images: 2 corrupt, 1 too small``. Nothing is dropped or altered silently.

Identity: an image is its resolved path (:func:`identity_path`, symlinks and ``..`` resolved), so
the same file named two ways is one image; its content is the SHA-1 of its bytes (:func:`sha1_file`),
so byte-identical copies under other names or in other domains are found (:func:`find_duplicates`).

Layouts:
    * folder per class: ``root/<class label>/<image>`` (:func:`scan_class_folders`);
    * folder of domains: ``root/<domain>/<class label>/<image>`` (:func:`scan_domains`), like the
      shared ``data/cls``;
    * COCO: an ``annotations.json`` with ``images``, ``annotations``, ``categories``
      (:func:`load_coco`), like the shared ``data/det/<set>/``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils

from aecfe.errors import AecfeError, InputError
from aecfe.taxonomy import CANONICAL, Taxonomy, load_taxonomy, resolve_dataset

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_MIN_SIDE = 16
"""Images whose shorter side is below this many pixels are rejected (too small to hold a cell)."""
MAX_IMAGE_PIXELS = 50_000_000
"""Images declaring more pixels than this (width x height, from the header) are rejected as ``too large``
before any decoding: a small file can declare a huge image (a "decompression bomb"; a 97 KB PNG of
100 megapixels takes 1.2 GB to decode). Smears and fields are far below it; raise it for large scans."""
IDENTITY_DATASET = "canonical"
"""Class map used for a domain without one of its own: folder names must be canonical classes."""

OnError = Literal["raise", "skip"]
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "P", "RGBa", "La"}  # P: its palette may hold transparency


class ImageReadError(InputError):
    """An image file that cannot be used. ``path``: the file; ``reason``: a short category
    (``missing``, ``empty``, ``unreadable`` (no permission, I/O error), ``symlink loop``,
    ``not an image``, ``truncated``, ``corrupt``, ``too small``, ``too large``, ``unsupported``)."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path = Path(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class SkipCounter:
    """Counts skipped items by reason, keeps a few examples per reason, logs a summary.

    ``skip`` counts an item left out; ``note`` counts an item kept with a caveat (a clipped box,
    a missing mask). ``summary()`` gives e.g. ``"skipped 3 images: 2 corrupt, 1 too small"``.
    """

    def __init__(self, noun: str = "items", *, max_examples: int = 5):
        self.noun = noun
        self.max_examples = max_examples
        self.skipped: Counter[str] = Counter()
        self.noted: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def skip(self, reason: str, example: object = None, n: int = 1) -> None:
        """Count ``n`` items left out for ``reason`` (``example``: a file or id to show)."""
        self.skipped[reason] += n
        self._remember(reason, example)

    def note(self, reason: str, example: object = None, n: int = 1) -> None:
        """Count ``n`` items kept despite ``reason``."""
        self.noted[reason] += n
        self._remember(reason, example)

    def skip_error(self, error: ImageReadError) -> None:
        """Count an image that failed to read, under its reason."""
        self.skip(error.reason, error.path)

    def _remember(self, reason: str, example: object) -> None:
        examples = self.examples.setdefault(reason, [])
        if example is not None and len(examples) < self.max_examples:
            examples.append(str(example))

    @property
    def total(self) -> int:
        """Number of items skipped (notes not included)."""
        return sum(self.skipped.values())

    def __bool__(self) -> bool:
        return bool(self.skipped or self.noted)

    def summary(self) -> str:
        """One line: ``skipped N <noun>: n1 reason1, ...; also noted: n2 reason2, ...``."""
        parts = [f"skipped {self.total} {self.noun}"]
        if self.skipped:
            parts[0] += ": " + _by_count(self.skipped)
        if self.noted:
            parts.append("also noted: " + _by_count(self.noted))
        return "; ".join(parts)

    def log(self, log: logging.Logger = logger, level: int = logging.WARNING) -> None:
        """Log the summary and the examples per reason, if anything was counted."""
        if not self:
            return
        examples = "; ".join(f"{reason}: {', '.join(ex)}" for reason, ex in self.examples.items() if ex)
        log.log(level, "%s%s", self.summary(), f" (e.g. {examples})" if examples else "")


def _by_count(counts: Counter[str]) -> str:
    """``"2 corrupt, 1 too small"``: most frequent first, ties in alphabetical order."""
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# ----------------------------------------------------------------------------------------------
# Single images
# ----------------------------------------------------------------------------------------------

def identity_path(path: str | os.PathLike) -> Path:
    """The image's identity: its absolute path with symlinks and ``..`` resolved (``os.path.realpath``),
    the same whatever the working directory and however the path was typed. Never raises (a symlink loop
    keeps its unresolved remainder)."""
    return Path(os.path.realpath(os.fspath(path)))


def _existing_file(path: str | Path) -> Path:
    """``path`` as a Path; ImageReadError if it is missing, not a regular file, a symlink loop, cannot
    be examined (permission, I/O error) or 0 bytes long."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise ImageReadError(path, "missing", "no such file") from err
    except PermissionError as err:
        raise ImageReadError(path, "unreadable", f"permission denied: {err.strerror}") from err
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ImageReadError(path, "symlink loop", "too many levels of symbolic links") from err
        raise ImageReadError(path, "unreadable", str(err)) from err
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(path, "missing", "not a file")
    if info.st_size == 0:
        raise ImageReadError(path, "empty", "0 bytes")
    return path


def sha1_file(path: str | os.PathLike) -> str:
    """Hex SHA-1 of a file's bytes: the image's content identity (byte-identical copies share it).
    Raises :class:`ImageReadError` (``missing``, ``unreadable``, ``symlink loop``...) naming the file."""
    path = _existing_file(path)
    digest = hashlib.sha1(usedforsecurity=False)
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except PermissionError as err:
        raise ImageReadError(path, "unreadable", f"permission denied: {err.strerror}") from err
    except OSError as err:
        raise ImageReadError(path, "unreadable", str(err)) from err
    return digest.hexdigest()


class _open_image:
    """``with _open_image(path) as image``: PIL's ``Image.open`` that refuses images declaring more than
    :data:`MAX_IMAGE_PIXELS` (``too large``, before decoding; PIL's own bomb warning is not emitted and its
    DecompressionBombError becomes the same ImageReadError) and reports a permission problem as
    ``unreadable``, not ``corrupt``. Other errors propagate to the caller's handlers."""

    def __init__(self, path: Path):
        self.path = path
        self.image = None

    def __enter__(self) -> Image.Image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self.image = Image.open(self.path)
        except Image.DecompressionBombError as err:
            raise ImageReadError(self.path, "too large", str(err)) from err
        except PermissionError as err:
            raise ImageReadError(self.path, "unreadable", f"permission denied: {err.strerror}") from err
        width, height = self.image.size
        if width * height > MAX_IMAGE_PIXELS:
            self.image.close()
            raise ImageReadError(self.path, "too large", f"{width}x{height} = {width * height:,} pixels, above "
                                                         f"aecfe.io.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,}")
        return self.image

    def __exit__(self, *exc) -> None:
        self.image.close()


def read_image(path: str | Path, *, min_side: int = DEFAULT_MIN_SIDE) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), upright per its EXIF orientation.

    Conversions: grayscale and bilevel are repeated over 3 channels; RGBA, LA and palette
    images with transparency are composited on white; CMYK and YCbCr convert to RGB; 16-bit
    and float images (PIL modes I;16*, I, F) are rescaled linearly by the image's own range,
    ``(x - min) / (max - min) * 255`` rounded (a constant image becomes all 0). Multi-frame
    files (TIFF, GIF, WebP) give their first frame.

    Raises :class:`ImageReadError` naming the file for a missing, empty (0-byte), unrecognised,
    truncated or corrupt file, non-finite float pixels, or a shorter side below ``min_side``.
    Truncated files are never padded: if PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` has been set
    True (by other code), AecfeError is raised instead of reading.
    """
    path = _existing_file(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise AecfeError(f"reading {path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some "
                         "other code), so truncated files would be padded silently; set it to False")
    try:
        with _open_image(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb_uint8(image, path)
    except ImageReadError:
        raise
    except UnidentifiedImageError as err:
        raise ImageReadError(path, "not an image", "format not recognised") from err
    except PermissionError as err:
        raise ImageReadError(path, "unreadable", f"permission denied: {err.strerror}") from err
    except OSError as err:
        reason = "truncated" if "truncated" in str(err).lower() else "corrupt"
        raise ImageReadError(path, reason, str(err)) from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, "too large", str(err)) from err
    except (SyntaxError, ValueError, EOFError) as err:
        raise ImageReadError(path, "corrupt", str(err)) from err
    if min(rgb.shape[:2]) < min_side:
        raise ImageReadError(path, "too small", f"{rgb.shape[1]}x{rgb.shape[0]} px, "
                                                f"shorter side below min_side={min_side}")
    return rgb


def _to_rgb_uint8(image: Image.Image, path: Path) -> np.ndarray:
    """A loaded PIL image in any mode -> RGB uint8 (H, W, 3); see :func:`read_image`."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ImageReadError(path, "corrupt", "non-finite pixel values")
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        gray = np.rint(scaled).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8).copy()
    try:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except ValueError as err:
        raise ImageReadError(path, "unsupported", f"PIL mode {image.mode!r} has no RGB conversion") from err


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as :func:`read_image` will return it (EXIF applied),
    from the header alone (no pixel decoding). Raises ImageReadError like ``read_image``, including
    ``too large`` above :data:`MAX_IMAGE_PIXELS`."""
    path = _existing_file(path)
    try:
        with _open_image(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except ImageReadError:
        raise
    except UnidentifiedImageError as err:
        raise ImageReadError(path, "not an image", "format not recognised") from err
    except PermissionError as err:
        raise ImageReadError(path, "unreadable", f"permission denied: {err.strerror}") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, "too large", str(err)) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, "corrupt", str(err)) from err
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


# ----------------------------------------------------------------------------------------------
# Folder-per-class image sets
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRecord:
    """One labelled image of a folder-per-class set.

    ``label`` is the original label (the class folder's name, or ``"<folder>/<prefix>"``);
    ``canonical`` its canonical class; ``dataset`` the class map that made the conversion,
    so ``load_taxonomy(record.dataset, scheme).map([record.label])`` gives any other scheme.
    """

    path: Path
    domain: str
    label: str
    canonical: str
    dataset: str


LabelFrom = Literal["folder", "folder/prefix"]


def _label_of(folder: str, file: Path, label_from: LabelFrom | Callable[[Path], str]) -> str:
    if callable(label_from):
        return label_from(file)
    if label_from == "folder":
        return folder
    if label_from == "folder/prefix":
        return f"{folder}/{file.stem.split('_')[0]}"
    raise ValueError(f"label_from must be 'folder', 'folder/prefix' or a callable, not {label_from!r}")


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _resolve_class_map(domain: str, taxonomy: Taxonomy | str | None) -> Taxonomy:
    """The canonical taxonomy to use: given, named, the domain's own, else the identity map."""
    if isinstance(taxonomy, Taxonomy):
        if taxonomy.scheme != CANONICAL:
            raise ValueError(f"scan_class_folders needs a taxonomy of the canonical scheme, got "
                             f"{taxonomy.name}; convert records later with load_taxonomy(dataset, scheme)")
        return taxonomy
    if taxonomy is not None:
        return load_taxonomy(taxonomy)
    dataset = resolve_dataset(domain, missing_ok=True)
    if dataset is None:
        logger.info("domain %r has no class map of its own; its folder names must be canonical "
                    "classes (class map %r)", domain, IDENTITY_DATASET)
        dataset = IDENTITY_DATASET
    return load_taxonomy(dataset)


def scan_class_folders(
    root: str | Path,
    *,
    domain: str | None = None,
    taxonomy: Taxonomy | str | None = None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    label_from: LabelFrom | Callable[[Path], str] = "folder",
    verify: bool = False,
    min_side: int = DEFAULT_MIN_SIDE,
    on_error: OnError = "raise",
    skips: SkipCounter | None = None,
) -> list[ImageRecord]:
    """List the labelled images of a folder-per-class set ``root/<class>/<image>``.

    Args:
        root: the domain folder; its non-hidden subfolders are the classes.
        domain: domain name of every record; default ``root``'s folder name.
        taxonomy: class map to the canonical classes: a canonical-scheme :class:`Taxonomy` or a
            dataset name; default the class map registered under the domain name, else the
            identity map (folder names must then be canonical class names).
        extensions: image file suffixes (case-insensitive); image files of other formats (a suffix
            PIL knows, e.g. ``.gif``) are counted as skipped (``unsupported file type (.gif)``); other
            files (readme.txt, manifest.csv, source.json) and hidden files are ignored, and so are
            subfolders of class folders (logged). An image-suffixed entry that is a broken or looping
            symlink is an unreadable image (``missing`` / ``symlink loop``).
        label_from: ``"folder"`` (the class folder's name), ``"folder/prefix"`` (``"<folder>/<file
            name up to the first _>"``, e.g. Acevedo's ``neutrophil/BNE``) or a callable on the path.
        verify: decode every image with :func:`read_image` (slow; otherwise only 0-byte files are
            caught here and the rest when the images are read).
        min_side: passed to :func:`read_image` when verifying.
        on_error: for unreadable or empty images: ``"raise"`` the ImageReadError or ``"skip"``
            and count it in ``skips``.
        skips: counter to add to; a private one is used (and logged) if None.

    Returns:
        records sorted by class folder then file name. Images whose label the class map drops
        (e.g. LISC's ``mixt``) are left out and counted.

    Raises:
        InputError: ``root`` is not a folder, holds no images, or holds labels unknown to the
            class map (all of them listed).

    A class folder without images logs a warning and is counted, not an error. A domain with a
    single class logs a warning: it is valid for unsupervised use (detection, feature
    extraction, alignment) and as a test domain, but cannot train a classifier.
    """
    _check_on_error(on_error)
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected <root>/<class>/<image> files)")
    domain = domain or root.name
    extensions = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    own_counter = skips is None
    skips = skips if skips is not None else SkipCounter("images")
    class_map = _resolve_class_map(domain, taxonomy)

    other_suffixes = _other_image_suffixes(extensions)
    found: list[tuple[Path, str]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p)):
        files = sorted(p for p in folder.iterdir() if not _is_hidden(p))
        nested = [p.name for p in files if p.is_dir()]
        if nested:
            logger.warning("%s: subfolders %s of class folder %r are ignored", root, nested, folder.name)
        images = [p for p in files if p.suffix.lower() in extensions and not p.is_dir()]
        for other in (p for p in files if p.suffix.lower() in other_suffixes and not p.is_dir()):
            skips.skip(f"unsupported file type ({other.suffix.lower()})", other)
        if not images:
            logger.warning("%s: class folder %r holds no images (suffixes %s)", root, folder.name,
                           sorted(extensions))
            skips.note("class folders without images", folder)
        found.extend((image, _label_of(folder.name, image, label_from)) for image in images)
    if not found:
        raise InputError(f"{root}: no images found in class subfolders (expected "
                         f"<root>/<class>/<image> with suffixes {sorted(extensions)})")

    canonical = class_map.map([label for _, label in found])
    records = []
    for (path, label), target in zip(found, canonical):
        if target is None:
            skips.skip("label dropped by class map", f"{label}: {path.name}")
        elif _usable(path, verify, min_side, on_error, skips):
            records.append(ImageRecord(path, domain, label, target, class_map.dataset))

    classes = sorted({r.canonical for r in records})
    if len(classes) == 1:
        logger.warning("domain %r has a single class (%s): usable for detection, feature extraction, "
                       "alignment and as a test domain, but it cannot train a classifier",
                       domain, classes[0])
    if own_counter:
        skips.log()
    return records


def _other_image_suffixes(extensions: set[str]) -> set[str]:
    """Suffixes of image formats PIL knows (``.gif``, ``.ppm``, ``.ico``...) that are not in ``extensions``."""
    return {suffix.lower() for suffix in Image.registered_extensions()} - set(extensions)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")


def _usable(path: Path, verify: bool, min_side: int, on_error: OnError, skips: SkipCounter) -> bool:
    """True if ``path`` passes the scan's checks; on failure raise or count, per ``on_error``."""
    try:
        if verify:
            read_image(path, min_side=min_side)
        else:
            _existing_file(path)
    except ImageReadError as err:
        if on_error == "raise":
            raise
        skips.skip_error(err)
        return False
    return True


def scan_domains(
    root: str | Path,
    *,
    taxonomies: Mapping[str, Taxonomy | str] | None = None,
    **scan_options: Any,
) -> list[ImageRecord]:
    """List every domain of ``root/<domain>/<class>/<image>`` (e.g. the shared ``data/cls``).

    Each non-hidden subfolder is a domain scanned by :func:`scan_class_folders` with
    ``scan_options``; ``taxonomies`` maps a domain name to its class map (default: the class map
    registered under the domain name). Records are sorted by domain, then as in a domain.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected <root>/<domain>/<class>/<image> files)")
    domains = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    if not domains:
        raise InputError(f"{root}: no domain subfolders")
    taxonomies = taxonomies or {}
    records: list[ImageRecord] = []
    for folder in domains:
        records.extend(scan_class_folders(folder, taxonomy=taxonomies.get(folder.name), **scan_options))
    return records


# ----------------------------------------------------------------------------------------------
# COCO instance annotations
# ----------------------------------------------------------------------------------------------

_COCO_IMAGE_KEYS = {"id", "file_name", "width", "height"}
_COCO_ANNOTATION_KEYS = {"id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd"}
MissingMask = Literal["raise", "empty", "box"]


@dataclass(frozen=True, eq=False)
class CocoImage:
    """One image of a COCO file with its N instances.

    Attributes:
        image_id, path, width, height: the image entry (``path`` = image_root / file_name).
        boxes: float32 (N, 4) xyxy in pixels, clipped to the image.
        category_ids: int64 (N,); category_names: the N category names.
        annotation_ids: int64 (N,); iscrowd: bool (N,).
        segmentations: the N raw COCO segmentations (polygons, RLE) or None where missing.
        attributes: the image entry's other keys (e.g. ``sha1``, BCCD's ``image_label``).
        annotation_attributes: per instance, the annotation's other keys (e.g. ``wbc_subtype``).
    """

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    annotation_ids: np.ndarray
    iscrowd: np.ndarray
    segmentations: tuple[Any, ...]
    attributes: Mapping[str, Any] = field(default_factory=dict)
    annotation_attributes: tuple[Mapping[str, Any], ...] = ()

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def has_mask(self) -> np.ndarray:
        """Bool (N,): which instances have a segmentation."""
        return np.array([s is not None for s in self.segmentations], dtype=bool)

    def mask(self, i: int) -> np.ndarray | None:
        """Bool (H, W) mask of instance ``i`` decoded with pycocotools, or None if it has none."""
        segmentation = self.segmentations[i]
        if segmentation is None:
            return None
        return _decode_segmentation(segmentation, self.height, self.width, f"{self.path} "
                                    f"annotation {int(self.annotation_ids[i])}")

    def masks(self, missing: MissingMask = "raise") -> np.ndarray:
        """Bool (N, H, W) masks of all instances.

        ``missing`` says what an instance without a segmentation gets: ``"raise"`` an InputError,
        ``"empty"`` an all-False mask, ``"box"`` its filled (integer-rounded) box.
        """
        out = np.zeros((len(self), self.height, self.width), dtype=bool)
        for i in range(len(self)):
            decoded = self.mask(i)
            if decoded is not None:
                out[i] = decoded
            elif missing == "raise":
                raise InputError(f"{self.path}: annotation {int(self.annotation_ids[i])} has no mask; "
                                 "pass missing='empty' or 'box' to accept that")
            elif missing == "box":
                x0, y0 = np.floor(self.boxes[i, :2]).astype(int)
                x1, y1 = np.ceil(self.boxes[i, 2:]).astype(int)
                out[i, y0:y1, x0:x1] = True
        return out

    def read(self, *, min_side: int = DEFAULT_MIN_SIDE) -> np.ndarray:
        """The image as RGB uint8 (H, W, 3) via :func:`read_image`."""
        return read_image(self.path, min_side=min_side)


def _decode_segmentation(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    try:
        if isinstance(segmentation, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:  # compressed RLE
            rle = segmentation
        with warnings.catch_warnings():  # pycocotools' Cython decode vs numpy 2: harmless
            warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy",
                                    DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)
    except (ValueError, TypeError, KeyError) as err:
        raise InputError(f"{where}: cannot decode segmentation ({err})") from err


def _segmentation_problem(segmentation: Any, height: int, width: int) -> tuple[str, str] | None:
    """(reason, detail) if a COCO segmentation is malformed for a height x width image, else None."""
    if isinstance(segmentation, list):
        ok = all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                 and all(isinstance(v, (int, float)) for v in p) for p in segmentation)
        return None if ok else ("malformed polygon", "needs lists of >= 3 (x, y) pairs")
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        return "malformed segmentation", "neither polygons nor RLE {size, counts}"
    if list(segmentation["size"]) != [height, width]:
        return "mask size differs from image", f"mask {segmentation['size']}, image [{height}, {width}]"
    counts = segmentation["counts"]
    if not isinstance(counts, (list, str, bytes)):
        return "malformed segmentation", "RLE counts must be a list, str or bytes"
    if isinstance(counts, list) and sum(counts) != height * width:
        return "malformed segmentation", f"RLE counts sum to {sum(counts)}, not {height * width}"
    return None


def _read_coco_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found")
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read annotation file ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{path}: not a COCO file (needs a top-level object with an `images` list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise InputError(f"{path}: `{key}` must be a list")
    return data


def load_coco(
    annotations_json: str | Path,
    *,
    image_root: str | Path | None = None,
    check_files: bool = True,
    on_error: OnError = "raise",
    skips: SkipCounter | None = None,
    allow_outside_paths: bool = False,
) -> list[CocoImage]:
    """Read a COCO instance file into one :class:`CocoImage` per image, in file order.

    Args:
        annotations_json: the COCO file (``images``, ``annotations``, ``categories``; bbox
            [x, y, w, h]; segmentation as polygons, uncompressed or compressed RLE).
        image_root: folder that ``file_name`` is relative to; default ``<json folder>/images``
            if it exists, else the json's folder.
        check_files: check that each image exists and that its header size (EXIF orientation
            applied) matches the entry's width/height (which may then be omitted).
        on_error: ``"raise"`` an InputError at the first bad entry, or ``"skip"`` it and count it.
        skips: counter to add to; a private one is used (and logged) if None.
        allow_outside_paths: accept a ``file_name`` that leads outside the annotation file's folder
            and ``image_root`` (``../x.png``, an absolute path); by default such an entry is bad
            (``image path outside the annotation folder``). The check is on the normalised path
            (``os.path.normpath``): symlinks placed inside the folder are followed.

    Bad entries (raise or skip): an image (with its annotations) whose file is missing or
    unreadable or whose size disagrees or whose path leads outside the annotation folder; an
    annotation whose image id or category id does not exist, whose bbox is missing, not
    finite, of non-positive width/height, or entirely outside the image; a malformed
    segmentation (its annotation is skipped). Kept with a note: boxes partly outside the image
    are clipped to it; annotations without a segmentation keep their box (``segmentations[i]``
    is None, see :meth:`CocoImage.masks`). Images without annotations are valid negatives and
    come back with empty (0, 4) boxes.
    """
    _check_on_error(on_error)
    json_path = Path(annotations_json)
    data = _read_coco_json(json_path)
    if image_root is None:
        image_root = json_path.parent / "images" if (json_path.parent / "images").is_dir() else json_path.parent
    image_root = Path(image_root)
    own_counter = skips is None
    skips = skips if skips is not None else SkipCounter("COCO entries")

    def bad(reason: str, where: str, detail: str = "") -> None:
        """Raise or count a bad entry; ``reason`` is the category counted, ``detail`` the specifics."""
        if on_error == "raise":
            raise InputError(f"{json_path}: {where}: {reason}" + (f" ({detail})" if detail else ""))
        skips.skip(reason, where)

    if not all(isinstance(c, dict) and "id" in c for c in data.get("categories", [])):
        raise InputError(f"{json_path}: every category needs an `id`")
    categories = {c["id"]: str(c.get("name", c["id"])) for c in data.get("categories", [])}
    entries: dict[int, dict] = {}
    known_ids = set()
    for raw in data["images"]:
        if not isinstance(raw, dict) or "id" not in raw or "file_name" not in raw:
            raise InputError(f"{json_path}: image entry {raw!r:.80} lacks `id` or `file_name`")
        if raw["id"] in known_ids:
            raise InputError(f"{json_path}: duplicate image id {raw['id']!r}")
        known_ids.add(raw["id"])
        entry, problem = _checked_image_entry(raw, image_root, check_files, json_path, allow_outside_paths)
        if problem is not None:
            bad(*problem)
            continue
        entries[entry["id"]] = entry

    instances: dict[int, list[dict]] = {image_id: [] for image_id in entries}
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict):
            bad("annotation is not an object", f"annotation {ann!r:.60}")
            continue
        where = f"annotation {ann.get('id')} (image {ann.get('image_id')})"
        if ann.get("image_id") not in known_ids:
            bad("annotation references a missing image id", where)
            continue
        if ann["image_id"] not in entries:
            continue  # its image was skipped above, and counted there
        if ann.get("category_id") not in categories:
            bad("annotation has an unknown category id", where, f"category_id {ann.get('category_id')!r}")
            continue
        entry = entries[ann["image_id"]]
        problem = _box_problem(ann.get("bbox"), entry["width"], entry["height"])
        if problem is None and ann.get("segmentation") not in (None, [], {}):
            problem = _segmentation_problem(ann["segmentation"], entry["height"], entry["width"])
        if problem is not None:
            bad(problem[0], f"{where} in {entry['file_name']}", problem[1])
            continue
        instances[ann["image_id"]].append(ann)

    images = [_coco_image(entries[i], instances[i], categories, image_root, skips) for i in entries]
    if own_counter:
        skips.log()
    return images


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    """Whether ``path``, normalised (``..`` removed, no symlinks resolved), lies in one of ``folders``."""
    target = Path(os.path.normpath(os.path.abspath(path)))
    return any(target.is_relative_to(os.path.normpath(os.path.abspath(folder))) for folder in folders)


def _checked_image_entry(entry: dict, image_root: Path, check_files: bool, json_path: Path,
                         allow_outside_paths: bool = False) -> tuple[dict, tuple[str, str, str] | None]:
    """(the image entry with integer width/height, None) or (entry, (reason, where, detail))."""
    entry = dict(entry)
    path = image_root / str(entry["file_name"])
    if not allow_outside_paths and not _inside(path, (json_path.parent, image_root)):
        return entry, ("image path outside the annotation folder", str(entry["file_name"]),
                       f"resolves to {os.path.normpath(os.path.abspath(path))}, outside {json_path.parent}; "
                       "pass allow_outside_paths=True (--allow-outside-paths) to accept it")
    if check_files:
        try:
            width, height = image_size(path)
        except ImageReadError as err:
            return entry, (f"image file {err.reason}", str(path), err.detail)
        if entry.get("width", width) != width or entry.get("height", height) != height:
            return entry, ("image size differs from its entry", str(path),
                           f"file {width}x{height}, entry {entry.get('width')}x{entry.get('height')}")
        entry["width"], entry["height"] = width, height
    elif not isinstance(entry.get("width"), int) or not isinstance(entry.get("height"), int):
        raise InputError(f"{json_path}: image {entry['id']} lacks integer width/height "
                         "(needed when check_files=False)")
    return entry, None


def _box_problem(bbox: Any, width: int, height: int) -> tuple[str, str] | None:
    """(reason, detail) if a COCO bbox [x, y, w, h] is unusable in a width x height image, else None."""
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        return "box is not [x, y, w, h]", f"bbox {bbox!r}"
    x, y, w, h = (float(v) for v in bbox)
    if not np.all(np.isfinite([x, y, w, h])):
        return "box is not finite", f"bbox {list(bbox)}"
    if w <= 0 or h <= 0:
        return "box has non-positive size", f"bbox {list(bbox)}"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "box lies outside the image", f"bbox {list(bbox)}, image {width}x{height}"
    return None


def _coco_image(entry: dict, annotations: Sequence[dict], categories: Mapping[Any, str],
                image_root: Path, skips: SkipCounter) -> CocoImage:
    path = image_root / str(entry["file_name"])
    width, height = entry["width"], entry["height"]
    boxes = np.zeros((len(annotations), 4), dtype=np.float32)
    for i, ann in enumerate(annotations):
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes[i] = (x, y, x + w, y + h)
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    changed = np.any(clipped != boxes, axis=1)
    if changed.any():
        skips.note("boxes clipped to the image", path.name, n=int(changed.sum()))
    segmentations = tuple(ann.get("segmentation") or None for ann in annotations)
    n_missing = sum(s is None for s in segmentations)
    if n_missing:
        skips.note("annotations without mask (box kept)", path.name, n=n_missing)
    return CocoImage(
        image_id=entry["id"],
        path=path,
        width=width,
        height=height,
        boxes=clipped,
        category_ids=np.array([ann["category_id"] for ann in annotations], dtype=np.int64),
        category_names=tuple(categories[ann["category_id"]] for ann in annotations),
        annotation_ids=np.array([ann.get("id", -1) for ann in annotations], dtype=np.int64),
        iscrowd=np.array([bool(ann.get("iscrowd", 0)) for ann in annotations], dtype=bool),
        segmentations=segmentations,
        attributes={k: v for k, v in entry.items() if k not in _COCO_IMAGE_KEYS},
        annotation_attributes=tuple({k: v for k, v in ann.items() if k not in _COCO_ANNOTATION_KEYS}
                                    for ann in annotations),
    )


# ----------------------------------------------------------------------------------------------
# Duplicates: the same bytes under several names or in several domains
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DuplicateGroup:
    """Images with byte-identical files: their ``sha1`` and, per copy, ``paths`` and ``domains``."""

    sha1: str
    paths: tuple[str, ...]
    domains: tuple[str, ...]

    @property
    def cross_domain(self) -> bool:
        """The copies are in more than one domain."""
        return len(set(self.domains)) > 1


def find_duplicates(items: Iterable[tuple[str | os.PathLike, str, str]]) -> list[DuplicateGroup]:
    """Groups of two or more items with the same content hash, from ``(path, domain, sha1)`` triples
    (an empty sha1, an unreadable file, is left out); sorted by hash, copies by (domain, path)."""
    by_hash: dict[str, list[tuple[str, str]]] = {}
    for path, domain, sha1 in items:
        if sha1:
            by_hash.setdefault(sha1, []).append((str(domain), os.fsdecode(path)))
    groups = []
    for sha1, members in sorted(by_hash.items()):
        if len(members) > 1:
            members.sort()
            groups.append(DuplicateGroup(sha1, tuple(p for _, p in members), tuple(d for d, _ in members)))
    return groups


def duplicate_summary(groups: Sequence[DuplicateGroup], max_examples: int = 5) -> dict:
    """Counts for a run report: ``groups`` (sets of byte-identical images), ``images`` (images in them),
    ``extra_copies`` (images minus groups: what de-duplication would remove), ``cross_domain_groups``
    and ``cross_domain_images`` (groups whose copies are in several domains, and their images), and a
    few ``examples`` (sha1, domains, paths)."""
    cross = [g for g in groups if g.cross_domain]
    return {"groups": len(groups), "images": sum(len(g.paths) for g in groups),
            "extra_copies": sum(len(g.paths) - 1 for g in groups),
            "cross_domain_groups": len(cross), "cross_domain_images": sum(len(g.paths) for g in cross),
            "examples": [{"sha1": g.sha1, "domains": list(g.domains), "paths": list(g.paths)}
                         for g in (cross + [g for g in groups if not g.cross_domain])[:max_examples]]}


def hash_images(paths: Iterable[str | os.PathLike], skips: SkipCounter | None = None) -> dict[str, str]:
    """``{path: sha1 of its bytes}`` for every path that can be read; the others are counted in ``skips``
    under their reason (``missing``, ``unreadable``...) and left out."""
    hashes = {}
    for path in paths:
        try:
            hashes[os.fsdecode(path)] = sha1_file(path)
        except ImageReadError as err:
            if skips is not None:
                skips.skip_error(err)
    return hashes


def log_duplicates(groups: Sequence[DuplicateGroup], log: logging.Logger = logger) -> None:
    """One warning line with the counts of :func:`duplicate_summary` and a few examples, if any."""
    if not groups:
        return
    summary = duplicate_summary(groups, max_examples=3)
    examples = "; ".join(" = ".join(f"{d}:{p}" for d, p in zip(e["domains"], e["paths"])) for e in summary["examples"])
    log.warning("%d groups of byte-identical images (%d images, %d extra copies; %d groups, %d images across "
                "domains), e.g. %s", summary["groups"], summary["images"], summary["extra_copies"],
                summary["cross_domain_groups"], summary["cross_domain_images"], examples)
