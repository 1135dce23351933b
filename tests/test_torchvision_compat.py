"""aecfe.torchvision_compat: NMS and RoIAlign kernels against plain-loop references written from
torchvision's C++ CPU kernels, the dispatch from torchvision.ops, Mask R-CNN train and eval, and the
import-time decision."""
import importlib
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from aecfe import torchvision_compat as compat  # noqa: I001  (before torchvision)
import torchvision  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign, batched_nms, nms, roi_align  # noqa: E402


# ---------------------------------------------------------------------------------------------
# References: the C++ loops, transcribed plainly
# ---------------------------------------------------------------------------------------------
def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """Greedy NMS as in torchvision/csrc/ops/cpu/nms_kernel.cpp, in the dtype of the boxes (numpy
    scalars), ties in score broken by index, the IoU compared with the threshold in double."""
    b = boxes.numpy()
    zero = b.dtype.type(0)
    s = scores.tolist()
    order = sorted(range(len(s)), key=lambda i: -s[i])
    area = [(b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]) for i in range(len(s))]
    suppressed = set()
    keep = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for position, i in enumerate(order):
            if i in suppressed:
                continue
            keep.append(i)
            for j in order[position + 1 :]:
                if j in suppressed:
                    continue
                w = max(zero, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
                h = max(zero, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
                inter = w * h
                if float(inter / (area[i] + area[j] - inter)) > iou_threshold:
                    suppressed.add(j)
    return keep


def reference_bins(roi, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned, height, width):
    """For each bin (ph, pw): its sample count and the (weight, y, x) taps of its bilinear samples,
    following torchvision/csrc/ops/cpu/roi_align_common.h and roi_align_kernel.cpp. ``roi`` holds
    numpy scalars, so the arithmetic runs in the RoI dtype, as the C++ template does."""
    _, x1, y1, x2, y2 = roi
    real = type(x1)
    scale, offset = real(spatial_scale), real(0.5 if aligned else 0.0)
    start_w, start_h = x1 * scale - offset, y1 * scale - offset
    roi_w = (x2 * scale - offset) - start_w
    roi_h = (y2 * scale - offset) - start_h
    if not aligned:
        roi_w, roi_h = max(roi_w, real(1)), max(roi_h, real(1))
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_h)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_w)
    count = max(grid_h * grid_w, 1)
    for ph in range(pooled_h):
        for pw in range(pooled_w):
            taps = []
            for iy in range(grid_h):
                y = start_h + ph * bin_h + real(iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = start_w + pw * bin_w + real(ix + 0.5) * bin_w / grid_w
                    if y < -1.0 or y > height or x < -1.0 or x > width:
                        continue
                    yy, xx = max(y, real(0)), max(x, real(0))
                    y_low, x_low = int(yy), int(xx)
                    if y_low >= height - 1:
                        y_low = y_high = height - 1
                        yy = real(y_low)
                    else:
                        y_high = y_low + 1
                    if x_low >= width - 1:
                        x_low = x_high = width - 1
                        xx = real(x_low)
                    else:
                        x_high = x_low + 1
                    ly, lx = yy - y_low, xx - x_low
                    hy, hx = real(1) - ly, real(1) - lx
                    taps += [(hy * hx, y_low, x_low), (hy * lx, y_low, x_high),
                             (ly * hx, y_high, x_low), (ly * lx, y_high, x_high)]
            yield ph, pw, count, taps


def reference_roi_align(features, rois, spatial_scale, pooled, sampling_ratio, aligned):
    x = features.double().numpy()
    out = np.zeros((len(rois), x.shape[1], *pooled))
    for k, roi in enumerate(rois.numpy()):
        for ph, pw, count, taps in reference_bins(roi, spatial_scale, *pooled, sampling_ratio,
                                                  aligned, *x.shape[2:]):
            for weight, y, xx in taps:
                out[k, :, ph, pw] += weight * x[int(roi[0]), :, y, xx]
            out[k, :, ph, pw] /= count
    return torch.from_numpy(out)


def reference_roi_align_backward(grad, rois, spatial_scale, pooled, sampling_ratio, aligned,
                                 input_shape):
    g = grad.double().numpy()
    grad_input = np.zeros(input_shape)
    for k, roi in enumerate(rois.numpy()):
        for ph, pw, count, taps in reference_bins(roi, spatial_scale, *pooled, sampling_ratio,
                                                  aligned, *input_shape[2:]):
            for weight, y, x in taps:
                grad_input[int(roi[0]), :, y, x] += g[k, :, ph, pw] * weight / count
    return torch.from_numpy(grad_input)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
HEIGHT, WIDTH = 12, 10  # feature map; not square, to catch swapped axes
POOLED = (3, 4)


def make_rois(spatial_scale: float, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """(K, 5) RoIs in image coordinates on 2 images: random ones, ones crossing the edges, ones
    entirely outside, on the -1 / H boundaries, zero-size, inverted and covering the whole map."""
    g = torch.Generator().manual_seed(seed)
    h, w = HEIGHT, WIDTH
    inside_xy = torch.rand(8, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    inside_wh = torch.rand(8, 2, generator=g) * torch.tensor([w / 2, h / 2]) + 0.2
    crossing_xy = torch.rand(6, 2, generator=g) * torch.tensor([w + 6.0, h + 6.0]) - 4.0
    crossing_wh = torch.rand(6, 2, generator=g) * 8.0 + 1.0
    boxes = torch.cat([
        torch.cat([inside_xy, inside_xy + inside_wh], 1),
        torch.cat([crossing_xy, crossing_xy + crossing_wh], 1),
        torch.tensor([
            [-9.0, -9.0, -4.0, -3.0],                 # entirely outside, top left
            [w + 2.0, h + 2.0, w + 8.0, h + 5.0],     # entirely outside, bottom right
            [-1.5, -1.5, 0.5, 0.5],                   # some samples just beyond -1
            [w - 1.0, h - 1.0, w + 1.0, h + 1.0],     # samples between H - 1 and H, and past H
            [3.0, 4.0, 3.0, 4.0],                     # zero size
            [2.5, 6.0, 2.5, 9.0],                     # zero width
            [6.0, 7.0, 2.0, 3.0],                     # inverted
            [-3.0, -2.0, w + 3.0, h + 2.0],           # covers the whole map: big adaptive grid
            [0.0, 0.0, w, h],
        ]),
    ])
    image = torch.randint(0, 2, (boxes.size(0), 1), generator=g).float()
    return torch.cat([image, boxes / spatial_scale], 1).to(dtype)


def make_features(dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, HEIGHT, WIDTH, generator=g).to(dtype)


ROI_CASES = [
    pytest.param(aligned, sampling_ratio, spatial_scale,
                 id=f"aligned={aligned}-sampling={sampling_ratio}-scale={spatial_scale}")
    for aligned in (False, True)
    for sampling_ratio in (0, 2)
    for spatial_scale in (1.0, 0.5)
]


# ---------------------------------------------------------------------------------------------
# RoIAlign
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aligned, sampling_ratio, spatial_scale", ROI_CASES)
def test_roi_align_forward_matches_reference(aligned, sampling_ratio, spatial_scale):
    rois = make_rois(spatial_scale, torch.float64)
    features = make_features(torch.float64)
    expected = reference_roi_align(features, rois, spatial_scale, POOLED, sampling_ratio, aligned)

    got = roi_align(features, rois, POOLED, spatial_scale, sampling_ratio, aligned)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)

    features, rois = features.float(), rois.float()
    expected = reference_roi_align(features, rois, spatial_scale, POOLED, sampling_ratio, aligned)
    got = roi_align(features, rois, POOLED, spatial_scale, sampling_ratio, aligned)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aligned, sampling_ratio, spatial_scale", ROI_CASES)
def test_roi_align_backward_matches_reference(aligned, sampling_ratio, spatial_scale):
    rois = make_rois(spatial_scale, torch.float64)
    features = make_features(torch.float64).requires_grad_()
    grad = torch.randn(rois.size(0), 3, *POOLED, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(2))

    roi_align(features, rois, POOLED, spatial_scale, sampling_ratio, aligned).backward(grad)

    expected = reference_roi_align_backward(grad, rois, spatial_scale, POOLED, sampling_ratio,
                                            aligned, tuple(features.shape))
    torch.testing.assert_close(features.grad, expected, rtol=1e-12, atol=1e-12)


def test_roi_align_gradcheck():
    features = make_features(torch.float64)[:, :2, :7, :6].clone().requires_grad_()
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.1, 5.6], [1, -1.2, 2.2, 6.9, 7.4], [1, 2.6, 1.1, 3.4, 2.3]],
        dtype=torch.float64,
    )
    for aligned, sampling_ratio in ((False, 2), (True, 0)):
        assert torch.autograd.gradcheck(
            lambda x: roi_align(x, rois, (2, 3), 1.0, sampling_ratio, aligned), (features,)
        )


