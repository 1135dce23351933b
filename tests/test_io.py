"""Readers: image modes and formats, bad files, folder-per-class scans, COCO files; real data."""
import hashlib
import json
import logging
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageFile
from pycocotools import mask as mask_utils

import aecfe.io as aecfe_io
from aecfe.errors import AecfeError, InputError
from aecfe.io import (ImageReadError, SkipCounter, image_size, load_coco, read_image,
                      scan_class_folders, scan_domains)
from aecfe.taxonomy import CANONICAL_CLASSES, Taxonomy, load_taxonomy

H, W = 24, 32


def _rgb(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _ramp(low, high, dtype):
    """(H, W) values rising along rows from low to high."""
    return np.linspace(low, high, H * W).reshape(H, W).astype(dtype)


def _image(mode, fmt):
    """A test image in ``mode`` and a function checking what read_image returns for it."""
    rgb = _rgb()
    gray = _ramp(0, 255, np.uint8)
    alpha = np.zeros((H, W), np.uint8)
    alpha[:, W // 2:] = 255  # left half transparent: must become white

    def same_gray(out):
        assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 0], out[..., 2])

    def white_left(expected_right):
        def check(out):
            assert np.all(out[:, : W // 2] == 255)
            assert np.array_equal(out[:, W // 2:], expected_right[:, W // 2:])
        return check

    def full_range(out):
        assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255  # rescaled by the image's own range
        assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)

    if mode == "RGB":
        return Image.fromarray(rgb), lambda out: np.testing.assert_array_equal(out, rgb)
    if mode == "L":
        return Image.fromarray(gray), same_gray
    if mode == "1":
        bits = gray > 127
        return Image.fromarray(bits), lambda out: np.testing.assert_array_equal(out[..., 1], bits * 255)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha])), white_left(rgb)
    if mode == "LA":
        return Image.fromarray(np.dstack([gray, alpha]), "LA"), white_left(np.dstack([gray] * 3))
    if mode in ("P", "PA"):
        palette_rgb = Image.fromarray(rgb).quantize(8)
        expected = np.asarray(palette_rgb.convert("RGB"))
        if mode == "P" and fmt == "PNG":  # PNG keeps a transparent palette index (tRNS)
            palette_rgb.info["transparency"] = 0
            index0 = np.asarray(palette_rgb) == 0
            expected = expected.copy()
            expected[index0] = 255
            return palette_rgb, lambda out: np.testing.assert_array_equal(out, expected)
        if mode == "P":
            return palette_rgb, lambda out: np.testing.assert_array_equal(out, expected)
        image = palette_rgb.convert("PA")
        image.putalpha(Image.fromarray(alpha))
        return image, white_left(expected)
    if mode == "CMYK":
        return Image.fromarray(rgb).convert("CMYK"), lambda out: None
    if mode == "YCbCr":
        return Image.fromarray(rgb).convert("YCbCr"), lambda out: None
    if mode == "I;16":
        return Image.fromarray(_ramp(1000, 40000, np.uint16)), full_range
    if mode == "I":
        return Image.fromarray(_ramp(-70000, 90000, np.int32)), full_range
    if mode == "F":
        return Image.fromarray(_ramp(-1.5, 3.0, np.float32)), full_range
    raise AssertionError(mode)


LOSSLESS = [("PNG", m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")] + \
           [("BMP", m) for m in ("1", "L", "RGB")] + \
           [("TIFF", m) for m in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr")]
LOSSY = [("JPEG", m) for m in ("L", "RGB", "CMYK")]


@pytest.mark.parametrize("fmt, mode", LOSSLESS + LOSSY)
def test_read_image_every_mode(tmp_path, fmt, mode):
    image, check = _image(mode, fmt)
    path = tmp_path / f"cell.{fmt.lower()}"
    image.save(path, format=fmt)
    out = read_image(path)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    if fmt != "JPEG":
        check(out)
    elif mode == "L":
        assert np.abs(out[..., 0].astype(int) - _ramp(0, 255, np.uint8)).mean() < 3


def test_constant_16_bit_image_becomes_black(tmp_path):
    Image.fromarray(np.full((H, W), 777, np.uint16)).save(tmp_path / "flat.png")
    assert np.all(read_image(tmp_path / "flat.png") == 0)


def test_float_image_with_nan_is_rejected(tmp_path):
    values = _ramp(0, 1, np.float32)
    values[3, 3] = np.nan
    Image.fromarray(values).save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match="non-finite"):
        read_image(tmp_path / "nan.tif")


