"""Feature extraction pipeline: inputs, sharding, resumable stages, SIGKILL resume, merge, report, CLI.

The detector is :mod:`fake_detector` (deterministic, instant) behind the real :class:`detectors.base.Detector`
and the real roi stage; the autoencoder is an untrained, seeded one saved as a trainer checkpoint.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from aecfe.errors import InputError, StoreError
from aecfe.pipeline import (ExtractionImage, gather_images, parse_shard, read_file_list, report_path, run_extraction,
                            shard_images)
from aecfe.store import CellStore, autoencoder_stage, baseline_stage, block_average, roi_mean_features
from aecfe.synthetic import default_domains, write_class_folders
from fake_detector import fake_detector

TESTS = Path(__file__).parent
IDENTITY = {"config": {"backend": "fake"}, "weights_sha256": None}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """3 synthetic labs x 6 single-cell images (128 px) in class folders, plus one corrupt and one black image."""
    root = tmp_path_factory.mktemp("cls")
    write_class_folders(root, default_domains(), 6, seed=0, size=96)
    neutrophils = root / "lab_a" / "neutrophil"
    neutrophils.mkdir(exist_ok=True)
    (neutrophils / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(neutrophils / "zz_black.png")
    return root


@pytest.fixture(scope="module")
def autoencoder_checkpoint(tmp_path_factory) -> Path:
    from extractors.autoencoder import AECFEAutoencoder
    from extractors.trainer import AutoencoderTrainer, TrainerConfig

    torch.manual_seed(0)
    trainer = AutoencoderTrainer(AECFEAutoencoder(), TrainerConfig(epochs=0, progress=False), n_domains=3)
    path = tmp_path_factory.mktemp("ae") / "checkpoint.pt"
    trainer.save_checkpoint(path)
    return path


def extract(image_root, store_path, *, shard=None, embeddings=(), **options):
    listing = gather_images(class_folders=[image_root])
    return run_extraction(listing, store_path, detector_factory=fake_detector, detector_identity=IDENTITY,
                          embeddings=embeddings, shard=shard, progress=False, **options)


def store_content(path: Path) -> dict:
    """Everything a reader sees, in comparable form."""
    with CellStore.open(path) as store:
        content = {"images": store.images(), "cells": store.cells(), "roi": store.roi(), "crops": store.crops(),
                   "embeddings": {name: store.embedding(name) for name in store.embedding_names()}}
    content["images"] = content["images"].sort_values("image_path").reset_index(drop=True)
    return content


def assert_same_content(a: dict, b: dict, *, cell_order_may_differ: bool = False, code_tolerance: float = 0.0):
    """Equal images, cells, RoI features, crops and embeddings; autoencoder codes (``ae_*``) up to
    ``code_tolerance`` (encoding other batch compositions changes float rounding in the convolutions)."""
    assert a["images"].equals(b["images"])
    cells_a, cells_b = a["cells"], b["cells"]
    order_a, order_b = np.arange(len(cells_a)), np.arange(len(cells_b))
    if cell_order_may_differ:
        order_a = np.lexsort((cells_a.cell_index, cells_a.image_path))
        order_b = np.lexsort((cells_b.cell_index, cells_b.image_path))
    columns = [c for c in cells_a.columns if c != "cell_id"]
    assert cells_a[columns].iloc[order_a].reset_index(drop=True).equals(
        cells_b[columns].iloc[order_b].reset_index(drop=True))
    np.testing.assert_array_equal(a["roi"][order_a], b["roi"][order_b])
    np.testing.assert_array_equal(a["crops"][order_a], b["crops"][order_b])
    assert sorted(a["embeddings"]) == sorted(b["embeddings"])
    for name in a["embeddings"]:
        tolerance = code_tolerance if name.startswith("ae_") else 0.0
        np.testing.assert_allclose(a["embeddings"][name][order_a], b["embeddings"][name][order_b], rtol=0,
                                   atol=tolerance)


# ------------------------------------------------------------------------------------------ inputs and shards
def test_gather_images_counts_scan_skips_and_duplicates(image_root, tmp_path):
    (image_root / "lab_b" / "monocyte").mkdir(exist_ok=True)
    empty = image_root / "lab_b" / "monocyte" / "zz_empty.png"
    empty.write_bytes(b"")
    try:
        listing = gather_images(class_folders=[image_root], domains=[("lab_c", image_root / "lab_c")])
    finally:
        empty.unlink()
    assert listing.skips.skipped == {"empty": 1, "duplicate path": 6}
    assert {image.domain for image in listing.images} == {"lab_a", "lab_b", "lab_c"}
    assert len(listing.images) == 3 * 6 + 2 and all(image.single_cell for image in listing.images)
    assert all(image.label in {"neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"}
               for image in listing.images)


def test_read_file_list_parses_domains_labels_and_relative_paths(tmp_path):
    (tmp_path / "list.txt").write_text("# comment\na.png\nsub/b.png\tlab_x\n\n/abs/c.png\tlab_y\tmonocyte\n")
    images = read_file_list(tmp_path / "list.txt")
    assert images == [ExtractionImage(tmp_path / "a.png", "list", None),
                      ExtractionImage(tmp_path / "sub/b.png", "lab_x", None),
                      ExtractionImage(Path("/abs/c.png"), "lab_y", "monocyte")]
    (tmp_path / "bad.txt").write_text("a\tb\tc\td\n")
    with pytest.raises(InputError, match="bad.txt:1"):
        read_file_list(tmp_path / "bad.txt")


def test_shards_partition_the_list_independently_of_input_order():
    images = [ExtractionImage(Path(f"{d}/{i}.png"), d) for d in ("b", "a") for i in range(7)]
    shards = [shard_images(images, (i, 3)) for i in range(3)]
    assert sorted(str(x.path) for s in shards for x in s) == sorted(str(x.path) for x in images)
    assert [len(s) for s in shards] == [5, 5, 4]
    assert shard_images(images[::-1], (1, 3)) == shards[1]
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)


def test_baseline_features():
    roi = np.arange(2 * 256 * 14 * 14, dtype=np.float32).reshape(2, 256, 14, 14)
    np.testing.assert_allclose(roi_mean_features(roi), roi.mean(axis=(2, 3)))
    crops = np.zeros((1, 3, 4, 4), np.uint8)
    crops[0, 0, :2, :2] = 255
    features = block_average(crops, 2)
    assert features.shape == (1, 12) and features[0, 0] == pytest.approx(1.0) and features[0, 1:].max() == 0
    with pytest.raises(InputError, match="unknown baseline"):
        baseline_stage("pixels")


# ------------------------------------------------------------------------------------------ stages and report
def test_extraction_writes_every_stage_and_reports_skips(image_root, tmp_path, autoencoder_checkpoint):
    store_path = tmp_path / "cells.h5"
    stages = [baseline_stage("rcnn_roi"), baseline_stage("raw_pixels"), autoencoder_stage(autoencoder_checkpoint)]
    report = extract(image_root, store_path, embeddings=stages)
    totals = report["totals"]
    assert (totals["images"], totals["ok"], totals["undetected"], totals["error"], totals["cells"]) == (20, 18, 1, 1, 18)
    assert report["domains"]["lab_a"]["error"] == 1 and report["domains"]["lab_a"]["undetected"] == 1
    assert report["domains"]["lab_b"] == {"images": 6, "ok": 6, "undetected": 0, "error": 0, "cells": 6,
                                          "skipped_reasons": {}, "kept_with_note": {}}
    reasons = report["domains"]["lab_a"]["skipped_reasons"]
    assert sum(reasons.values()) == 2 and any(r.startswith("undetected: ") for r in reasons)
    assert report["embeddings"] == {"ae_mmd": 18, "raw_pixels": 18, "rcnn_roi": 18}
    assert json.loads(report_path(store_path).read_text()) == json.loads(json.dumps(report))
    with CellStore.open(store_path) as store:
        assert store.provenance["detector"] == IDENTITY
        X, y, domains = store.arrays("ae_mmd", labelled_only=True)
        assert X.shape == (18, 50) and np.isfinite(X).all() and set(domains) == {"lab_a", "lab_b", "lab_c"}
        assert store.embedding("rcnn_roi").shape == (18, 256) and store.embedding("raw_pixels").shape == (18, 192)
        assert store.embedding_attrs("ae_mmd")["model"]["weights_sha256"]


def test_rerun_skips_done_work(image_root, tmp_path, autoencoder_checkpoint):
    store_path = tmp_path / "cells.h5"
    extract(image_root, store_path, embeddings=[baseline_stage("rcnn_roi")])
    before = store_content(store_path)

    def no_detector():
        raise AssertionError("the detector must not be built when every image is in the store")

    calls = []
    stage = baseline_stage("rcnn_roi")
    counting = type(stage)(stage.name, lambda store, rows: calls.append(rows) or stage.compute(store, rows), stage.attrs)
    report = run_extraction(gather_images(class_folders=[image_root]), store_path, detector_factory=no_detector,
                            detector_identity=IDENTITY, embeddings=[counting], progress=False)
    assert calls == [] and report["images_detected_now"] == 0
    assert_same_content(before, store_content(store_path))
    with pytest.raises(StoreError, match="another run"):
        run_extraction(gather_images(class_folders=[image_root]), store_path, detector_factory=fake_detector,
                       detector_identity={"config": {"backend": "other"}, "weights_sha256": None}, progress=False)


def test_shards_merged_equal_one_run(image_root, tmp_path, autoencoder_checkpoint):
    from aecfe.pipeline import merge_shards as merge

    stages = [baseline_stage("rcnn_roi"), autoencoder_stage(autoencoder_checkpoint)]
    extract(image_root, tmp_path / "all.h5", embeddings=stages)
    shards = [tmp_path / f"shard{i}.h5" for i in range(3)]
    for i, path in enumerate(shards):
        extract(image_root, path, shard=(i, 3), embeddings=stages)
    report = merge(shards, tmp_path / "merged.h5")
    assert report["totals"] == json.loads(report_path(tmp_path / "all.h5").read_text())["totals"]
    assert_same_content(store_content(tmp_path / "all.h5"), store_content(tmp_path / "merged.h5"),
                        cell_order_may_differ=True, code_tolerance=1e-5)


def test_torchrun_rank_takes_its_shard_store():
    from aecfe.pipeline import rank_shard

    assert rank_shard("runs/cells.h5", 1, 4) == ((1, 4), Path("runs/cells.rank1of4.h5"))
    assert rank_shard(Path("/x/s.h5"), 0, 2)[1] == Path("/x/s.rank0of2.h5")
    with pytest.raises(InputError, match="rank 2"):
        rank_shard("cells.h5", 2, 2)


def _extraction_rank(rank, world_size, image_root, out, port):
    """One process of a two-process run (what torchrun starts): joins the gloo group from the environment."""
    import os

    from aecfe.pipeline import run_extraction_ranks

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    run_extraction_ranks(gather_images(class_folders=[image_root]), out, detector_factory=fake_detector,
                         detector_identity=IDENTITY, embeddings=[baseline_stage("rcnn_roi")], progress=False)


def test_two_processes_under_a_process_group_extract_their_shards_and_merge(image_root, tmp_path):
    """What ``torchrun --nproc-per-node 2 -m aecfe.cli extract_features ...`` does, on CPU (gloo)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "cells.h5"
    mp.spawn(_extraction_rank, args=(2, image_root, out, port), nprocs=2, join=True)
    extract(image_root, tmp_path / "one.h5", embeddings=[baseline_stage("rcnn_roi")])
    assert (tmp_path / "cells.rank0of2.h5").exists() and (tmp_path / "cells.rank1of2.h5").exists()
    assert json.loads(report_path(out).read_text())["totals"] == \
        json.loads(report_path(tmp_path / "one.h5").read_text())["totals"]
    assert_same_content(store_content(tmp_path / "one.h5"), store_content(out), cell_order_may_differ=True,
                        code_tolerance=1e-5)