def test_roi_align_handles_no_rois_and_non_contiguous_grads():
    features = make_features(torch.float32).requires_grad_()
    empty = roi_align(features, torch.zeros(0, 5), (7, 7), 0.5, 2)
    assert empty.shape == (0, 3, 7, 7)
    empty.sum().backward()
    assert torch.equal(features.grad, torch.zeros_like(features))

    rois = make_rois(1.0, torch.float32)[:6]
    grad = torch.randn(3, 6, *POOLED).transpose(0, 1)  # strides of no particular layout
    expected = compat.roi_align_backward_kernel(grad.contiguous(), rois, 1.0, *POOLED, 2, 3,
                                                HEIGHT, WIDTH, 2, False)
    got = compat.roi_align_backward_kernel(grad, rois, 1.0, *POOLED, 2, 3, HEIGHT, WIDTH, 2, False)
    assert torch.equal(got, expected)


def test_roi_align_chunks_large_problems(monkeypatch):
    rois = make_rois(1.0, torch.float64)
    features = make_features(torch.float64)
    whole = compat.roi_align_kernel(features, rois, 1.0, *POOLED, 0, True)
    grad = torch.randn_like(whole)
    whole_grad = compat.roi_align_backward_kernel(grad, rois, 1.0, *POOLED, 2, 3, HEIGHT, WIDTH,
                                                  0, True)
    monkeypatch.setattr(compat, "_MAX_SAMPLING_ENTRIES", 64)  # one RoI per chunk
    torch.testing.assert_close(compat.roi_align_kernel(features, rois, 1.0, *POOLED, 0, True),
                               whole, rtol=0, atol=0)
    torch.testing.assert_close(
        compat.roi_align_backward_kernel(grad, rois, 1.0, *POOLED, 2, 3, HEIGHT, WIDTH, 0, True),
        whole_grad, rtol=1e-12, atol=1e-12)