def test_exif_orientation_is_applied(tmp_path):
    rgb = _rgb()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif)
    out = read_image(tmp_path / "rotated.png")
    np.testing.assert_array_equal(out, np.rot90(rgb, k=-1))
    assert image_size(tmp_path / "rotated.png") == (H, W)  # (width, height) as read


def _jpeg_bytes():
    buffer = __import__("io").BytesIO()
    Image.fromarray(_rgb()).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("name, content, reason", [
    ("empty.png", b"", "empty"),
    ("notes.png", b"this is a text file, not a picture\n" * 4, "not an image"),
    ("cut.jpg", _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated"),
    ("cut_late.jpg", _jpeg_bytes()[:-40], "truncated"),
])
def test_bad_files_raise_with_name_and_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.reason == reason and name in str(info.value)
    assert isinstance(info.value, InputError)


def test_truncated_png_and_missing_file(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageReadError, match="cut.png: truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ImageReadError, match="absent.png: missing"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(ImageReadError, match="missing"):
        read_image(tmp_path)


def test_min_side_is_configurable(tmp_path):
    Image.fromarray(np.zeros((10, 40, 3), np.uint8)).save(tmp_path / "thin.png")
    with pytest.raises(ImageReadError, match="thin.png: too small .*40x10"):
        read_image(tmp_path / "thin.png")
    assert read_image(tmp_path / "thin.png", min_side=10).shape == (10, 40, 3)


def test_truncated_loading_must_stay_off(tmp_path, monkeypatch):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    Image.fromarray(_rgb()).save(tmp_path / "ok.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(AecfeError, match="LOAD_TRUNCATED_IMAGES"):
        read_image(tmp_path / "ok.png")


def test_skip_counter_summary_and_log(caplog):
    skips = SkipCounter("images")
    assert not skips and skips.summary() == "skipped 0 images"
    skips.skip_error(ImageReadError("a.png", "corrupt"))
    skips.skip("corrupt", "b.png")
    skips.skip("too small", "c.png")
    assert skips.total == 3 and skips.summary() == "skipped 3 images: 2 corrupt, 1 too small"
    skips.note("boxes clipped to the image", "d.png", n=2)
    assert skips.total == 3 and skips.summary().endswith("; also noted: 2 boxes clipped to the image")
    with caplog.at_level(logging.WARNING):
        skips.log()
    assert "a.png, b.png" in caplog.text


# ----------------------------------------------------------------------------------------------
# Folder-per-class scans
# ----------------------------------------------------------------------------------------------

def _write_png(path, side=H):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), 200, np.uint8)).save(path)


@pytest.fixture
def domain(tmp_path):
    """tmp/lab_a/{neutrophil: 2 images, lymphocyte: 1, basophil: none} plus files to ignore."""
    root = tmp_path / "lab_a"
    _write_png(root / "neutrophil" / "n2.png")
    _write_png(root / "neutrophil" / "n1.png")
    _write_png(root / "lymphocyte" / "l1.PNG")
    (root / "basophil").mkdir()
    (root / "basophil" / "readme.txt").write_text("no images here")
    (root / "manifest.csv").write_text("file,label\n")
    (root / "source.json").write_text("{}")
    (root / "neutrophil" / ".DS_Store").write_bytes(b"\0\1")
    _write_png(root / ".hidden_class" / "x.png")
    return root


def test_scan_class_folders_layout_and_order(domain, caplog):
    with caplog.at_level(logging.WARNING):
        records = scan_class_folders(domain)
    assert [(r.path.name, r.label, r.canonical) for r in records] == [
        ("l1.PNG", "lymphocyte", "lymphocyte"), ("n1.png", "neutrophil", "neutrophil"),
        ("n2.png", "neutrophil", "neutrophil")]
    assert {r.domain for r in records} == {"lab_a"} and {r.dataset for r in records} == {"canonical"}
    assert "'basophil' holds no images" in caplog.text


def test_scan_counts_empty_class_folder_and_single_class_warning(domain, caplog):
    (domain / "lymphocyte" / "l1.PNG").unlink()
    skips = SkipCounter("images")
    with caplog.at_level(logging.WARNING):
        records = scan_class_folders(domain, domain="site_b", skips=skips)
    assert len(records) == 2 and {r.domain for r in records} == {"site_b"}
    assert skips.noted["class folders without images"] == 2
    assert "single class (neutrophil)" in caplog.text and "cannot train a classifier" in caplog.text


