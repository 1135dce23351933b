"""A lab's workflow end to end on synthetic images: extract -> train-classifier (bundle) -> predict; and the bundle's
refusal of altered, incomplete, unknown or foreign content.

The detector is a real torchvision Mask R-CNN (MobileNetV2) trained for one step (it finds little; single-cell
images fall back to the centred box), the autoencoder an untrained seeded one, the head a 10-round XGBoost: the
test checks the plumbing and the files, not accuracy.
"""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aecfe.errors import InputError
from aecfe.synthetic import default_domains, write_class_folders, write_coco


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """Images, detector, autoencoder, training store and a bundle (as a lab would make them)."""
    from aecfe.cli.extract_features import main as extract
    from aecfe.cli.train_classifier import main as train_classifier
    from detectors.training import train_detector
    from extractors.autoencoder import AECFEAutoencoder
    from extractors.trainer import AutoencoderTrainer, TrainerConfig

    root = tmp_path_factory.mktemp("workflow")
    images = write_class_folders(root / "cls", default_domains(), 8, seed=0, size=96)
    held_back = root / "held_back"
    held_back.mkdir()
    shutil.move(images / "lab_a" / "basophil", held_back / "basophil")  # a class the bundle will not know
    coco = write_coco(root / "coco", default_domains()[0], 1, seed=0, size=(96, 96))
    train_detector([coco], out_dir=root / "det", max_steps=1, batch_size=1, min_size=96, max_size=96, progress=False)
    torch.manual_seed(0)
    AutoencoderTrainer(AECFEAutoencoder(), TrainerConfig(epochs=0, progress=False), n_domains=2).save_checkpoint(
        root / "ae.pt")
    store = root / "train.h5"
    common = ["--detector-checkpoint", str(root / "det" / "last.pt")]
    assert extract(["--domain", f"lab_a={images / 'lab_a'}", "--domain", f"lab_b={images / 'lab_b'}", *common,
                    "--fallback", "center", "--autoencoder-checkpoint", str(root / "ae.pt"), "--embedding-name", "ae",
                    "--out", str(store), "--no-progress"]) == 0
    bundle = root / "bundle"
    assert train_classifier([str(store), "--embedding", "ae", "--autoencoder-checkpoint", str(root / "ae.pt"), *common,
                             "--head", "xgboost", "--head-param", "n_estimators=10", "--scheme", "five",
                             "--out", str(bundle)]) == 0
    return {"root": root, "images": images, "held_back": held_back, "coco": coco, "store": store, "bundle": bundle}


def test_train_classifier_writes_a_verified_bundle_and_validation(workflow):
    from aecfe import __version__
    from aecfe.bundle import load_bundle
    from aecfe.identity import sha256_file

    bundle_dir = workflow["bundle"]
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["autoencoder.pt", "bundle.json", "detector.pt", "head.json", "head.xgb.json"]
    assert manifest["aecfe_version"] == __version__
    for part in ("detector.pt", "autoencoder.pt"):  # weights only: no optimizer state
        state = torch.load(bundle_dir / part, weights_only=True)
        assert "optimizer" not in state and "model" in state
    bundle = load_bundle(bundle_dir)
    assert bundle.scheme == "five" and "basophil" not in bundle.classes
    assert set(bundle.classes) <= {"neutrophil", "lymphocyte", "monocyte", "eosinophil"}
    assert bundle.preprocessing["single_cell_fallback"] == "center" and bundle.preprocessing["min_size"] == 96
    assert bundle.preprocessing["input_scaling"] and bundle.preprocessing["crop_shape"] == [3, 128, 128]
    provenance = bundle.description["provenance"]
    assert provenance["training_store_sha256"] == sha256_file(workflow["store"])
    assert provenance["command"].startswith("aecfe-train-classifier ") and "--scheme five" in provenance["command"]
    validation = json.loads(bundle_dir.with_name("bundle.validation.json").read_text())
    assert validation["n_train"] + validation["n_test"] == provenance["n_cells"] == 14
    assert 0 <= validation["overall"]["accuracy"] <= 1 and set(validation["domains"]) <= {"lab_a", "lab_b"}
    assert "In-store validation" in bundle_dir.with_name("bundle.validation.md").read_text()