def test_ranks_without_a_process_group_refuse_an_explicit_shard(image_root, tmp_path):
    from aecfe.pipeline import run_extraction_ranks

    with pytest.raises(InputError, match="--shard and torchrun"):
        run_extraction_ranks(gather_images(class_folders=[image_root]), tmp_path / "c.h5", shard=(0, 2), rank=0,
                             world_size=2, barrier=lambda: None, detector_factory=fake_detector,
                             detector_identity=IDENTITY, progress=False)


# ------------------------------------------------------------------------------------------ crash and resume
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from aecfe.pipeline import gather_images, run_extraction
    from aecfe.store import autoencoder_stage, baseline_stage
    from fake_detector import fake_detector

    image_root, store_path, checkpoint, kill_stage, kill_after = sys.argv[1:6]
    kill_after = int(kill_after)
    counter = {"n": 0}

    def tick(stage):
        if stage == kill_stage:
            counter["n"] += 1
            if counter["n"] > kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def detector():
        det = fake_detector()
        run = det.backend.run
        det.backend.run = lambda images: (tick("detect"), run(images))[1]
        return det

    ae = autoencoder_stage(checkpoint)
    stage = type(ae)(ae.name, lambda store, rows: (tick("embed"), ae.compute(store, rows))[1], ae.attrs)
    run_extraction(gather_images(class_folders=[Path(image_root)]), store_path, detector_factory=detector,
                   detector_identity={"config": {"backend": "fake"}, "weights_sha256": None},
                   embeddings=[baseline_stage("rcnn_roi"), stage], batch_size=1, chunk_cells=3, embedding_block=4,
                   progress=False)