def test_scan_lists_all_unknown_labels(domain):
    _write_png(domain / "Lympho" / "a.png")
    _write_png(domain / "smudge" / "b.png")
    with pytest.raises(InputError, match="(?s)2 unknown.*'Lympho'.*'smudge'"):
        scan_class_folders(domain)


def test_scan_uses_the_domain_class_map_and_drops(tmp_path):
    lisc = tmp_path / "LISC"
    for folder in ("Baso", "neut", "mixt"):
        _write_png(lisc / folder / "1.bmp")
    skips = SkipCounter("images")
    records = scan_class_folders(lisc, skips=skips)
    assert [(r.label, r.canonical, r.dataset) for r in records] == [
        ("Baso", "basophil", "lisc"), ("neut", "neutrophil", "lisc")]
    assert skips.skipped["label dropped by class map"] == 1


def test_scan_label_from_folder_and_prefix(tmp_path):
    root = tmp_path / "pbc"
    for name in ("neutrophil/BNE_1.jpg", "neutrophil/SNE_2.jpg", "ig/PMY_3.jpg", "ig/IG_4.jpg"):
        _write_png(root / name)
    records = scan_class_folders(root, taxonomy="acevedo20", label_from="folder/prefix")
    assert [r.label for r in records] == ["ig/IG", "ig/PMY", "neutrophil/BNE", "neutrophil/SNE"]
    tax13 = load_taxonomy(records[0].dataset, "aecfe13")
    assert tax13.map([r.label for r in records]).tolist() == [
        None, "promyelocyte", "neutrophil_banded", "neutrophil_segmented"]


def test_scan_bad_images_raise_or_skip(domain):
    (domain / "neutrophil" / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="zero.png: empty"):
        scan_class_folders(domain)
    (domain / "lymphocyte" / "text.png").write_text("not an image")
    _write_png(domain / "lymphocyte" / "tiny.png", side=4)
    skips = SkipCounter("images")
    records = scan_class_folders(domain, verify=True, on_error="skip", skips=skips)
    assert len(records) == 3
    assert skips.summary() == ("skipped 3 images: 1 empty, 1 not an image, 1 too small; "
                               "also noted: 1 class folders without images")
    with pytest.raises(ImageReadError, match="text.png: not an image"):
        scan_class_folders(domain, verify=True, on_error="raise")
    assert len(scan_class_folders(domain, on_error="skip")) == 5  # without verify only 0 bytes are caught


