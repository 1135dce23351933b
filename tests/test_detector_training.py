"""Detector training (loss falls, weights-only checkpoints, exact resume), augmentations,
evaluation (COCO mAP plumbing, detection rate, overlays) and the training CLI."""
import json

import numpy as np
import pytest
import torch

from aecfe.errors import InputError
from aecfe.io import load_coco, scan_class_folders
from aecfe.synthetic import default_domains, write_class_folders, write_coco
from detectors import Detector, DetectorBackend, RawDetections, make_detector
from detectors.augment import DetectionAugment, bilateral_filter, mask_boxes
from detectors.evaluation import detection_rate, evaluate_coco, save_overlays
from detectors.training import TrainConfig, read_log, split_images, train_detector

TINY = {"backbone": "mobilenet_v2", "min_size": 128, "max_size": 128, "batch_size": 2, "warmup_steps": 2,
        "progress": False}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"), default_domains()[0], 6, seed=0, size=(128, 128))


def test_loss_decreases_and_checkpoint_round_trip(coco, tmp_path):
    detector = train_detector([coco], out_dir=tmp_path, max_steps=10, lr=0.01, augment_p=0.0, **TINY)
    losses = [r["loss"] for r in read_log(tmp_path / "log.jsonl")]
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["step"] == 10 and saved["arch"]["backbone"] == "mobilenet_v2"
    reloaded = make_detector(checkpoint=tmp_path / "last.pt", min_size=128, max_size=128, score_threshold=0.0)
    detector.backend.score_threshold = 0.0
    image = load_coco(coco)[0].read()
    a, b = detector.detect([image])[0], reloaded.detect([image])[0]
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    np.testing.assert_allclose(a.roi_features, b.roi_features, atol=1e-5)
    assert reloaded.config["weights"].startswith("checkpoint:last.pt:sha256=")
    unsized = make_detector(checkpoint=tmp_path / "last.pt")  # sizes unset: the ones it was trained with
    assert (unsized.config["min_size"], unsized.config["max_size"]) == (saved["arch"]["min_size"],
                                                                         saved["arch"]["max_size"])


def test_resume_continues_exactly(coco, tmp_path):
    straight = train_detector([coco], out_dir=tmp_path / "a", max_steps=3, **TINY)
    train_detector([coco], out_dir=tmp_path / "b", max_steps=2, **TINY)
    resumed = train_detector([coco], out_dir=tmp_path / "b", max_steps=3, resume=tmp_path / "b" / "last.pt", **TINY)
    for (name, p), q in zip(straight.backend.model.state_dict().items(), resumed.backend.model.state_dict().values()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)
    assert [r["step"] for r in read_log(tmp_path / "b" / "log.jsonl")] == [1, 2, 3]
    with pytest.raises(InputError, match="architecture"):
        train_detector([coco], max_steps=1, resume=tmp_path / "b" / "last.pt", **{**TINY, "backbone": "resnet18"})


def test_training_accepts_coco_with_missing_masks_and_outside_boxes(coco, tmp_path):
    data = json.loads(coco.read_text())
    data["annotations"][0]["segmentation"] = None
    data["annotations"][1]["bbox"] = [500.0, 500.0, 10.0, 10.0]  # outside the 128 px image
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 3]  # a negative image
    bad = coco.parent / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(InputError, match="outside"):
        load_coco(bad)
    images = load_coco(bad, on_error="skip")
    assert any(len(i) == 0 for i in images) and not all(images[0].has_mask)
    detector = train_detector([bad], max_steps=3, batch_size=6, augment_p=1.0,  # every image in each step
                              **{k: v for k, v in TINY.items() if k != "batch_size"})
    assert isinstance(detector, Detector)