def test_roi_align_rejects_bad_rois():
    features = make_features(torch.float32)
    with pytest.raises(RuntimeError, match=r"batch indices in \[0, 1\]"):
        compat.roi_align_kernel(features, torch.tensor([[2.0, 0, 0, 4, 4]]), 1.0, 2, 2, 2, False)
    with pytest.raises(RuntimeError, match="same type"):
        compat.roi_align_kernel(features, torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float64),
                                1.0, 2, 2, 2, False)


@pytest.fixture
def no_compiled_fallback(monkeypatch):
    """Make torchvision's torch.compile'd pure-Python RoIAlign (used when it believes it has no
    ops; it exhausts memory here) fail loudly if anything reaches it."""
    def compiled_fallback(*args):
        raise AssertionError("torchvision's torch.compile fallback must not run")

    # torchvision.ops.roi_align is the function; the module is only reachable by its full name.
    monkeypatch.setattr(importlib.import_module("torchvision.ops.roi_align"), "_roi_align",
                        compiled_fallback)


def test_roi_align_dispatches_to_the_registered_op(no_compiled_fallback):
    assert torchvision.extension._has_ops()
    level0 = make_features(torch.float32)[:1]
    features = {"0": level0, "1": level0[:, :, ::2, ::2]}
    pooler = MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2)
    boxes = [torch.tensor([[1.0, 1.0, 30.0, 40.0], [10.0, 5.0, 60.0, 90.0]])]
    assert pooler(features, boxes, [(96, 80)]).shape == (2, 3, 7, 7)