def test_scan_rejects_missing_or_empty_root(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        scan_class_folders(tmp_path / "absent")
    (tmp_path / "nothing" / "neutrophil").mkdir(parents=True)
    with pytest.raises(InputError, match="no images found"):
        scan_class_folders(tmp_path / "nothing")


def test_scan_domains(tmp_path):
    _write_png(tmp_path / "zheng_jtsc" / "1" / "001.bmp")
    _write_png(tmp_path / "zheng_jtsc" / "2" / "002.bmp")
    _write_png(tmp_path / "bccd_crops" / "Eosinophil" / "a.jpg")
    _write_png(tmp_path / "bccd_crops" / "Neutrophil" / "b.jpg")
    _write_png(tmp_path / "my_lab" / "Neu" / "c.png")
    _write_png(tmp_path / "my_lab" / "Lym" / "d.png")
    with pytest.raises(InputError, match="'Lym'.*'Neu'"):
        scan_domains(tmp_path)
    my_map = Taxonomy("my_lab_map", "canonical", CANONICAL_CLASSES, {"Neu": "neutrophil", "Lym": "lymphocyte"})
    records = scan_domains(tmp_path, taxonomies={"my_lab": my_map})
    assert [(r.domain, r.canonical) for r in records] == [
        ("bccd_crops", "eosinophil"), ("bccd_crops", "neutrophil"), ("my_lab", "lymphocyte"),
        ("my_lab", "neutrophil"), ("zheng_jtsc", "neutrophil"), ("zheng_jtsc", "lymphocyte")]


# ----------------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------------

def _uncompressed_rle(mask):
    """COCO uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], edges])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def _compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.fixture
def coco(tmp_path):
    """A COCO folder (annotations.json + images/) with every kind of segmentation and entry."""
    images = tmp_path / "images"
    _write_png(images / "a.png", side=40)
    _write_png(images / "b.png", side=40)
    disk = np.zeros((40, 40), bool)
    disk[5:15, 8:20] = True
    ring = np.zeros((40, 40), bool)
    ring[20:30, 20:35] = True
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40, "sha1": "x"},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 40}],
        "categories": [{"id": 1, "name": "wbc"}, {"id": 2, "name": "rbc"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [8, 5, 12, 10],
             "segmentation": _uncompressed_rle(disk), "wbc_subtype": "neutrophil"},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [20, 20, 15, 10],
             "segmentation": _compressed_rle(ring)},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [30, 30, 20, 20],  # past the border
             "segmentation": [[31, 31, 39, 31, 39, 39, 31, 39]], "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},  # no mask
        ],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return path, data, disk, ring


def test_load_coco_boxes_masks_attributes(coco):
    path, _, disk, ring = coco
    skips = SkipCounter("COCO entries")
    first, second = load_coco(path, skips=skips)
    assert first.path.name == "a.png" and (first.width, first.height) == (40, 40)
    assert first.boxes.dtype == np.float32 and first.boxes.shape == (4, 4)
    np.testing.assert_array_equal(first.boxes[0], [8, 5, 20, 15])
    np.testing.assert_array_equal(first.boxes[2], [30, 30, 40, 40])  # clipped to the image
    assert first.category_names == ("wbc", "rbc", "wbc", "wbc")
    assert first.category_ids.tolist() == [1, 2, 1, 1] and first.annotation_ids.tolist() == [10, 11, 12, 13]
    assert first.attributes == {"sha1": "x"} and first.annotation_attributes[0] == {"wbc_subtype": "neutrophil"}
    assert first.has_mask.tolist() == [True, True, True, False] and first.mask(3) is None
    with pytest.raises(InputError, match="a.png: annotation 13 has no mask"):
        first.masks()
    masks = first.masks(missing="empty")
    assert masks.shape == (4, 40, 40) and masks.dtype == bool
    np.testing.assert_array_equal(masks[0], disk)
    np.testing.assert_array_equal(masks[1], ring)
    assert masks[2, 35, 35] and not masks[2, 20, 20] and not masks[3].any()
    assert first.masks(missing="box")[3, :5, :5].all()
    assert len(second) == 0 and second.boxes.shape == (0, 4) and second.masks().shape == (0, 40, 40)
    assert skips.total == 0
    assert skips.noted == Counter({"boxes clipped to the image": 1, "annotations without mask (box kept)": 1})
    assert first.read().shape == (40, 40, 3)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"].append({"id": 20, "image_id": 9, "category_id": 1, "bbox": [1, 1, 5, 5]}),
     "annotation 20 .*references a missing image id"),
    (lambda d: d["annotations"].append({"id": 21, "image_id": 2, "category_id": 1, "bbox": [1, 1, 0, 5]}),
     "annotation 21 .*b.png: box has non-positive size"),
    (lambda d: d["annotations"].append({"id": 22, "image_id": 2, "category_id": 1, "bbox": [45, 1, 5, 5]}),
     "annotation 22 .*box lies outside the image"),
    (lambda d: d["annotations"].append({"id": 23, "image_id": 2, "category_id": 7, "bbox": [1, 1, 5, 5]}),
     "annotation 23 .*unknown category id"),
    (lambda d: d["annotations"].append({"id": 24, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5],
                                        "segmentation": {"size": [30, 40], "counts": [1200]}}),
     "annotation 24 .*mask size differs from image"),
    (lambda d: d["images"].append({"id": 3, "file_name": "gone.png", "width": 40, "height": 40}),
     "gone.png: image file missing"),
    (lambda d: d["images"][1].update(width=41), "b.png: image size differs from its entry"),
])
def test_load_coco_bad_entries_raise_or_count(coco, change, message):
    path, data, _, _ = coco
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=message) as info:
        load_coco(path)
    assert "annotations.json" in str(info.value)
    skips = SkipCounter("COCO entries")
    images = load_coco(path, on_error="skip", skips=skips)
    assert skips.total == 1 and sum(len(image) for image in images) == 4


def test_load_coco_file_errors(tmp_path):
    with pytest.raises(InputError, match="absent.json: annotation file not found"):
        load_coco(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(InputError, match="broken.json: invalid JSON at line 1"):
        load_coco(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match="not a COCO file"):
        load_coco(tmp_path / "list.json")
    (tmp_path / "nosize.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}]}))
    with pytest.raises(InputError, match="lacks integer width/height"):
        load_coco(tmp_path / "nosize.json", check_files=False)


def test_load_coco_reads_sizes_from_files(coco):
    path, data, _, _ = coco
    for entry in data["images"]:
        del entry["width"], entry["height"]
    path.write_text(json.dumps(data))
    assert [(im.width, im.height) for im in load_coco(path)] == [(40, 40), (40, 40)]


# ----------------------------------------------------------------------------------------------
# Real data (AECFE_DATA)
# ----------------------------------------------------------------------------------------------

FIVE_DROPS = {"erythroblast", "immature_granulocyte", "platelet"}  # pbc_barcelona classes outside "five"


@pytest.mark.realdata
def test_real_cls_every_file_scans_maps_and_reads(real_data_dir):
    records = scan_domains(real_data_dir / "cls")
    by_domain = Counter(r.domain for r in records)
    for domain, n in by_domain.items():
        source = json.loads((real_data_dir / "cls" / domain / "source.json").read_text())
        assert n == source["n_images"], domain
        assert Counter(r.canonical for r in records if r.domain == domain) == Counter(source["per_class"])
    five = np.concatenate([load_taxonomy(r.dataset, "five").map([r.label]) for r in records])
    dropped = {r.canonical for r, f in zip(records, five) if f is None}
    assert dropped == FIVE_DROPS
    for record in records:  # headers of all, pixels of a sample (all of them take ~4 s)
        image_size(record.path)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(records), size=300, replace=False):
        image = read_image(records[i].path)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


@pytest.mark.realdata
def test_real_cls_manifest_labels_map(real_data_dir):
    import csv
    for folder in sorted((real_data_dir / "cls").iterdir()):
        with (folder / "manifest.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        tax = load_taxonomy(folder.name)
        assert tax.map([row["orig_label"] for row in rows]).tolist() == [row["canonical"] for row in rows]
        assert all((folder / row["file"]).is_file() for row in rows)


@pytest.mark.realdata
def test_real_pbc_maps_to_aecfe13_by_file_code(real_data_dir):
    records = scan_class_folders(real_data_dir / "cls" / "pbc_barcelona", label_from="folder/prefix")
    mapped = load_taxonomy("pbc_barcelona", "aecfe13").map([r.label for r in records])
    dropped = Counter(r.label.split("/")[1] for r, m in zip(records, mapped) if m is None)
    assert set(dropped) == {"IG", "NEUTROPHIL", "PLATELET"}
    assert Counter(mapped)["neutrophil_banded"] > 0 and Counter(mapped)["metamyelocyte"] > 0


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["bccd", "zheng_jtsc"])
def test_real_coco_sets_load_with_masks(real_data_dir, name):
    folder = real_data_dir / "det" / name
    source = json.loads((folder / "source.json").read_text())
    skips = SkipCounter("COCO entries")
    images = load_coco(folder / "annotations.json", skips=skips)
    assert skips.total == 0
    assert len(images) == source["n_images"]
    assert sum(len(im) for im in images) == source["n_wbc_annotations"]
    assert sum(int(im.has_mask.sum()) for im in images) == source["n_with_mask"]
    areas = {}
    for image in images:
        masks = image.masks(missing="empty")
        assert masks.shape == (len(image), image.height, image.width)
        for ann_id, mask, has in zip(image.annotation_ids, masks, image.has_mask):
            if has:
                areas[int(ann_id)] = int(mask.sum())
    expected = {a["id"]: a["area"] for a in json.loads((folder / "annotations.json").read_text())["annotations"]
                if a.get("segmentation")}
    assert areas == expected
    assert images[0].read().shape == (images[0].height, images[0].width, 3)


# ------------------------------------------------------------------------------------------ issue 11: hardening
def _tiny_coco(folder, file_name, image_folder=None):
    """annotations.json in ``folder`` with one image entry ``file_name`` and one box."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"images": [{"id": 1, "file_name": file_name}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}],
            "categories": [{"id": 1, "name": "wbc"}]}
    (folder / "annotations.json").write_text(json.dumps(data))
    return folder / "annotations.json"