def test_train_config_validation():
    with pytest.raises(InputError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(InputError, match="schedule"):
        TrainConfig(schedule="step")


def test_split_images_is_seeded_and_disjoint(coco):
    images = load_coco(coco)
    train, held = split_images(images, 0.34, seed=3)
    assert len(held) == 2 and len(train) == 4
    assert {i.image_id for i in train}.isdisjoint({i.image_id for i in held})
    assert [i.image_id for i in split_images(images, 0.34, seed=3)[1]] == [i.image_id for i in held]


def test_augment_keeps_masks_and_boxes_consistent(coco):
    item = load_coco(coco)[0]
    image = torch.from_numpy(item.read()).permute(2, 0, 1).float() / 255
    masks = torch.from_numpy(item.masks())
    boxes = torch.from_numpy(item.boxes)
    untouched = DetectionAugment(p=0.0)(image, boxes, masks, np.random.default_rng(0))
    assert untouched[0] is image and untouched[1] is boxes
    for seed in range(6):
        out, out_boxes, out_masks, keep = DetectionAugment(p=1.0)(image, boxes, masks, np.random.default_rng(seed))
        assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
        assert len(out_boxes) == len(out_masks) == len(keep)
        torch.testing.assert_close(out_boxes, mask_boxes(out_masks))
    again = DetectionAugment(p=1.0)(image, boxes, masks, np.random.default_rng(5))
    torch.testing.assert_close(again[0], out)


def test_bilateral_filter_matches_brute_force_and_keeps_edges():
    torch.manual_seed(0)
    image = torch.rand(3, 9, 11)
    fast = bilateral_filter(image, 3, sigma_space=1.5, sigma_color=0.2)
    padded = torch.nn.functional.pad(image[None], (1, 1, 1, 1), mode="reflect")[0]
    slow = torch.zeros_like(image)
    for y in range(9):
        for x in range(11):
            window = padded[:, y:y + 3, x:x + 3]
            dy, dx = torch.meshgrid(torch.arange(-1, 2.0), torch.arange(-1, 2.0), indexing="ij")
            w = torch.exp(-((window - image[:, y, x, None, None]) ** 2).sum(0) / (2 * 0.2 ** 2)
                          - (dy ** 2 + dx ** 2) / (2 * 1.5 ** 2))
            slow[:, y, x] = (w * window).sum((1, 2)) / w.sum()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    step = torch.zeros(3, 8, 8)
    step[:, :, 4:] = 1.0
    torch.testing.assert_close(bilateral_filter(step, 5, 2.0, 0.05), step, atol=1e-3, rtol=0)


class OracleBackend(DetectorBackend):
    """Returns the ground truth of COCO images as detections (score 0.9), in call order."""

    name = "oracle"

    def __init__(self, coco_images):
        self.queue = list(coco_images)
        self.score_threshold = 0.5

    def config(self):
        return {"backend": "oracle", "score_threshold": self.score_threshold}

    def run(self, images):
        raws = []
        for _ in images:
            item = self.queue.pop(0)
            n = len(item)
            raws.append(RawDetections(boxes=item.boxes, scores=np.full(n, 0.9, np.float32),
                                      roi_features=torch.zeros(n, 256, 14, 14), masks=item.masks()))
        return raws, None

    def pool(self, state, boxes):
        return [torch.zeros(len(b), 256, 14, 14) for b in boxes]


def test_evaluate_coco_perfect_detections_score_one(coco, tmp_path):
    images = load_coco(coco)
    metrics = evaluate_coco(Detector(OracleBackend(images)), images, batch_size=4)
    assert metrics["bbox"]["AP50"] == pytest.approx(1.0) and metrics["segm"]["AP"] == pytest.approx(1.0)
    assert metrics["instances"] == metrics["detections"] == sum(len(i) for i in images)
    paths = save_overlays(Detector(OracleBackend(images[:2])), images[:2], tmp_path / "overlays")
    assert len(paths) == 2 and all(p.stat().st_size > 0 for p in paths)


def test_detection_rate_per_domain(tmp_path):
    root = write_class_folders(tmp_path, default_domains()[:2], 3, seed=0, size=64)
    records = [r for d in default_domains()[:2] for r in scan_class_folders(root / d.name)]
    (records[0].path).write_bytes(b"broken")
    stub = OracleBackend([])
    stub.run = lambda images: ([RawDetections(np.array([[1, 1, 30, 30]], np.float32), np.array([0.9], np.float32),
                                              torch.zeros(1, 256, 14, 14), masks=np.ones((1, 64, 64), bool))
                                for _ in images], None)
    report = detection_rate(Detector(stub), records, batch_size=4)
    assert report["overall"]["images"] == 5 and report["overall"]["rate"] == 1.0
    assert sum(report["per_domain"][records[0].domain]["unreadable"].values()) == 1


def test_train_detector_cli(coco, tmp_path):
    from aecfe.cli.train_detector import main

    out = tmp_path / "run"
    assert main([str(coco), "--out", str(out), "--max-steps", "2", "--min-size", "128", "--max-size", "128",
                 "--val-fraction", "0.34", "--no-progress", "--overlays", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and "bbox" in summary["held_out"]
    assert (out / "last.pt").is_file() and list((out / "overlays").glob("*.png"))