# ---------------------------------------------------------------------------------------------
# NMS
# ---------------------------------------------------------------------------------------------
def make_boxes(n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping boxes with tied scores, duplicates, zero-size and inverted boxes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 30], 1)
    boxes[::17, 2:] = boxes[::17, :2]  # zero size
    boxes[5::23, 2:] = boxes[5::23, :2] - 3  # inverted
    boxes[1::11] = boxes[0]  # duplicates of box 0
    scores = torch.randint(0, 12, (n,), generator=g) / 12.0  # many ties
    return boxes.to(dtype), scores.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_reference(dtype, iou_threshold):
    boxes, scores = make_boxes(150, dtype, seed=int(iou_threshold * 10))
    got = nms(boxes, scores, iou_threshold)
    assert got.dtype == torch.int64
    assert got.tolist() == reference_nms(boxes, scores, iou_threshold)


def test_nms_spans_several_blocks():
    boxes, scores = make_boxes(3 * compat._NMS_BLOCK + 5, torch.float32, seed=3)
    assert compat.nms_kernel(boxes, scores, 0.5).tolist() == reference_nms(boxes, scores, 0.5)


def test_nms_compares_float_iou_with_the_double_threshold():
    # IoU(box 0, box 1) = 30 / 100: in float32 that is 0.30000001 > 0.3, in float64 exactly 0.3.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 3.0]])
    scores = torch.tensor([1.0, 0.5])
    assert nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes.double(), scores.double(), 0.3).tolist() == [0, 1]


def test_nms_ties_keep_the_lower_index_first():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3 + [[50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.5, 0.9, 0.9, 0.9])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]


def test_nms_empty_and_bad_input():
    kept = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert kept.dtype == torch.int64 and kept.shape == (0,)
    with pytest.raises(RuntimeError, match="same type"):
        nms(torch.zeros(2, 4), torch.zeros(2, dtype=torch.float64), 0.5)
    with pytest.raises(RuntimeError, match="4 elements in dimension 1"):
        nms(torch.zeros(2, 5), torch.zeros(2), 0.5)
    with pytest.raises(RuntimeError, match="same number of elements"):
        nms(torch.zeros(2, 4), torch.zeros(3), 0.5)


def test_batched_nms_is_nms_per_class():
    boxes, scores = make_boxes(120, torch.float32, seed=7)
    classes = torch.arange(120) % 3
    expected = []
    for c in range(3):
        members = torch.nonzero(classes == c)[:, 0]
        expected += members[reference_nms(boxes[members], scores[members], 0.5)].tolist()
    got = batched_nms(boxes, scores, classes, 0.5).tolist()
    assert sorted(got) == sorted(expected)
    assert scores[got].tolist() == sorted(scores[got].tolist(), reverse=True)


# ---------------------------------------------------------------------------------------------
# torchvision end to end, and the import-time decision
# ---------------------------------------------------------------------------------------------
# torchvision's own fake nms kernel uses a deprecated torch API:
@pytest.mark.filterwarnings("ignore:`create_unbacked_symint` is deprecated:FutureWarning")
def test_registered_ops_pass_opcheck():
    """Schemas, torchvision's fake kernels and autograd registration agree with the kernels."""
    features = make_features(torch.float64).requires_grad_()
    rois = make_rois(1.0, torch.float64)[:6]
    torch.library.opcheck(torch.ops.torchvision.roi_align.default,
                          (features, rois, 0.5, 3, 2, 2, False))
    boxes, scores = make_boxes(40, torch.float32, seed=0)
    torch.library.opcheck(torch.ops.torchvision.nms.default, (boxes, scores, 0.5),
                          test_utils=["test_schema", "test_faketensor"])