""")


def run_killer(image_root, store_path, checkpoint, kill_stage, kill_after) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KILLER, str(image_root), str(store_path), str(checkpoint),
                           kill_stage, str(kill_after)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-3000:]
    return done.returncode


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(image_root, tmp_path, autoencoder_checkpoint):
    reference = tmp_path / "reference.h5"
    run_killer(image_root, reference, autoencoder_checkpoint, "none", 0)
    killed = tmp_path / "killed.h5"
    # killed while detecting, after 11 of 20 images (3 commits of 3 cells made, the rest lost) ...
    assert run_killer(image_root, killed, autoencoder_checkpoint, "detect", 11) == -signal.SIGKILL
    with h5py.File(killed, "r") as f:
        assert 0 < int(f.attrs["n_images"]) < 20
    # ... then killed while embedding, after 2 blocks of 4 cells ...
    assert run_killer(image_root, killed, autoencoder_checkpoint, "embed", 2) == -signal.SIGKILL
    with CellStore.open(killed) as store:
        assert len(store) == 18 and store.embedding_progress("rcnn_roi") == 18
        assert store.embedding_progress("ae_mmd") == 8
    # ... then run to the end.
    assert run_killer(image_root, killed, autoencoder_checkpoint, "none", 0) == 0
    assert_same_content(store_content(reference), store_content(killed))
    report = json.loads(report_path(killed).read_text())
    assert report["totals"]["images"] == 20 and report["totals"]["cells"] == 18


# ------------------------------------------------------------------------------------------ command line
def test_cli_merge_and_errors(image_root, tmp_path, caplog):
    from aecfe.cli.extract_features import main

    for i in range(2):
        extract(image_root, tmp_path / f"s{i}.h5", shard=(i, 2))
    assert main(["--merge", str(tmp_path / "s0.h5"), str(tmp_path / "s1.h5"), "--out", str(tmp_path / "m.h5"),
                 "--no-progress"]) == 0
    assert json.loads(report_path(tmp_path / "m.h5").read_text())["totals"]["images"] == 20
    assert main(["--merge", str(tmp_path / "m.h5"), "--keep-domain", "lab_b", "--keep-domain", "lab_c", "--out",
                 str(tmp_path / "bc.h5")]) == 0  # a fold's source labs cut from a store of every lab
    assert set(json.loads(report_path(tmp_path / "bc.h5").read_text())["domains"]) == {"lab_b", "lab_c"}
    # images still to detect but no detector given: a clear error, exit status 2
    assert main(["--class-folders", str(image_root), "--out", str(tmp_path / "new.h5"), "--no-progress"]) == 2
    assert "no detector" in caplog.text
    assert main(["--domain", "lab_a=" + str(tmp_path / "missing"), "--out", str(tmp_path / "x.h5")]) == 2


def test_fallback_boxes_are_counted_as_notes(image_root, tmp_path):
    from detectors.base import Detector
    from fake_detector import FakeBackend

    listing = gather_images(domains=[("lab_a", image_root / "lab_a")])
    report = run_extraction(listing, tmp_path / "cells.h5",
                            detector_factory=lambda: Detector(FakeBackend(), single_cell_fallback="center"),
                            detector_identity=IDENTITY, progress=False)
    assert report["totals"]["undetected"] == 0 and report["totals"]["error"] == 1
    assert report["totals"]["kept_with_note"] == {"centred fallback box (no detection)": 1}
    assert report["totals"]["cells"] == report["totals"]["ok"] == len(listing.images) - 1


def test_cli_with_a_trained_detector_checkpoint(image_root, tmp_path, autoencoder_checkpoint):
    from aecfe.cli.extract_features import main
    from aecfe.synthetic import write_coco
    from detectors.training import train_detector

    coco = write_coco(tmp_path / "coco", default_domains()[0], 2, seed=0, size=(96, 96))
    train_detector([coco], out_dir=tmp_path / "det", max_steps=1, batch_size=2, min_size=96, max_size=96,
                   progress=False)
    store = tmp_path / "cells.h5"
    args = ["--domain", f"lab_b={image_root / 'lab_b'}", "--detector-checkpoint", str(tmp_path / "det" / "last.pt"),
            "--fallback", "center", "--autoencoder-checkpoint", str(autoencoder_checkpoint), "--embedding-name", "ae",
            "--baselines", "rcnn_roi", "raw_pixels", "--out", str(store), "--no-progress"]
    assert main(args) == 0
    report = json.loads(report_path(store).read_text())
    assert report["totals"]["images"] == report["totals"]["cells"] == 6
    assert report["embeddings"] == {"ae": 6, "raw_pixels": 6, "rcnn_roi": 6}
    with CellStore.open(store) as opened:
        detector = opened.provenance["detector"]
        assert detector["config"]["single_cell_fallback"] == "center" and len(detector["weights_sha256"]) == 64
    assert main(args) == 0  # a re-run finds everything done
    assert json.loads(report_path(store).read_text())["images_detected_now"] == 0


def test_coco_fields_and_file_lists_run_through_the_pipeline(tmp_path, image_root):
    from aecfe.synthetic import write_coco

    coco = write_coco(tmp_path / "coco", default_domains()[1], 3, seed=0, size=(96, 96))
    some = sorted((image_root / "lab_c").glob("*/*.png"))[:2]
    (tmp_path / "list.txt").write_text("".join(f"{path}\tlab_z\n" for path in some))
    listing = gather_images(coco=[("smears", coco)], files=[tmp_path / "list.txt"])
    assert [(i.domain, i.single_cell, i.label) for i in listing.images] == [("smears", False, None)] * 3 + [
        ("lab_z", True, None)] * 2
    report = run_extraction(listing, tmp_path / "cells.h5", detector_factory=fake_detector,
                            detector_identity=IDENTITY, progress=False)
    assert {d: c["cells"] for d, c in report["domains"].items()} == {"lab_z": 2, "smears": 3}
    with CellStore.open(tmp_path / "cells.h5") as store:
        assert store.cells()["label"].isna().all()


# ------------------------------------------------------------------------------------------ issue 11: hardening
def _good_image(root: Path) -> Path:
    """A readable image of lab_a (not the corrupt or black one)."""
    return sorted(p for p in (root / "lab_a").glob("*/*.png") if not p.name.startswith("zz_"))[0]


def _copy_tree(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_resume_from_another_directory_or_path_form_does_no_work_twice(image_root, tmp_path, monkeypatch):
    """The same folder as ../cls and as an absolute path used to be detected twice (48 images became 96)."""
    root = _copy_tree(image_root, tmp_path / "data" / "cls")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    store = tmp_path / "run.h5"
    first = extract(Path("../data/cls"), store)
    assert first["images_detected_now"] == 20
    monkeypatch.chdir(tmp_path)
    again = extract(root.resolve(), store)
    linked = tmp_path / "link"
    linked.symlink_to(root)
    via_link = extract(linked, store)
    assert again["images_detected_now"] == 0 and via_link["images_detected_now"] == 0
    with CellStore.open(store) as opened:
        images = opened.images()
        assert len(images) == 20 and images["image_path"].is_unique
        assert all(Path(p).is_absolute() and str(root.resolve()) in p for p in images["image_path"])
        readable = images[images["status"] != "error"]
        assert (readable["content_sha1"].str.len() == 40).all()


def test_extraction_report_counts_identical_images_across_domains(image_root, tmp_path):
    root = _copy_tree(image_root, tmp_path / "cls")
    source = _good_image(root)
    copy = root / "lab_b" / source.parent.name / "copy_of_a.png"
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(source.read_bytes())
    report = extract(root, tmp_path / "run.h5")
    assert report["duplicates"]["groups"] == 1 and report["duplicates"]["cross_domain_groups"] == 1
    assert sorted(report["duplicates"]["examples"][0]["domains"]) == ["lab_a", "lab_b"]


def test_failed_start_leaves_nothing_that_blocks_the_corrected_run(image_root, tmp_path):
    store = tmp_path / "run.h5"
    listing = gather_images(class_folders=[image_root])
    with pytest.raises(InputError, match="no detector was given"):
        run_extraction(listing, store, detector_factory=None, detector_identity=None, progress=False)
    assert not store.exists()

    def broken_checkpoint():
        raise InputError("det.pt: not a detector checkpoint")

    with pytest.raises(InputError, match="det.pt"):
        run_extraction(listing, store, detector_factory=broken_checkpoint, detector_identity={"x": 1}, progress=False)
    assert not store.exists()
    with pytest.raises(InputError, match="batch_size must be an integer >= 1"):
        run_extraction(listing, store, detector_factory=fake_detector, detector_identity=IDENTITY, batch_size=0,
                       progress=False)
    assert not store.exists()
    # an empty store left by an older failed start, with other provenance, is replaced
    CellStore.create(store, provenance={"detector": {"other": True}, "autoencoder": None}).close()
    report = extract(image_root, store)
    assert report["totals"]["images"] == 20


def test_retry_errors_runs_error_rows_again(image_root, tmp_path):
    root = _copy_tree(image_root, tmp_path / "cls")
    store = tmp_path / "run.h5"
    first = extract(root, store)
    assert first["totals"]["error"] == 1
    Image.fromarray(np.full((96, 96, 3), 180, np.uint8)).save(root / "lab_a" / "neutrophil" / "zz_corrupt.png",
                                                              format="PNG")  # the transient failure is gone
    assert extract(root, store)["images_detected_now"] == 0  # errors count as done by default
    retried = extract(root, store, retry_errors=True)
    assert retried["images_detected_now"] == 1 and retried["totals"]["error"] == 0
    assert retried["totals"]["images"] == 20 and retried["totals"]["ok"] == first["totals"]["ok"] + 1
    with CellStore.open(store) as opened:
        assert opened.images(include_retried=True)["status"].tolist().count("retried") == 1


def test_non_utf8_file_list_and_names_are_extracted(image_root, tmp_path):
    source = _good_image(image_root)
    raw_name = os.fsencode(tmp_path) + b"/img_\xe9\xff.png"
    with open(raw_name, "wb") as handle:
        handle.write(source.read_bytes())
    (tmp_path / "list.txt").write_bytes(b"img_\xe9\xff.png\tlab_x\tneutrophil\n")
    listing = gather_images(files=[tmp_path / "list.txt"])
    report = run_extraction(listing, tmp_path / "run.h5", detector_factory=fake_detector, detector_identity=IDENTITY,
                            progress=False)
    assert report["totals"]["ok"] == 1
    with CellStore.open(tmp_path / "run.h5") as opened:
        assert os.fsencode(opened.images()["image_path"][0]) == raw_name


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--score-threshold", "5"), ("--min-size", "-5"),
                                           ("--backbone", "resnet999"), ("--chunk-cells", "0")])
def test_cli_rejects_bad_values_before_creating_anything(image_root, tmp_path, option, value, capsys):
    from aecfe.cli.extract_features import main

    with pytest.raises(SystemExit) as stop:
        main(["--class-folders", str(image_root), "--out", str(tmp_path / "x.h5"), option, value])
    assert stop.value.code == 2 and option in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_cli_exits_non_zero_when_nothing_could_be_processed(tmp_path, monkeypatch):
    import aecfe.cli.extract_features as cli

    for name in ("a.png", "b.png"):
        path = tmp_path / "cls" / "lab" / "neutrophil" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    monkeypatch.setattr(cli, "detector_factory_and_identity", lambda args: (fake_detector, IDENTITY))
    assert cli.main(["--class-folders", str(tmp_path / "cls"), "--out", str(tmp_path / "x.h5"), "--no-progress"]) == 1


def test_cli_report_duplicates_needs_no_detector_or_store(image_root, tmp_path, capsys):
    from aecfe.cli.extract_features import main

    root = _copy_tree(image_root, tmp_path / "cls")
    source = _good_image(root)
    (root / "lab_c" / source.parent.name).mkdir(exist_ok=True)
    (root / "lab_c" / source.parent.name / "copy.png").write_bytes(source.read_bytes())
    assert main(["--class-folders", str(root), "--report-duplicates", "--out", str(tmp_path / "dups.json")]) == 0
    report = json.loads((tmp_path / "dups.json").read_text())
    assert report["duplicates"]["groups"] == 1 and report["duplicates"]["cross_domain_images"] == 2
    assert report["unreadable"] == {} and "1 groups of byte-identical images" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.h5"))
