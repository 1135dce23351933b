"""Pure-PyTorch CPU kernels for torchvision's NMS and RoIAlign ops, used only when torchvision's
compiled extension cannot be loaded.

Import this module before torchvision, everywhere::

    from aecfe import torchvision_compat  # noqa: F401
    import torchvision

Why it exists. The PyPI torchvision 0.28.0 wheel is a CUDA build: beside the CPU-only torch 2.13.0
its ``torchvision/_C.so`` fails to load (``libc10_cuda.so`` is missing), torchvision swallows that,
and ``import torchvision`` then dies in ``torchvision/_meta_registrations.py``, whose
``torch.library.register_fake("torchvision::nms")`` runs unconditionally:
``RuntimeError: operator torchvision::nms does not exist``.

What importing it does (``install()``, once):

1. Loads torchvision's compiled ``_C`` the way torchvision does (``torch.ops.load_library`` on the
   file that ``importlib`` finds in the installed package, without importing torchvision). If that
   works, ``torchvision::nms`` exists natively and nothing else happens: ``EMULATED`` is False.
2. Otherwise it defines the ``torchvision`` operator library with the upstream schemas (every op
   that torchvision's meta and autograd registrations touch) and registers CPU kernels:
   :func:`nms_kernel`, :func:`roi_align_kernel` and :func:`roi_align_backward_kernel` (exact
   re-statements of torchvision's C++ CPU kernels), ``_cuda_version`` (-1, "no CUDA"), and, for
   ``roi_pool``, ``ps_roi_align``, ``ps_roi_pool``, ``deform_conv2d``, ``box_iou_rotated``,
   ``qnms`` and ``qroi_align`` (and their backward ops), a kernel raising ``NotImplementedError``.
3. Makes ``torchvision.extension._has_ops()`` report True, through an import hook that patches
   ``torchvision.extension`` right after it runs (or at once, if it is already in ``sys.modules``).
   Why a hook and not a patch after ``import torchvision``: torchvision reads ``_has_ops()``
   while it imports. ``_meta_registrations`` and ``_autograd_registrations`` register
   torchvision's own fake (shape) kernels, autograd formulas (``roi_align`` backward through
   ``_roi_align_backward``) and autocast wrappers only when it is True, and ``ops/roi_align.py``
   binds the function itself (``from torchvision.extension import _assert_has_ops, _has_ops``),
   so a later patch of the extension module would not reach it. (``ops/boxes.py``,
   ``roi_pool.py``, ``ps_roi_*.py`` and ``deform_conv.py`` bind only ``_assert_has_ops``, which
   looks ``_has_ops`` up in the extension module when called.) With it True from the start,
   torchvision wires everything exactly as over its compiled extension, and
   ``torchvision.ops.roi_align`` calls ``torch.ops.torchvision.roi_align`` rather than its
   ``torch.compile``'d pure-Python fallback (which exhausts memory here).
4. Warns once (``UserWarning``) naming the emulated ops and why.

Importing twice, or after torchvision (possible only where the compiled ops load), is harmless.
Only CPU kernels are registered: a CUDA torch loads torchvision's own CUDA ops.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["EMULATED", "install", "nms_kernel", "roi_align_kernel", "roi_align_backward_kernel"]

# Upstream schemas (torchvision/csrc/ops/*.cpp of 0.28.0), without the "torchvision::" prefix.
_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward": "(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "qroi_align": "(Tensor input, Tensor rois, float input_scale, int input_zero_point, "
    "float rois_scale, int rois_zero_point, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "roi_pool": "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward": "(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "ps_roi_align": "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward": "(Tensor grad, Tensor rois, Tensor channel_mapping, "
    "float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool": "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward": "(Tensor grad, Tensor rois, Tensor channel_mapping, "
    "float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, "
    "SymInt channels, SymInt height, SymInt width) -> Tensor",
    "deform_conv2d": "(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
    "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward": "(Tensor grad, Tensor input, Tensor weight, Tensor offset, "
    "Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, "
    "SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "box_iou_rotated": "(Tensor boxes1, Tensor boxes2) -> Tensor",
    "_cuda_version": "() -> int",
}
# Ops without a kernel here, and the dispatch keys their raising stand-in is registered for.
_UNAVAILABLE = {
    "qnms": ("QuantizedCPU",),
    "qroi_align": ("QuantizedCPU",),
    "roi_pool": ("CPU",),
    "_roi_pool_backward": ("CPU",),
    "ps_roi_align": ("CPU",),
    "_ps_roi_align_backward": ("CPU",),
    "ps_roi_pool": ("CPU",),
    "_ps_roi_pool_backward": ("CPU",),
    "deform_conv2d": ("CPU",),
    "_deform_conv2d_backward": ("CPU",),
    "box_iou_rotated": ("CPU",),
}

# NMS compares blocks of this many candidate boxes with all later boxes at once: small enough for
# the (block, n) temporaries to stay in cache, large enough to amortise per-call overhead.
_NMS_BLOCK = 64
# RoIAlign gathers at most this many (bin, sample, corner) entries at once (~48 MB of indices and
# weights); larger problems are split into chunks of RoIs.
_MAX_SAMPLING_ENTRIES = 1 << 22


# --------------------------------------------------------------------------------------------
# NMS
# --------------------------------------------------------------------------------------------
def nms_kernel(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, as torchvision's CPU kernel.

    Boxes are visited by decreasing score; a box is kept unless a kept box has
    ``IoU = inter / (area_i + area_j - inter) > iou_threshold`` with it, where
    ``inter = max(0, min(x2) - max(x1)) * max(0, min(y2) - max(y1))`` and
    ``area = (x2 - x1) * (y2 - y1)``, all in the dtype of ``dets``; the comparison is made as
    in C++, in double precision.

    Ties in score: upstream's CPU kernel sorts with the unstable ``at::sort`` (x86-simd-sort on
    AVX2/AVX-512 CPUs), so its order among equal scores is unspecified and may vary between
    machines; here the sort is stable, lower index first: one of the orders upstream may produce,
    and the same on every machine. Results can differ from upstream only where boxes with exactly
    equal scores overlap.

    Args:
        dets: (N, 4) boxes ``x1, y1, x2, y2``, floating point.
        scores: (N,) scores, same dtype as ``dets``.
        iou_threshold: boxes with IoU strictly above it are suppressed.

    Returns:
        int64 (K,) indices of the kept boxes, by decreasing score.
    """
    _check(dets.dim() == 2, f"boxes should be a 2d tensor, got {dets.dim()}D")
    _check(dets.size(1) == 4, f"boxes should have 4 elements in dimension 1, got {dets.size(1)}")
    _check(scores.dim() == 1, f"scores should be a 1d tensor, got {scores.dim()}D")
    _check(
        dets.size(0) == scores.size(0),
        "boxes and scores should have same number of elements in dimension 0, "
        f"got {dets.size(0)} and {scores.size(0)}",
    )
    _check(dets.dtype == scores.dtype, "dets should have the same type as scores")
    _check(
        dets.dtype in (torch.float32, torch.float64),
        f'"nms_kernel" not implemented for \'{dets.dtype}\'',
    )
    n = dets.size(0)
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)

    order = torch.sort(scores, descending=True, stable=True).indices
    # numpy, not torch, for the (block, n) arithmetic: same IEEE operations in the same dtype,
    # and single-threaded, which is faster for these sizes than torch's thread pool (and far
    # faster when other processes compete for the cores).
    x1, y1, x2, y2 = (np.ascontiguousarray(c) for c in dets[order].numpy(force=True).T)
    area = (x2 - x1) * (y2 - y1)
    threshold = _largest_value_not_above(iou_threshold, dets.dtype)

    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for start in range(0, n, _NMS_BLOCK):
        candidates = start + np.flatnonzero(~suppressed[start : start + _NMS_BLOCK])
        if candidates.size == 0:
            continue
        # overlaps[r, j]: candidate r would suppress box start + j (both in score order).
        overlaps = _iou_above(
            (x1[candidates], y1[candidates], x2[candidates], y2[candidates], area[candidates]),
            (x1[start:], y1[start:], x2[start:], y2[start:], area[start:]),
            threshold,
        )
        for position, overlap in zip(candidates, overlaps):
            if not suppressed[position]:
                keep.append(position)
                suppressed[start:] |= overlap  # also marks itself and earlier ones: already decided
    return order[torch.from_numpy(np.asarray(keep, dtype=np.int64))]