def test_predict_end_to_end_on_new_images(workflow, tmp_path):
    from aecfe.cli.predict import main as predict
    from aecfe.store.runs import report_path

    lab_c = workflow["images"] / "lab_c"
    unlabelled = tmp_path / "new_lab" / "slide1"
    unlabelled.mkdir(parents=True)
    for path in sorted(lab_c.rglob("*.png"))[:2]:
        shutil.copy(path, unlabelled / path.name)
    basophils = sorted(workflow["held_back"].rglob("*.png"))
    (tmp_path / "list.txt").write_text("".join(f"{p}\tlab_a_extra\tbasophil\n" for p in basophils))
    out = tmp_path / "pred"
    args = [str(workflow["bundle"]), "--domain", f"lab_c={lab_c}", "--images", f"new={tmp_path / 'new_lab'}",
            "--files", str(tmp_path / "list.txt"), "--uncertain-below", "0.9", "--device", "cpu", "--out", str(out),
            "--no-progress"]
    assert predict(args) == 0
    report = json.loads((out / "report.json").read_text())
    n_images = len(list(lab_c.rglob("*.png"))) + 2 + len(basophils)
    assert report["images"]["read"] == n_images and report["images"]["with_cells"] == n_images  # centred fallback
    assert report["true_classes_unknown_to_bundle"] == {"basophil": len(basophils)}  # reported, never mapped
    assert report["scores"]["n_test"] == len(list(lab_c.rglob("*.png")))  # lab_c's labelled cells are scored
    with open(out / "cells.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    bundle_classes = json.loads((workflow["bundle"] / "bundle.json").read_text())["classes"]
    assert len(rows) == report["cells"] == n_images
    assert list(rows[0])[:9] == ["image", "domain", "cell_index", "x1", "y1", "x2", "y2", "score", "fallback"]
    for row in rows:
        probabilities = [float(row[f"p_{name}"]) for name in bundle_classes]
        assert sum(probabilities) == pytest.approx(1, abs=1e-5)
        assert row["predicted"] == bundle_classes[int(np.argmax(probabilities))]
        assert row["uncertain"] == str(max(probabilities) < 0.9)
    assert {row["domain"] for row in rows} == {"lab_c", "new/slide1", "lab_a_extra"}
    per_domain = {row["domain"]: row for row in csv.DictReader(open(out / "counts_per_domain.csv"))}
    assert int(per_domain["new/slide1"]["cells"]) == 2
    overall = next(csv.DictReader(open(out / "counts_overall.csv")))
    assert sum(int(overall[f"n_{name}"]) for name in bundle_classes) == int(overall["cells"]) == n_images
    assert sum(float(overall[f"pct_{name}"]) for name in bundle_classes) == pytest.approx(100, abs=0.1)
    assert "Differential count" in (out / "counts.md").read_text() and (out / "gallery.png").stat().st_size > 0
    assert predict(args) == 0  # resumable: the second run detects nothing anew
    assert json.loads(report_path(out / "cells.h5").read_text())["images_detected_now"] == 0


def test_predict_counts_fields_without_cells_and_draws_overlays(workflow, tmp_path):
    from aecfe.bundle import load_bundle
    from aecfe.prediction import collect_inputs, predict_images

    from PIL import Image

    (tmp_path / "blank").mkdir()
    Image.fromarray(np.full((96, 96, 3), 255, np.uint8)).save(tmp_path / "blank" / "empty_field.png")
    listing = collect_inputs(coco=[("field_lab", workflow["coco"])], folders=[("blank", tmp_path / "blank")],
                             fields=True)
    result = predict_images(load_bundle(workflow["bundle"]), listing, tmp_path / "p", progress=False)
    images = result.report["images"]
    assert images["read"] == 2 and images["with_cells"] + images["without_cells"] == 2
    per_image = {row["image"]: row for row in csv.DictReader(open(tmp_path / "p" / "counts_per_image.csv"))}
    assert sum(int(row["cells"]) for row in per_image.values()) == result.report["cells"]
    assert images["without_cells"] == sum(row["status"] != "ok" for row in per_image.values())
    if images["without_cells"]:  # counted and reported by reason, never dropped from the per-image table
        assert sum(images["without_cells_by_reason"].values()) == images["without_cells"]
    assert len(result.report["overlays"]) == 2 and all(Path(p).is_file() for p in result.report["overlays"])


@pytest.fixture()
def bundle_copy(workflow, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(workflow["bundle"], copy)
    return copy


def test_load_refuses_altered_content(bundle_copy):
    from aecfe.bundle import load_bundle

    head = bundle_copy / "head.json"
    head.write_text(head.read_text().replace('"n_estimators": 10', '"n_estimators": 11'))
    with pytest.raises(InputError, match=r"head.json: altered"):
        load_bundle(bundle_copy)


def test_load_refuses_a_missing_part(bundle_copy):
    from aecfe.bundle import load_bundle

    (bundle_copy / "autoencoder.pt").unlink()
    with pytest.raises(InputError, match=r"autoencoder.pt: part of the bundle is missing"):
        load_bundle(bundle_copy)


def test_load_refuses_unknown_content_and_other_versions(bundle_copy, tmp_path):
    from aecfe.bundle import load_bundle, version_compatible

    (bundle_copy / "extra.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match=r"unknown content.*extra.pkl"):
        load_bundle(bundle_copy)
    (bundle_copy / "extra.pkl").unlink()
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    (bundle_copy / "manifest.json").write_text(json.dumps({**manifest, "aecfe_version": "1.0.0"}))
    with pytest.raises(InputError, match=r"manifest.json: bundle written by aecfe 1.0.0"):
        load_bundle(bundle_copy)
    assert version_compatible("0.1.3", "0.1.0") and not version_compatible("0.2.0", "0.1.0")
    assert version_compatible("2.5.0", "2.0.1") and not version_compatible("3.0.0", "2.0.1")
    with pytest.raises(InputError, match="bundle folder not found"):
        load_bundle(tmp_path / "nowhere")


def test_predict_cli_refuses_a_bad_bundle_with_one_line(bundle_copy, tmp_path, caplog):
    from aecfe.cli.predict import main as predict

    (bundle_copy / "detector.pt").unlink()
    assert predict([str(bundle_copy), "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "detector.pt: part of the bundle is missing" in caplog.text
    assert not (tmp_path / "o").exists()


def test_train_classifier_refuses_another_detector_or_autoencoder(workflow, tmp_path):
    from aecfe.classifier_training import train_classifier

    from extractors.autoencoder import AECFEAutoencoder
    from extractors.trainer import AutoencoderTrainer, TrainerConfig

    other = tmp_path / "other.pt"  # another autoencoder (seed 1), and not a detector at all
    torch.manual_seed(1)
    AutoencoderTrainer(AECFEAutoencoder(), TrainerConfig(epochs=0, progress=False), n_domains=2).save_checkpoint(other)
    with pytest.raises(InputError, match="not the checkpoint that wrote embedding 'ae'"):
        train_classifier(workflow["store"], "ae", tmp_path / "b",
                         detector_checkpoint=workflow["root"] / "det" / "last.pt",
                         autoencoder_checkpoint=other, head="xgboost")
    with pytest.raises(InputError, match="not the detector that made"):
        train_classifier(workflow["store"], "ae", tmp_path / "b", detector_checkpoint=other,
                         autoencoder_checkpoint=workflow["root"] / "ae.pt", head="xgboost")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("kind", ["cnn", "rcnn_roi"])
def test_bundle_with_a_cnn_or_baseline_embedder_reproduces_the_store(workflow, tmp_path, kind):
    import torchvision

    from aecfe.bundle import load_bundle
    from aecfe.classifier_training import check_reproduces, train_classifier
    from aecfe.store.embeddings import baseline_stage, write_embedding_stage
    from aecfe.store import CellStore

    store = tmp_path / "cells.h5"
    shutil.copy(workflow["store"], store)
    if kind == "cnn":
        from aecfe.store.embeddings import cnn_stage

        torch.manual_seed(0)
        torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "mnv2.pth")
        stage = cnn_stage("mobilenet_v2", str(tmp_path / "mnv2.pth"), image_size=64, name="cnn")
    else:
        stage = baseline_stage("rcnn_roi")
    with CellStore.open(store, "a") as opened:
        write_embedding_stage(opened, stage, progress=False)
    train_classifier(store, stage.name, tmp_path / "b", detector_checkpoint=workflow["root"] / "det" / "last.pt",
                     head="xgboost", head_params={"n_estimators": 5}, cnn_image_size=64)
    bundle = load_bundle(tmp_path / "b")
    assert bundle.description["embedder"]["kind"] == ("cnn" if kind == "cnn" else "baseline")
    expected = ["bundle.json", "detector.pt", "head.json", "head.xgb.json"] + (["cnn.pt"] if kind == "cnn" else [])
    assert sorted(json.loads((tmp_path / "b" / "manifest.json").read_text())["files"]) == sorted(expected)
    assert check_reproduces(tmp_path / "b", store, stage.name) <= 1e-3
    if kind == "cnn":  # the crop size matters: a bundle told another one is refused
        with pytest.raises(InputError, match="does not reproduce embedding 'cnn'"):
            train_classifier(store, "cnn", tmp_path / "c", detector_checkpoint=workflow["root"] / "det" / "last.pt",
                             head="xgboost", head_params={"n_estimators": 5}, cnn_image_size=96)
        assert not (tmp_path / "c").exists()


def test_images_without_a_cell_are_counted_and_reported(workflow, tmp_path):
    from PIL import Image

    from aecfe.bundle import load_bundle
    from aecfe.prediction import collect_inputs, predict_images
    from fake_detector import fake_detector

    (tmp_path / "dark").mkdir()
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(tmp_path / "dark" / "field.png")
    bundle = load_bundle(workflow["bundle"])
    bundle.detector = lambda device="cpu": fake_detector()  # deterministic: a dark image has no detection
    result = predict_images(bundle, collect_inputs(folders=[(None, tmp_path / "dark")], fields=True), tmp_path / "p",
                            progress=False)
    assert result.report["cells"] == 0 and len(result.cells) == 0
    assert result.report["images"]["without_cells"] == 1
    assert result.report["images"]["without_cells_by_reason"] == {"undetected: no detection above score 0.5": 1}
    row = next(csv.DictReader(open(tmp_path / "p" / "counts_per_image.csv")))
    assert row["status"] == "undetected" and row["cells"] == "0"
    assert (tmp_path / "p" / "cells.csv").read_text().startswith("image,domain,cell_index")


def test_a_loaded_bundle_gives_what_a_refit_needs(workflow, tmp_path):
    """aecfe-adapt's path: the bundle's weights-only files rebuild the embedding and make a new bundle."""
    from aecfe.bundle import embedder_from_store, load_bundle, save_bundle
    from aecfe.store.embeddings import autoencoder_stage, write_embedding_stage
    from aecfe.store import CellStore

    bundle = load_bundle(workflow["bundle"])
    store = tmp_path / "cells.h5"
    shutil.copy(workflow["store"], store)
    with CellStore.open(store, "a") as opened:
        write_embedding_stage(opened, autoencoder_stage(bundle.autoencoder_checkpoint, "ae_again"), progress=False)
        np.testing.assert_allclose(opened.embedding("ae_again"), opened.embedding("ae"), atol=1e-4)
        embedder = embedder_from_store(opened, "ae_again", autoencoder_checkpoint=bundle.autoencoder_checkpoint)
    again = save_bundle(tmp_path / "again", bundle.head, detector_checkpoint=bundle.detector_checkpoint,
                        embedder=embedder, scheme=bundle.scheme, detector_options=bundle.preprocessing)
    assert load_bundle(again).preprocessing == bundle.preprocessing and load_bundle(again).classes == bundle.classes
    with pytest.raises(InputError, match="exists already"):
        save_bundle(again, bundle.head, detector_checkpoint=bundle.detector_checkpoint, embedder=embedder)