def test_decompression_bomb_is_a_counted_skip_not_a_crash(tmp_path, monkeypatch):
    """image_size used to let PIL's DecompressionBombError through, aborting a COCO scan even with skip."""
    _write_png(tmp_path / "images" / "bomb.png", side=64)
    json_path = _tiny_coco(tmp_path, "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x 1000: PIL raises its bomb error
    with pytest.raises(ImageReadError, match="bomb.png: too large"):
        image_size(tmp_path / "images" / "bomb.png")
    with pytest.raises(ImageReadError, match="too large"):
        read_image(tmp_path / "images" / "bomb.png")
    skips = SkipCounter()
    assert load_coco(json_path, on_error="skip", skips=skips) == []
    assert skips.skipped == {"image file too large": 1}


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch, recwarn):
    _write_png(tmp_path / "big.png", side=64)
    monkeypatch.setattr(aecfe_io, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    with pytest.raises(ImageReadError, match=r"big.png: too large \(64x64 = 4,096 pixels"):
        read_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # PIL would only warn: we stay silent
    monkeypatch.setattr(aecfe_io, "MAX_IMAGE_PIXELS", 10 ** 6)
    assert read_image(tmp_path / "big.png").shape == (64, 64, 3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_permission_error_is_unreadable_not_corrupt(tmp_path, monkeypatch):
    _write_png(tmp_path / "locked.png")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageReadError, match="locked.png: unreadable") as caught:
        read_image(tmp_path / "locked.png")
    assert caught.value.reason == "unreadable"
    with pytest.raises(ImageReadError, match="unreadable"):
        image_size(tmp_path / "locked.png")


def test_gif_files_and_symlink_loops_are_counted_skips(tmp_path):
    root = tmp_path / "lab"
    _write_png(root / "neutrophil" / "n1.png")
    Image.new("P", (24, 24)).save(root / "neutrophil" / "anim.gif")
    os.symlink("loop.png", root / "neutrophil" / "loop.png")  # points at itself
    (root / "neutrophil" / "notes.txt").write_text("not an image format: ignored as before")
    skips = SkipCounter("images")
    records = scan_class_folders(root, taxonomy="canonical", on_error="skip", skips=skips)
    assert [r.path.name for r in records] == ["n1.png"]
    assert skips.skipped == {"unsupported file type (.gif)": 1, "symlink loop": 1}
    with pytest.raises(ImageReadError, match="loop.png: symlink loop"):
        scan_class_folders(root, taxonomy="canonical")


def test_coco_file_name_must_stay_inside_the_annotation_folder(tmp_path):
    _write_png(tmp_path / "secret.png", side=40)
    for file_name in ("../secret.png", str(tmp_path / "secret.png"), "./../set/../secret.png"):
        json_path = _tiny_coco(tmp_path / "set", file_name)
        with pytest.raises(InputError, match="outside the annotation folder"):
            load_coco(json_path)
        skips = SkipCounter()
        assert load_coco(json_path, on_error="skip", skips=skips) == []
        assert skips.skipped == {"image path outside the annotation folder": 1}
        assert len(load_coco(json_path, allow_outside_paths=True)) == 1
    _write_png(tmp_path / "set" / "sub" / "inside.png", side=40)
    assert len(load_coco(_tiny_coco(tmp_path / "set", "sub/../sub/inside.png"))) == 1


def test_identity_hash_and_duplicate_groups(tmp_path, monkeypatch):
    _write_png(tmp_path / "a" / "x.png")
    _write_png(tmp_path / "b" / "y.png")  # same bytes, another name and domain
    _write_png(tmp_path / "a" / "z.png", side=30)
    monkeypatch.chdir(tmp_path / "a")
    assert aecfe_io.identity_path("../a/./x.png") == aecfe_io.identity_path(tmp_path / "a" / "x.png")
    digest = aecfe_io.sha1_file(tmp_path / "a" / "x.png")
    assert digest == hashlib.sha1((tmp_path / "a" / "x.png").read_bytes()).hexdigest()
    skips = SkipCounter()
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "y.png", tmp_path / "a" / "z.png", tmp_path / "gone.png"]
    hashes = aecfe_io.hash_images(paths, skips)
    assert len(hashes) == 3 and skips.skipped == {"missing": 1}
    groups = aecfe_io.find_duplicates([(p, p.parent.name, hashes.get(str(p), "")) for p in paths])
    assert len(groups) == 1 and groups[0].cross_domain and groups[0].domains == ("a", "b")
    summary = aecfe_io.duplicate_summary(groups)
    assert {k: summary[k] for k in ("groups", "images", "extra_copies", "cross_domain_groups")} == {
        "groups": 1, "images": 2, "extra_copies": 1, "cross_domain_groups": 1}