def _iou_above(
    rows: tuple[np.ndarray, ...], cols: tuple[np.ndarray, ...], threshold: float
) -> np.ndarray:
    """(R, C) bool: IoU of box r with box c > threshold; boxes given as (x1, y1, x2, y2, area)."""
    rx1, ry1, rx2, ry2, rarea = (a[:, None] for a in rows)
    cx1, cy1, cx2, cy2, carea = (a[None, :] for a in cols)
    width = np.minimum(rx2, cx2)
    width -= np.maximum(rx1, cx1)
    np.maximum(width, 0, out=width)
    height = np.minimum(ry2, cy2)
    height -= np.maximum(ry1, cy1)
    np.maximum(height, 0, out=height)
    inter = np.multiply(width, height, out=width)
    union = rarea + carea
    union -= inter
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 is NaN: not above, as in C++
        return np.divide(inter, union, out=inter) > threshold


def _largest_value_not_above(value: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` number <= value: for x of that dtype, ``x > it`` iff ``x > value``.

    The C++ kernel compares a float IoU with the double threshold; comparing in float with
    the threshold rounded to nearest would differ when the rounding goes up (e.g. 0.3).
    """
    rounded = torch.tensor(value, dtype=dtype)
    if rounded.item() > value:
        rounded = torch.nextafter(rounded, torch.tensor(float("-inf"), dtype=dtype))
    return rounded.item()


# --------------------------------------------------------------------------------------------
# RoIAlign
# --------------------------------------------------------------------------------------------
class _SamplingPlan(NamedTuple):
    """Where the bilinear samples of a chunk of RoIs that share one sampling grid read.

    Each output bin (roi, ph, pw) averages ``gh * gw`` samples, each a weighted sum of 4 pixels;
    ``pixel[r]`` and ``weight[r]`` list those ``L = 4 * gh * gw`` (pixel, weight) pairs for bin r,
    in the C++ kernel's order (iy, ix, then corners low/low, low/high, high/low, high/high).
    """

    roi: Tensor  # (Kc,) int64: indices of the RoIs of this chunk, increasing
    pixel: Tensor  # (Kc * PH * PW, L) int64: flat pixel index b * H * W + y * W + x
    weight: Tensor  # (Kc * PH * PW, L): bilinear weight, 0 for samples outside the map
    count: int  # samples per bin, gh * gw


def roi_align_kernel(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign forward, as torchvision's CPU kernel (``torchvision::roi_align``).

    For RoI k = (b, x1, y1, x2, y2), with ``o = 0.5 if aligned else 0``: start = x1 * s - o, size
    w = (x2 - x1) * s (at least 1 when not aligned), bin width w / PW; bin (ph, pw) averages
    ``gh x gw`` samples at ``y = y_start + ph * bin_h + (iy + 0.5) * bin_h / gh`` (likewise x), with
    ``gh = sampling_ratio`` if > 0 else ``ceil(h / PH)`` per RoI. A sample with y < -1, y > H,
    x < -1 or x > W reads 0; otherwise it is clamped into [0, H-1] x [0, W-1] and read bilinearly.

    Args:
        input: (N, C, H, W) features.
        rois: (K, 5) ``batch_index, x1, y1, x2, y2`` in input-image coordinates, dtype of input.
        spatial_scale: factor from image coordinates to feature-map coordinates.
        pooled_height, pooled_width: output bins PH, PW.
        sampling_ratio: samples per bin side; <= 0 for adaptive.
        aligned: shift the box by -0.5 pixel (Detectron2's RoIAlignV2).

    Returns:
        (K, C, PH, PW) pooled features.
    """
    _check_rois(rois)
    _check(input.dtype == rois.dtype, "input should have the same type as rois")
    num_images, channels, height, width = input.shape
    num_rois = rois.size(0)
    shape = (num_rois, pooled_height, pooled_width, channels)
    pooled = None
    if num_rois * pooled_height * pooled_width * channels > 0:
        # One row of C values per pixel, so that a bin is a weighted sum of rows: embedding_bag.
        pixels = input.permute(0, 2, 3, 1).reshape(-1, channels)
        for plan in _sampling_plans(
            rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
            num_images, height, width,
        ):
            bins = F.embedding_bag(plan.pixel, pixels, per_sample_weights=plan.weight, mode="sum")
            bins = bins.div_(plan.count).view(-1, pooled_height, pooled_width, channels)
            if plan.roi.numel() == num_rois:  # the usual case: one plan for all RoIs
                pooled = bins
            else:
                if pooled is None:
                    pooled = input.new_zeros(shape)
                pooled[plan.roi] = bins
    if pooled is None:  # no RoIs, no channels, or no RoI with samples
        pooled = input.new_zeros(shape)
    return pooled.permute(0, 3, 1, 2).contiguous()


def roi_align_backward_kernel(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """Gradient of :func:`roi_align_kernel` w.r.t. its input (``torchvision::_roi_align_backward``).

    The exact adjoint of the forward: every sample scatters ``grad[k, c, ph, pw] * w / (gh * gw)``
    onto its 4 pixels. The scatter is done as a gather: the (pixel, bin, weight) entries are sorted
    by pixel and each pixel's entries summed with ``embedding_bag``.

    Args:
        grad: (K, C, PH, PW) gradient of the pooled output.
        rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned: as the forward.
        batch_size, channels, height, width: shape (N, C, H, W) of the forward input.

    Returns:
        (N, C, H, W) gradient of the input.
    """
    _check_rois(rois)
    _check(grad.dtype == rois.dtype, "grad should have the same type as rois")
    num_pixels = batch_size * height * width
    grad_pixels = grad.new_zeros(num_pixels, channels)
    if grad.numel() > 0 and num_pixels > 0:
        grad_bins = grad.permute(0, 2, 3, 1).contiguous()  # (K, PH, PW, C), as plan.pixel's rows
        for plan in _sampling_plans(
            rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
            batch_size, height, width,
        ):
            bins = grad_bins if plan.roi.numel() == grad.size(0) else grad_bins[plan.roi]
            samples_per_bin = plan.pixel.size(1)
            pixel = plan.pixel.view(-1)
            pixel = pixel.int() if num_pixels < 2**31 else pixel  # int32 sorts much faster
            sorted_pixel, order = torch.sort(pixel, stable=True)
            per_pixel = torch.bincount(sorted_pixel, minlength=num_pixels)
            offsets = per_pixel.cumsum(0) - per_pixel
            grad_pixels += F.embedding_bag(
                order // samples_per_bin, bins.view(-1, channels), offsets,
                per_sample_weights=plan.weight.view(-1)[order] / plan.count, mode="sum",
            )
    return grad_pixels.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()


def _check_rois(rois: Tensor) -> None:
    _check(rois.dim() == 2 and rois.size(1) == 5, "rois must have shape as Tensor[K, 5]")


def _sampling_plans(
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
    num_images: int,
    height: int,
    width: int,
) -> Iterator[_SamplingPlan]:
    """Sampling plans for all RoIs, one per chunk of RoIs sharing a grid (gh, gw).

    RoIs with an empty grid (adaptive sampling of an empty or inverted aligned box) have no
    samples: their output stays 0, as in C++. The arithmetic follows the C++ kernel step by step,
    in the dtype of ``rois``.
    """
    dtype = rois.dtype
    image = rois[:, 0].to(torch.int64)  # C++: int roi_batch_ind = rois[k][0]
    if image.numel() and (image.min() < 0 or image.max() >= num_images):
        raise RuntimeError(
            f"roi_align: rois[:, 0] must be batch indices in [0, {num_images - 1}], "
            f"got values from {image.min().item()} to {image.max().item()}"
        )
    offset = 0.5 if aligned else 0.0
    scale = torch.tensor(spatial_scale, dtype=dtype)  # C++ converts the double to T
    start_x = rois[:, 1] * scale - offset
    start_y = rois[:, 2] * scale - offset
    roi_width = (rois[:, 3] * scale - offset) - start_x
    roi_height = (rois[:, 4] * scale - offset) - start_y
    if not aligned:  # force malformed RoIs to be 1x1
        roi_width = roi_width.clamp(min=1.0)
        roi_height = roi_height.clamp(min=1.0)
    bin_height = roi_height / pooled_height
    bin_width = roi_width / pooled_width

    if sampling_ratio > 0:
        grid = torch.full((rois.size(0), 2), sampling_ratio, dtype=torch.int64)
    else:  # C++: int(ceil(roi_height / pooled_height)); <= 0 means no sample
        grid = torch.stack(
            [torch.ceil(roi_height / pooled_height), torch.ceil(roi_width / pooled_width)], 1
        ).nan_to_num(0.0).clamp(0, 2**31 - 1).to(torch.int64)
    has_samples = (grid > 0).all(1)
    groups = torch.unique(grid[has_samples], dim=0).tolist()
    bins_per_roi = pooled_height * pooled_width
    for grid_h, grid_w in groups:
        members = torch.nonzero(has_samples & (grid[:, 0] == grid_h) & (grid[:, 1] == grid_w))[:, 0]
        rois_per_chunk = max(1, _MAX_SAMPLING_ENTRIES // (bins_per_roi * 4 * grid_h * grid_w))
        for chunk in members.split(rois_per_chunk):
            rows, row_weight = _axis_samples(
                start_y[chunk], bin_height[chunk], pooled_height, grid_h, height
            )
            cols, col_weight = _axis_samples(
                start_x[chunk], bin_width[chunk], pooled_width, grid_w, width
            )
            # Broadcast to (Kc, PH, PW, gh, gw, 2 row corners, 2 column corners).
            rows = rows[:, :, None, :, None, :, None]
            cols = cols[:, None, :, None, :, None, :]
            pixel = (image[chunk].view(-1, 1, 1, 1, 1, 1, 1) * height + rows) * width + cols
            weight = (row_weight[:, :, None, :, None, :, None]
                      * col_weight[:, None, :, None, :, None, :])
            samples = 4 * grid_h * grid_w
            yield _SamplingPlan(
                roi=chunk,
                pixel=pixel.reshape(-1, samples),
                weight=weight.reshape(-1, samples),
                count=grid_h * grid_w,
            )


def _axis_samples(
    start: Tensor, bin_size: Tensor, pooled: int, grid: int, size: int
) -> tuple[Tensor, Tensor]:
    """Bilinear corners along one axis for every (RoI, bin, sample).

    Args:
        start, bin_size: (Kc,) RoI start and bin size along the axis, feature-map pixels.
        pooled: bins along the axis; grid: samples per bin along the axis; size: map size (H or W).

    Returns:
        index (Kc, pooled, grid, 2) int64 of the low and high neighbour, and weight (same shape)
        ``1 - frac, frac``, both weights 0 when the sample lies outside [-1, size].
    """
    dtype = start.dtype
    bin_index = torch.arange(pooled, dtype=dtype)[None, :, None]
    sample = torch.arange(grid, dtype=dtype)[None, None, :] + 0.5
    bin_size = bin_size[:, None, None]
    coord = (start[:, None, None] + bin_index * bin_size) + sample * bin_size / grid
    inside = (coord >= -1.0) & (coord <= size)  # False for NaN, as in C++
    coord = torch.where(inside, coord, 0.0).clamp(min=0.0)
    low = coord.to(torch.int64)  # truncation; coord >= 0
    at_edge = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low
    index = torch.stack([low, high], -1)
    weight = torch.stack([1.0 - frac, frac], -1) * inside[..., None]
    return index, weight


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
def _check(condition: bool, message: str) -> None:
    """Raise RuntimeError(message) unless condition: the error type of upstream's TORCH_CHECK."""
    if not condition:
        raise RuntimeError(message)


def _unavailable(name: str) -> Callable[..., object]:
    def kernel(*args: object, **kwargs: object) -> object:
        raise NotImplementedError(
            f"torchvision::{name} is unavailable: torchvision's compiled ops could not be loaded "
            "(a CUDA build beside a CPU torch), and aecfe.torchvision_compat emulates only nms "
            "and roi_align on CPU. Install a torchvision build that matches torch to use it."
        )

    return kernel


def _cuda_version() -> int:
    return -1  # what torchvision's CPU-only builds answer


_KERNELS = {
    "nms": ("CPU", nms_kernel),
    "roi_align": ("CPU", roi_align_kernel),
    "_roi_align_backward": ("CPU", roi_align_backward_kernel),
    "_cuda_version": ("CompositeImplicitAutograd", _cuda_version),
}


def _native_ops_error() -> str | None:
    """Load torchvision's compiled ``_C`` as torchvision does; say why it is unusable, if it is.

    Returns None when there is nothing to stand in for: the extension loaded and defines
    ``torchvision::nms``, or torchvision is not installed.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = list(spec.submodule_search_locations)[0]
    finder = importlib.machinery.FileFinder(
        package_dir,
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    )
    extension = finder.find_spec("_C")
    if extension is None or extension.origin is None:
        return f"no compiled extension _C in {package_dir}"
    try:
        torch.ops.load_library(extension.origin)
    except (ImportError, OSError) as error:
        cause = error.__cause__ or error
        return f"{type(cause).__name__}: {cause}"
    if hasattr(torch.ops.torchvision, "nms"):
        return None
    return f"{extension.origin} loaded but defines no torchvision::nms"


def _op_is_defined(name: str) -> bool:
    return hasattr(torch.ops.torchvision, name)


def _define_ops() -> None:
    """Define every torchvision op and register the kernels (lives as long as the process)."""
    for name, schema in _SCHEMAS.items():
        torch.library.define(f"torchvision::{name}", schema)
    for name, (dispatch_key, kernel) in _KERNELS.items():
        torch.library.impl(f"torchvision::{name}", dispatch_key, kernel)
    for name, dispatch_keys in _UNAVAILABLE.items():
        for dispatch_key in dispatch_keys:
            torch.library.impl(f"torchvision::{name}", dispatch_key, _unavailable(name))


def _report_ops_available(extension: object) -> None:
    extension._has_ops = _ops_available  # type: ignore[attr-defined]


def _ops_available() -> bool:
    """Stand-in for ``torchvision.extension._has_ops``: the torchvision ops exist (emulated)."""
    return True


class _PatchingLoader(importlib.abc.Loader):
    """Runs torchvision.extension with its own loader, then makes its ``_has_ops()`` True."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> object:
        return self._loader.create_module(spec)

    def exec_module(self, module: object) -> None:
        self._loader.exec_module(module)
        _report_ops_available(module)

    def __getattr__(self, name: str) -> object:  # get_source, get_filename, ... for tracebacks
        return getattr(self._loader, name)


class _TorchvisionExtensionHook(importlib.abc.MetaPathFinder):
    """Finds ``torchvision.extension`` like the normal path finder, with a patching loader."""

    def find_spec(self, fullname: str, path: object, target: object = None):
        if fullname != "torchvision.extension":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def _make_torchvision_see_ops() -> None:
    extension = sys.modules.get("torchvision.extension")
    if extension is not None:
        _report_ops_available(extension)
    # By name, not isinstance: a reloaded module has a new class, and the old hook still works.
    hook_name = _TorchvisionExtensionHook.__name__
    if not any(type(finder).__name__ == hook_name for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionExtensionHook())


def install(native_ops_error: Callable[[], str | None] = _native_ops_error) -> bool:
    """Make torchvision importable and its NMS/RoIAlign ops work on this torch; idempotent.

    Args:
        native_ops_error: probe that loads torchvision's compiled ops and returns None when they
            work (then nothing is done), else the reason they do not.

    Returns:
        True when the pure-PyTorch kernels stand in for torchvision's compiled ops.
    """
    reason = native_ops_error()
    if reason is None:
        return False
    if not _op_is_defined("roi_align"):
        _define_ops()
        warnings.warn(
            f"torchvision's compiled ops could not be loaded ({reason}); "
            f"{__name__} runs torchvision::nms and torchvision::roi_align (with backward) as "
            "pure-PyTorch CPU kernels, and the other torchvision ops raise NotImplementedError.",
            stacklevel=2,
        )
    _make_torchvision_see_ops()
    return True


EMULATED: bool = install()
"""True when torchvision's NMS and RoIAlign run on this module's kernels."""
