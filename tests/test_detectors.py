"""Detector interface, torchvision backend, roi stage: shapes, RoI features = the model's own
mask_roi_pool, single-cell selection, fallback, crops, store writing and resume, bad input."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from aecfe.errors import InputError
from aecfe.io import load_coco, scan_class_folders
from aecfe.store import CellStore, write_roi_stage
from aecfe.synthetic import default_domains, make_fields, make_single_cell_images, write_coco
from detectors import Detector, DetectorBackend, RawDetections, make_detector
from detectors.torchvision_backend import build_maskrcnn
from torchvision.models.detection.transform import resize_boxes


@pytest.fixture(scope="module")
def fields():
    return [f.image for f in make_fields(default_domains()[0], 2, seed=0, size=(160, 192))]


@pytest.fixture(scope="module")
def untrained():
    """An untrained MobileNetV2-FPN Mask R-CNN at 128 px: scores ~0.5, so threshold 0 keeps all."""
    torch.manual_seed(0)
    return make_detector(backbone="mobilenet_v2", min_size=128, max_size=160, score_threshold=0.0,
                         box_detections_per_img=6)


def test_output_shapes_and_dtypes(untrained, fields):
    out = untrained.detect(fields, batch_size=2)
    assert len(out) == 2
    for image, det in zip(fields, out):
        n = len(det)
        assert n == 6
        assert det.boxes.shape == (n, 4) and det.boxes.dtype == np.float32
        assert det.masks.shape == (n, *image.shape[:2]) and det.masks.dtype == bool
        assert det.scores.shape == (n,) and det.scores.dtype == np.float32
        assert det.roi_features.shape == (n, 256, 14, 14) and det.roi_features.dtype == np.float32
        assert det.crops.shape == (n, 3, 128, 128) and det.crops.dtype == np.uint8
        assert np.all(np.diff(det.scores) <= 0)  # score-sorted
        assert np.all(det.boxes[:, 2] <= image.shape[1]) and np.all(det.boxes[:, 3] <= image.shape[0])
        assert det.undetected_reason is None


def test_detect_matches_model_forward_and_mask_roi_pool(untrained, fields):
    """Boxes/scores equal torchvision's own eval forward; RoI features equal the model's
    roi_heads.mask_roi_pool on the same final boxes (the mask head's input)."""
    model = untrained.backend.model
    det = untrained.detect(fields[:1])[0]
    tensor = torch.from_numpy(fields[0]).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        reference = model([tensor])[0]
        image_list, _ = model.transform([tensor])
        features = model.backbone(image_list.tensors)
        boxes = resize_boxes(torch.from_numpy(det.boxes), fields[0].shape[:2], image_list.image_sizes[0])
        expected = model.roi_heads.mask_roi_pool(features, [boxes], image_list.image_sizes)
    np.testing.assert_allclose(det.boxes, reference["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(det.scores, reference["scores"].numpy(), atol=1e-6)
    np.testing.assert_allclose(det.roi_features, expected.numpy(), atol=1e-4)
    assert np.array_equal(det.masks, reference["masks"][:, 0].numpy() > 0.5)


def test_single_cell_keeps_highest_score_on_real_model(untrained, fields):
    all_cells = untrained.detect(fields)
    single = untrained.detect(fields, single_cell=True)
    for a, s in zip(all_cells, single):
        assert len(s) == 1
        np.testing.assert_array_equal(s.boxes[0], a.boxes[0])
        np.testing.assert_array_equal(s.roi_features[0], a.roi_features[0])


class StubBackend(DetectorBackend):
    """Returns fixed detections (unsorted scores) and marks pooled boxes, for the shared logic."""

    name = "stub"

    def __init__(self, scores, score_threshold=0.5):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.score_threshold = score_threshold
        self.pooled = []

    def config(self):
        return {"backend": "stub", "score_threshold": self.score_threshold}

    def run(self, images):
        raws = []
        for image in images:
            keep = self.scores >= self.score_threshold
            n = int(keep.sum())
            boxes = np.array([[10 + 5 * i, 10, 40 + 5 * i, 50] for i in range(len(self.scores))], np.float32)[keep]
            roi = torch.arange(len(self.scores), dtype=torch.float32)[keep].view(n, 1, 1, 1).expand(n, 256, 14, 14)
            masks = np.zeros((n, *image.shape[:2]), bool)
            raws.append(RawDetections(boxes=boxes, scores=self.scores[keep], roi_features=roi, masks=masks))
        return raws, "state"

    def pool(self, state, boxes):
        assert state == "state"
        self.pooled.append([b.copy() for b in boxes])
        return [torch.full((len(b), 256, 14, 14), -1.0) for b in boxes]


def test_single_cell_selection_is_the_argmax():
    detector = Detector(StubBackend([0.6, 0.9, 0.7]))
    image = np.zeros((64, 80, 3), np.uint8)
    det = detector.detect([image], single_cell=True)[0]
    assert len(det) == 1 and det.scores[0] == pytest.approx(0.9)
    np.testing.assert_array_equal(det.boxes[0], [15, 10, 45, 50])
    assert np.all(det.roi_features[0] == 1)  # row 1 of the stub's features
    assert not det.fallback


def test_undetected_and_centre_fallback():
    image = np.zeros((60, 100, 3), np.uint8)
    none = Detector(StubBackend([0.1, 0.2])).detect([image], single_cell=True)[0]
    assert len(none) == 0 and none.undetected_reason == "no detection above score 0.5"
    assert none.roi_features.shape == (0, 256, 14, 14) and none.crops.shape == (0, 3, 128, 128)
    assert none.masks.shape == (0, 60, 100)

    backend = StubBackend([0.1])
    centre = Detector(backend, single_cell_fallback="center", center_box_fraction=0.5).detect([image], single_cell=True)[0]
    assert centre.fallback and centre.undetected_reason is None
    np.testing.assert_allclose(centre.boxes[0], [25, 15, 75, 45])
    np.testing.assert_allclose(backend.pooled[0][0], centre.boxes)  # RoI features pooled for that box
    assert np.all(centre.roi_features == -1) and centre.scores[0] == 0
    assert centre.masks[0].sum() == 50 * 30


def test_fallback_pools_on_the_real_model(fields):
    torch.manual_seed(0)
    detector = make_detector(min_size=128, max_size=160, score_threshold=1.0, single_cell_fallback="center")
    det = detector.detect(fields[:1], single_cell=True)[0]
    assert det.fallback and det.roi_features.shape == (1, 256, 14, 14)
    model = detector.backend.model
    tensor = torch.from_numpy(fields[0]).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        image_list, _ = model.transform([tensor])
        features = model.backbone(image_list.tensors)
        boxes = resize_boxes(torch.from_numpy(det.boxes), fields[0].shape[:2], image_list.image_sizes[0])
        expected = model.roi_heads.mask_roi_pool(features, [boxes], image_list.image_sizes)
    np.testing.assert_allclose(det.roi_features, expected.numpy(), atol=1e-5)


def test_crop_is_box_plus_margin_resized():
    detector = Detector(StubBackend([]), crop_margin=(10, 20))
    image = np.zeros((300, 300, 3), np.uint8)
    image[90:170, 40:120] = 200  # exactly [y1-10, y2+20) x [x1-10, x2+20) for box (50, 100, 100, 150)
    crop = detector.crops(image, np.array([[50, 100, 100, 150]], np.float32))
    assert crop.shape == (1, 3, 128, 128) and crop.dtype == np.uint8
    assert np.all(crop == 200)
    edge = detector.crops(image, np.array([[0, 0, 5, 5]], np.float32))  # clipped at the border
    assert edge.shape == (1, 3, 128, 128)


@pytest.mark.parametrize("image, problem", [
    (np.zeros((64, 64), np.uint8), "RGB image"),
    (np.zeros((64, 64, 4), np.uint8), "RGB image"),
    (np.zeros((64, 64, 3), np.uint16), "uint8"),
    (np.zeros((20, 64, 3), np.uint8), "too small"),
    (np.zeros((4100, 40, 3), np.uint8), "too large"),
])
def test_bad_arrays_raise_input_error(image, problem):
    detector = Detector(StubBackend([0.9]))
    with pytest.raises(InputError, match=problem):
        detector.detect([np.zeros((64, 64, 3), np.uint8), image])


def test_make_detector_rejects_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        make_detector("mmdet")
    with pytest.raises(InputError, match="backbone"):
        make_detector(backbone="vgg16")
    with pytest.raises(InputError, match="weights"):
        make_detector(backbone="resnet18", weights="NO_SUCH_WEIGHTS")
    with pytest.raises(InputError, match="checkpoint"):
        make_detector(checkpoint="/nonexistent/last.pt")
    with pytest.raises(ValueError, match="fallback"):
        Detector(StubBackend([]), single_cell_fallback="random")


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_scratch_backbones_train_batchnorm(backbone):
    model, arch = build_maskrcnn(backbone, min_size=128, max_size=128)
    assert not arch["frozen_batchnorm"] and arch["initial_weights"] is None
    norms = [m for m in model.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(p.requires_grad for m in norms for p in m.parameters())
    assert model.transform.min_size == (128,) and model.transform.max_size == 128


def test_local_backbone_weights_file(tmp_path):
    from torchvision.models import mobilenet_v2
    from torchvision.ops.misc import FrozenBatchNorm2d

    reference = mobilenet_v2()
    torch.save(reference.state_dict(), tmp_path / "mnv2.pth")
    model, arch = build_maskrcnn("mobilenet_v2", weights=tmp_path / "mnv2.pth", min_size=128, max_size=128)
    assert arch["frozen_batchnorm"] and arch["initial_weights"].startswith("file:mnv2.pth")
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules())
    torch.testing.assert_close(model.backbone.body["0"][0].weight, reference.features[0][0].weight)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pth"):
        build_maskrcnn("mobilenet_v2", weights=tmp_path / "bad.pth")


def _write_cls_folder(root):
    cells = make_single_cell_images(default_domains()[1], 3, seed=0, size=96)
    folder = root / "lab_b"
    for i, cell in enumerate(cells):
        (folder / cell.labels[0]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(cell.image).save(folder / cell.labels[0] / f"c{i}.png")
    label_dir = folder / cells[0].labels[0]
    (label_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(cells[0].image[:, :, 0]).save(label_dir / "gray.png")
    Image.fromarray(np.dstack([cells[0].image, np.full((96, 96), 255, np.uint8)])).save(label_dir / "rgba.png")
    Image.fromarray(cells[0].image[:, :, 1].astype(np.uint16) * 257).save(label_dir / "deep16.png")
    Image.fromarray(cells[0].image[:20, :20]).save(label_dir / "tiny.png")
    return folder


def test_roi_stage_writes_resumes_and_counts_bad_files(tmp_path, untrained):
    folder = _write_cls_folder(tmp_path)
    records = scan_class_folders(folder)
    assert len(records) == 8
    single = Detector(untrained.backend, single_cell_fallback="none")
    with CellStore.create(tmp_path / "s.h5", provenance={"detector": single.config}) as store:
        report = write_roi_stage(single, records[:5], store, single_cell=True, batch_size=2, progress=False)
    assert report.images_skipped_done == 0
    assert report.images_read + sum(report.errors.values()) == 5
    with CellStore.open(tmp_path / "s.h5", "a") as store:
        again = write_roi_stage(single, records, store, single_cell=True, batch_size=2, progress=False)
        assert again.images_skipped_done == 5
        assert store.n_images == 8
        images = store.images()
        cells = store.cells()
    assert set(images.status) <= {"ok", "undetected", "error"}
    errors = {**report.errors}
    for key, value in again.errors.items():
        errors[key] = errors.get(key, 0) + value
    assert errors == {"corrupt": 1, "unusable image": 1} or errors == {"truncated": 1, "unusable image": 1}
    error_rows = images[images.status == "error"]
    assert any("corrupt.png" in p for p in error_rows.image_path) and any("tiny.png" in p for p in error_rows.image_path)
    assert len(cells) == report.cells_found + again.cells_found == 6  # 3 cells + gray, rgba, 16-bit
    assert json.dumps(report.to_dict())
    with CellStore.open(tmp_path / "s.h5") as store:
        assert store.roi(slice(0, 1)).shape == (1, 256, 14, 14)
        assert store.crops(slice(0, 1)).dtype == np.uint8


def test_roi_stage_on_coco_and_undetected(tmp_path):
    annotations = write_coco(tmp_path, default_domains()[2], 3, seed=1, size=(96, 96))
    images = load_coco(annotations)
    detector = Detector(StubBackend([0.2]))  # nothing above 0.5
    with CellStore.create(tmp_path / "c.h5", provenance={}) as store:
        report = write_roi_stage(detector, images, store, single_cell=False, progress=False)
        assert report.undetected == 3 and report.cells_found == 0
        frame = store.images()
    assert set(frame.domain) == {default_domains()[2].name}
    assert set(frame.reason) == {"no detection above score 0.5"}


def test_roi_stage_without_skip_errors_keeps_written_rows(tmp_path):
    folder = _write_cls_folder(tmp_path)
    records = sorted(scan_class_folders(folder), key=lambda r: r.path.name in ("corrupt.png", "tiny.png"))
    detector = Detector(StubBackend([0.9]))
    with CellStore.create(tmp_path / "s.h5", provenance={}) as store, \
            pytest.raises(InputError, match="corrupt.png|tiny.png"):
        write_roi_stage(detector, records, store, single_cell=True, skip_errors=False, progress=False, batch_size=1)
    with CellStore.open(tmp_path / "s.h5") as store:
        assert store.n_images == 6  # every image before the bad file was committed


def test_detectron2_backend_when_installed():
    pytest.importorskip("detectron2")
    detector = make_detector("detectron2", config_file="COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
                             min_size=128, max_size=160, score_threshold=0.0)
    image = make_fields(default_domains()[0], 1, seed=0, size=(128, 128))[0].image
    det = detector.detect([image], single_cell=True)[0]
    assert det.roi_features.shape == (1, 256, 14, 14) and det.crops.shape == (1, 3, 128, 128)


@pytest.mark.realdata
def test_real_bccd_annotations_one_forward(real_data_dir):
    images = load_coco(real_data_dir / "det" / "bccd" / "annotations.json", on_error="skip")
    assert len(images) > 300
    torch.manual_seed(0)
    detector = make_detector(min_size=256, max_size=342, score_threshold=0.0, box_detections_per_img=3)
    det = detector.detect([images[0].read()], single_cell=True)[0]
    assert det.roi_features.shape == (1, 256, 14, 14) and det.masks.shape[1:] == (images[0].height, images[0].width)