@pytest.fixture(scope="module")
def mask_rcnn():
    torch.manual_seed(0)
    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, min_size=128, max_size=128,
        box_score_thresh=0.0, box_detections_per_img=10,
    )


@pytest.mark.slow
def test_mask_rcnn_eval_forward(mask_rcnn, no_compiled_fallback):
    mask_rcnn.eval()
    with torch.no_grad():
        image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
        (detections,) = mask_rcnn([image])
    n = detections["boxes"].shape[0]
    assert n > 0  # score threshold 0: the mask branch runs
    assert detections["masks"].shape == (n, 1, 128, 128)


@pytest.mark.slow
def test_mask_rcnn_training_step(mask_rcnn, no_compiled_fallback):
    mask_rcnn.train()
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(1, 128, 128, dtype=torch.uint8)
    masks[0, 30:90, 20:80] = 1
    target = {"boxes": torch.tensor([[20.0, 30.0, 80.0, 90.0]]), "labels": torch.tensor([1]),
              "masks": masks}
    mask_rcnn.zero_grad()
    losses = mask_rcnn([image], [target])
    assert {"loss_mask", "loss_classifier", "loss_box_reg"} <= set(losses)
    sum(losses.values()).backward()
    mask_grad = mask_rcnn.roi_heads.mask_head[0][0].weight.grad
    assert mask_grad is not None and torch.isfinite(mask_grad).all() and mask_grad.abs().sum() > 0
    fpn_grad = mask_rcnn.backbone.fpn.layer_blocks[0][0].weight.grad  # reached through RoIAlign
    assert fpn_grad is not None and torch.isfinite(fpn_grad).all()


def test_ops_without_a_kernel_raise_clearly():
    if not compat.EMULATED:
        pytest.skip("torchvision's compiled ops are loaded")
    with pytest.raises(NotImplementedError, match="torchvision::roi_pool is unavailable"):
        torchvision.ops.roi_pool(make_features(torch.float32), torch.zeros(1, 5), 2)


def test_transforms_v2_and_io_import():
    import torchvision.io  # noqa: F401
    import torchvision.transforms.v2 as v2

    image = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    assert v2.RandomHorizontalFlip(p=1.0)(image).shape == (3, 20, 20)


def test_install_does_nothing_when_native_ops_load(monkeypatch):
    def must_not_run():
        raise AssertionError("must not run when torchvision's compiled ops load")

    monkeypatch.setattr(compat, "_define_ops", must_not_run)
    monkeypatch.setattr(compat, "_make_torchvision_see_ops", must_not_run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compat.install(native_ops_error=lambda: None) is False


def test_install_again_redefines_nothing_and_stays_quiet(monkeypatch):
    def must_not_run():
        raise AssertionError("the ops are defined already")

    monkeypatch.setattr(compat, "_define_ops", must_not_run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compat.install(native_ops_error=lambda: "compiled ops missing") is True


@pytest.mark.slow
def test_fresh_interpreter_warns_once_and_survives_reimport():
    script = (
        "import importlib, warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    from aecfe import torchvision_compat\n"
        "    import torchvision\n"
        "    importlib.reload(torchvision_compat)\n"
        "import torch\n"
        "boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 3.9]])\n"
        "kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist()\n"
        "ours = [w for w in caught if 'torchvision_compat' in str(w.message)]\n"
        "print(torchvision_compat.EMULATED, len(ours), kept)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=True, cwd=Path(__file__).parents[1])
    emulated, warnings_seen, kept = result.stdout.split(maxsplit=2)
    assert kept.strip() == "[0]"
    assert (emulated, warnings_seen) == (("True", "1") if compat.EMULATED else ("False", "0"))
