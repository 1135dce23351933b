"""Tests of the HDF5 cell store: round trips, plain-h5py readability, bad input, schema checks,
crash recovery after SIGKILL, resume without duplicates, embeddings and shard merging."""
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest

import aecfe
from aecfe.store import core as store_module
from aecfe.errors import InputError, StoreError
from aecfe.store import (CELL_FRAME_COLUMNS, IMAGE_FRAME_COLUMNS, SCHEMA_VERSION, CellStore, StoreLayout,
                         merge_stores, model_identity)

ROI = (4, 3, 3)
CROP = (3, 8, 8)
PROVENANCE = {"detector": {"config": {"arch": "maskrcnn"}, "weights_sha256": "ab" * 32}, "autoencoder": None}


def make_cells(n, seed, roi=ROI, crop=CROP, **extra):
    """Deterministic cells dict for n cells."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 100, size=(n, 2))
    cells = {"box": np.concatenate([corner, corner + 10], axis=1), "score": rng.uniform(size=n),
             "mask_area": rng.integers(1, 500, size=n)}
    if roi is not None:
        cells["roi"] = rng.normal(size=(n, *roi)).astype(np.float32)
    if crop is not None:
        cells["crop"] = rng.integers(0, 256, size=(n, *crop), dtype=np.uint8)
    cells.update(extra)
    return cells


def fill(store, n_images, first=0, roi=ROI, crop=CROP):
    """Add images first..first+n_images-1; every 4th is 'undetected'; odd ones labelled."""
    for i in range(first, first + n_images):
        if i % 4 == 3:
            store.add_image(f"img/{i:03d}.png", f"lab{i % 2}", status="undetected", reason="no cell found")
        else:
            store.add_image(f"img/{i:03d}.png", f"lab{i % 2}", "neutrophil" if i % 2 else None,
                            cells=make_cells(i % 3 + 1, seed=i, roi=roi, crop=crop))


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "run.h5"
    with CellStore.create(path, roi_shape=ROI, crop_shape=CROP, provenance=PROVENANCE, chunk_cells=5) as store:
        fill(store, 10)
    return path


def test_round_trip_metadata_stages_and_provenance(store_path):
    with CellStore.open(store_path) as store:
        cells, images = store.cells(), store.images()
        assert list(cells.columns) == list(CELL_FRAME_COLUMNS)
        assert list(images.columns) == list(IMAGE_FRAME_COLUMNS)
        assert len(images) == 10 and images["status"].tolist().count("undetected") == 2
        assert images.loc[3, "reason"] == "no cell found" and images.loc[3, "n_cells"] == 0
        assert len(store) == len(cells) == images["n_cells"].sum()
        image0 = make_cells(1, seed=0)
        first = cells.iloc[0]
        np.testing.assert_allclose(first[["x1", "y1", "x2", "y2"]].to_numpy(float), image0["box"][0], rtol=1e-6)
        assert first["image_path"] == "img/000.png" and first["domain"] == "lab0" and pd.isna(first["label"])
        image1 = cells[cells["image_path"] == "img/001.png"]
        assert image1["cell_index"].tolist() == [0, 1] and (image1["label"] == "neutrophil").all()
        np.testing.assert_array_equal(store.crops(slice(1, 3)), make_cells(2, seed=1)["crop"])
        np.testing.assert_array_equal(store.roi(slice(1, 3)), make_cells(2, seed=1)["roi"].astype(np.float16))
        assert store.roi().dtype == np.float32 and store.crops().dtype == np.uint8
        assert store.provenance == PROVENANCE
        assert store.roi_shape == ROI and store.crop_shape == CROP


def test_per_cell_labels_and_cell_index_override_the_image_defaults(tmp_path):
    with CellStore.create(tmp_path / "s.h5", roi_shape=None, crop_shape=None, provenance={}) as store:
        store.add_image("a.png", "lab", "blast", cells=make_cells(3, 0, roi=None, crop=None,
                                                               label=["monocyte", None, "blast"], cell_index=[4, 7, 9]))
        store.flush()
        cells = store.cells()
    assert cells["label"].tolist()[0] == "monocyte" and pd.isna(cells["label"][1])
    assert cells["cell_index"].tolist() == [4, 7, 9]


def test_plain_h5py_and_pandas_read_it_as_documented(store_path):
    """The recipe of docs/store_layout.md, without aecfe."""
    with h5py.File(store_path, "r") as f:
        n_images, n_cells = int(f.attrs["n_images"]), int(f.attrs["n_cells"])  # committed rows

        def column(dataset, n):
            return dataset.asstr()[:n] if h5py.check_string_dtype(dataset.dtype) else dataset[:n]

        images = pd.DataFrame({k: column(f["images"][k], n_images) for k in f["images"]})
        cells = pd.DataFrame({k: column(f["cells"][k], n_cells)
                              for k in ("image_id", "cell_index", "label", "score", "mask_area")})
        cells[["x1", "y1", "x2", "y2"]] = f["cells/box"][:n_cells]
        cells = cells.join(images[["image_path", "domain"]], on="image_id")
        roi = f["cells/roi"][:n_cells]
        provenance = json.loads(f.attrs["provenance"])
        assert f.attrs["format"] == "aecfe.cell_store" and f.attrs["schema_version"] == SCHEMA_VERSION
        for dataset in (f[f"{g}/{k}"] for g in ("images", "cells") for k in f[g]):
            string_info = h5py.check_string_dtype(dataset.dtype)
            assert dataset.dtype.kind != "O" or (string_info and string_info.encoding == "utf-8")
    with CellStore.open(store_path) as store:
        expected = store.cells()
        for name in ("image_path", "domain", "cell_index", "x1", "y2", "score", "mask_area"):
            assert cells[name].tolist() == expected[name].tolist(), name
        assert cells["label"].tolist() == expected["label"].fillna("").tolist()  # "" = missing label
        assert images["status"].tolist() == store.images()["status"].tolist()
        np.testing.assert_array_equal(roi.astype(np.float32), store.roi())
        assert provenance == store.provenance


def test_file_attributes_record_versions_and_time(store_path):
    with h5py.File(store_path, "r") as f:
        assert f.attrs["aecfe_version"] == aecfe.__version__
        assert f.attrs["created_utc"].endswith("+00:00")


def test_commits_every_chunk_cells_and_readers_see_committed_rows_only(tmp_path):
    with CellStore.create(tmp_path / "s.h5", roi_shape=ROI, crop_shape=None, provenance={}, chunk_cells=4) as store:
        store.add_image("a", "d", cells=make_cells(3, 0, crop=None))
        assert len(store) == 0 and store.cells().empty
        assert store.processed_images() == {"a"}
        store.add_image("b", "d", cells=make_cells(2, 1, crop=None))
        assert len(store) == 5 and store.n_images == 2
        store.add_image("c", "d", status="error", reason="unreadable")
    with CellStore.open(tmp_path / "s.h5") as store:
        assert store.images()["image_path"].tolist() == ["a", "b", "c"]


def test_empty_store_readers_return_empty_typed_results(tmp_path):
    with CellStore.create(tmp_path / "e.h5", roi_shape=ROI, crop_shape=CROP, provenance={}) as store:
        pass
    with CellStore.open(tmp_path / "e.h5") as store:
        cells, images = store.cells(), store.images()
        assert list(cells.columns) == list(CELL_FRAME_COLUMNS) and len(cells) == 0
        assert list(images.columns) == list(IMAGE_FRAME_COLUMNS) and len(images) == 0
        assert cells["x1"].dtype == np.float32 and cells["mask_area"].dtype == np.int64
        assert store.roi().shape == (0, *ROI) and store.crops().shape == (0, *CROP)
        assert store.roi(np.array([], dtype=int)).shape == (0, *ROI)
        assert store.embedding_names() == [] and store.processed_images() == set() and len(store) == 0


def test_embeddings_are_named_resumable_and_keep_their_attrs(store_path):
    rng = np.random.default_rng(0)
    with CellStore.open(store_path, mode="a") as store:
        n = len(store)
        ae = rng.normal(size=(n, 5))
        attrs = {"autoencoder": model_identity({"latent": 5}, None), "alignment": "mmd"}
        store.write_embedding("ae_mmd", 0, ae[:4], attrs=attrs)
        assert store.embedding_progress("ae_mmd") == 4
        with pytest.raises(StoreError, match="incomplete"):
            store.embedding("ae_mmd")
        with pytest.raises(InputError, match="block 6:"):
            store.write_embedding("ae_mmd", 6, ae[6:])
        with pytest.raises(StoreError, match="other attrs"):
            store.write_embedding("ae_mmd", 4, ae[4:], attrs={"autoencoder": "another"})
        with pytest.raises(InputError, match="D=5"):
            store.write_embedding("ae_mmd", 4, ae[4:, :3])
        store.write_embedding("ae_mmd", 2, ae[2:], attrs=attrs)
        store.write_embedding("raw_pixels", 0, np.ones((n, 7)))
    with CellStore.open(store_path) as store:
        assert store.embedding_names() == ["ae_mmd", "raw_pixels"]
        np.testing.assert_array_equal(store.embedding("ae_mmd"), ae.astype(np.float32))
        assert store.embedding("ae_mmd").dtype == np.float32 and store.embedding("raw_pixels").shape == (n, 7)
        assert store.embedding_attrs("ae_mmd") == attrs
        X, y, domains = store.arrays("ae_mmd")
        assert X.shape == (n, 5) and y.shape == domains.shape == (n,)
        assert set(y) == {"", "neutrophil"} and set(domains) == {"lab0", "lab1"}
        X_l, y_l, _ = store.arrays("ae_mmd", labelled_only=True)
        assert len(X_l) == (y == "neutrophil").sum() and "" not in set(y_l)
        with pytest.raises(StoreError, match="no embedding 'nope'"):
            store.embedding("nope")


def test_index_forms(store_path):
    with CellStore.open(store_path) as store:
        roi = store.roi()
        np.testing.assert_array_equal(store.roi(2), roi[2])
        np.testing.assert_array_equal(store.roi(-1), roi[-1])
        np.testing.assert_array_equal(store.roi(np.array([5, 1, 5])), roi[[5, 1, 5]])
        np.testing.assert_array_equal(store.roi(slice(None, None, -2)), roi[::-2])
        mask = np.arange(len(store)) % 3 == 0
        np.testing.assert_array_equal(store.roi(mask), roi[mask])
        with pytest.raises(IndexError):
            store.roi(len(store))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(roi=c["roi"][:, :2]), r"cells\['roi'\] has shape \(2, 2, 3, 3\), expected \(2, 4, 3, 3\)"),
    (lambda c: c.update(crop=c["crop"].astype(np.float32)), r"cells\['crop'\] must be uint8"),
    (lambda c: c.update(box=c["box"][:, :3]), r"cells\['box'\] has shape"),
    (lambda c: c.update(score=np.array([np.nan, 1.0])), r"cells\['score'\] contains NaN"),
    (lambda c: c.update(roi=np.full((2, *ROI), 1e6)), r"beyond float16 range"),
    (lambda c: c.pop("roi"), r"missing \['roi'\]"),
    (lambda c: c.update(rois=1), r"unknown keys \['rois'\]"),
    (lambda c: c.update(label=["a"]), r"cells\['label'\] must hold 2"),
    (lambda c: c.update(mask_area=np.array([1.5, 2.0])), r"whole numbers"),
])
def test_bad_cells_raise_input_error_naming_the_image(tmp_path, change, message):
    cells = make_cells(2, 0)
    change(cells)
    with CellStore.create(tmp_path / "s.h5", roi_shape=ROI, crop_shape=CROP, provenance={}) as store:
        with pytest.raises(InputError, match="bad/image.png: .*" + message):
            store.add_image("bad/image.png", "lab", cells=cells)


def test_bad_image_entries_raise_input_error(tmp_path):
    with CellStore.create(tmp_path / "s.h5", roi_shape=None, crop_shape=None, provenance={}) as store:
        store.add_image("a.png", "lab", cells=make_cells(1, 0, roi=None, crop=None))
        with pytest.raises(InputError, match="a.png: already in the store"):
            store.add_image("a.png", "lab", status="error", reason="retry")
        with pytest.raises(InputError, match="b.png: status 'ok' needs cells"):
            store.add_image("b.png", "lab")
        with pytest.raises(InputError, match="c.png: status 'undetected' images carry no cells"):
            store.add_image("c.png", "lab", status="undetected", cells=make_cells(1, 0, roi=None, crop=None))
        with pytest.raises(InputError, match="d.png: status must be one of"):
            store.add_image("d.png", "lab", status="failed")
        with pytest.raises(InputError, match="e.png: domain must be"):
            store.add_image("e.png", "", status="error")
    with pytest.raises(InputError, match="provenance must be JSON"):
        CellStore.create(tmp_path / "p.h5", provenance={"weights": np.ones(2)})
    assert not (tmp_path / "p.h5").exists()


def test_read_only_store_and_existing_file_are_refused(store_path):
    with CellStore.open(store_path) as store:
        with pytest.raises(StoreError, match="read-only"):
            store.add_image("x.png", "lab", status="error")
    with pytest.raises(StoreError, match="already exists"):
        CellStore.create(store_path, provenance={})


def test_non_hdf5_truncated_and_foreign_files_raise_store_error(tmp_path, store_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(StoreError, match="notes.h5: not a readable HDF5 file"):
        CellStore.open(text)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(store_path.read_bytes()[: store_path.stat().st_size // 2])
    with pytest.raises(StoreError, match="truncated.h5: not a readable HDF5 file"):
        CellStore.open(truncated)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreError, match="foreign.h5: not an aecfe cell store"):
        CellStore.open(foreign)
    with pytest.raises(StoreError, match="missing.h5: no such"):
        CellStore.open(tmp_path / "missing.h5")


def test_store_open_in_another_writer_is_refused_with_store_error(store_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from aecfe.store import CellStore; "
                               "s = CellStore.open(sys.argv[1], 'a'); print('open', flush=True); sys.stdin.read()",
                               str(store_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=child_env())
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match="run.h5: locked by another process"):
            CellStore.open(store_path)
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def child_env():
    """Environment for child Pythons that import this checkout's aecfe."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(aecfe.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]))


def test_other_schema_version_raises_naming_file_and_both_versions(store_path):
    with h5py.File(store_path, "r+") as f:
        f.attrs["schema_version"] = np.int64(SCHEMA_VERSION + 1)
    for mode in ("r", "a"):
        with pytest.raises(StoreError) as excinfo:
            CellStore.open(store_path, mode=mode)
        message = str(excinfo.value)
        assert str(store_path) in message
        assert f"schema version {SCHEMA_VERSION + 1}" in message and f"schema version {SCHEMA_VERSION};" in message


def test_uncommitted_tail_is_ignored_by_readers_and_truncated_on_append(store_path):
    with CellStore.open(store_path) as store:
        before_cells, before_images = store.cells(), store.images()
    with h5py.File(store_path, "r+") as f:  # what a writer killed before its commit leaves behind
        for group in ("images", "cells"):
            for dataset in f[group].values():
                dataset.resize(dataset.shape[0] + 3, axis=0)
                if dataset.dtype.kind == "O":
                    dataset[-3:] = ["junk"] * 3
    with CellStore.open(store_path) as store:
        pd.testing.assert_frame_equal(store.cells(), before_cells)
        pd.testing.assert_frame_equal(store.images(), before_images)
    with CellStore.open(store_path, mode="a") as store:
        fill(store, 2, first=10)
    with CellStore.open(store_path) as store:
        assert store.images()["image_path"].tolist() == [f"img/{i:03d}.png" for i in range(12)]
        pd.testing.assert_frame_equal(store.cells().iloc[: len(before_cells)], before_cells)
        assert "junk" not in set(store.cells()["label"].dropna())


def test_resume_in_append_mode_equals_one_run(tmp_path):
    with CellStore.create(tmp_path / "one.h5", roi_shape=ROI, crop_shape=CROP, provenance={}, chunk_cells=4) as s:
        fill(s, 12)
    with CellStore.create(tmp_path / "two.h5", roi_shape=ROI, crop_shape=CROP, provenance={}, chunk_cells=4) as s:
        fill(s, 7)
    with CellStore.open(tmp_path / "two.h5", mode="a") as s:
        done = s.processed_images()
        for i in range(12):
            if f"img/{i:03d}.png" not in done:
                fill(s, 1, first=i)
    assert_same_content(tmp_path / "one.h5", tmp_path / "two.h5")


def assert_same_content(path_a, path_b):
    with CellStore.open(path_a) as a, CellStore.open(path_b) as b:
        pd.testing.assert_frame_equal(a.cells(), b.cells())
        pd.testing.assert_frame_equal(a.images(), b.images())
        assert a.images()["image_path"].is_unique
        for stage in ("roi", "crops"):
            if getattr(a, "roi_shape" if stage == "roi" else "crop_shape") is not None:
                np.testing.assert_array_equal(getattr(a, stage)(), getattr(b, stage)())
        assert a.embedding_names() == b.embedding_names()
        for name in a.embedding_names():
            np.testing.assert_array_equal(a.embedding(name), b.embedding(name))


# A writer run used by the crash test: full-size RoI features so that a kill lands inside writes.
CRASH_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from aecfe.store import CellStore

    def run(path):
        path = Path(path)
        store = (CellStore.open(path, "a") if path.exists()
                 else CellStore.create(path, roi_shape=(256, 14, 14), crop_shape=(3, 128, 128),
                                       provenance={"run": "crash-test"}, chunk_cells=8))
        done = store.processed_images()
        for i in range(30):
            if f"img{i:02d}" in done:
                continue
            rng = np.random.default_rng(i)
            n = int(rng.integers(1, 5))
            before = len(store)
            if i % 9 == 4:
                store.add_image(f"img{i:02d}", "d", status="error", reason="unreadable")
            else:
                store.add_image(f"img{i:02d}", f"d{i % 2}", "blast" if i % 3 else None, cells={
                    "box": np.tile([1.0, 2.0, 30.0, 40.0], (n, 1)), "score": rng.uniform(size=n),
                    "mask_area": rng.integers(1, 900, size=n),
                    "crop": rng.integers(0, 256, size=(n, 3, 128, 128), dtype=np.uint8),
                    "roi": rng.normal(size=(n, 256, 14, 14)).astype(np.float32)})
            if len(store) > before:
                print("commit", len(store), flush=True)
        store.flush()
        embedding = np.random.default_rng(99).normal(size=(len(store), 16))
        for start in range(store.embedding_progress("ae"), len(store), 6):
            store.write_embedding("ae", start, embedding[start:start + 6], attrs={"ae": "test"})
            print("embedding", start, flush=True)
        store.close()

    if __name__ == "__main__":
        run(sys.argv[1])
""")


@pytest.fixture(scope="module")
def crash_reference(tmp_path_factory):
    """An uninterrupted run of CRASH_WRITER (in-process) and the writer script's path."""
    folder = tmp_path_factory.mktemp("crash")
    script = folder / "writer.py"
    script.write_text(CRASH_WRITER)
    namespace = {"__name__": "writer"}
    exec(compile(CRASH_WRITER, str(script), "exec"), namespace)
    namespace["run"](folder / "reference.h5")
    return script, folder / "reference.h5"


@pytest.mark.parametrize("kill_after_line, delay_s", [(3, 0.0), (11, 0.01)])  # writing cells / embeddings
def test_sigkill_mid_write_then_resume_gives_identical_store(tmp_path, crash_reference, kill_after_line, delay_s):
    script, reference = crash_reference
    path = tmp_path / "killed.h5"
    env = child_env()
    child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=env)
    lines = [child.stdout.readline() for _ in range(kill_after_line)]
    time.sleep(delay_s)
    os.kill(child.pid, signal.SIGKILL)  # the child is already writing the next chunk
    child.wait()
    assert lines[-1], "the writer ended before the kill"
    committed = int(lines[-1].split()[1]) if lines[-1].startswith("commit") else None

    with CellStore.open(path, mode="a") as store:  # recovery: drop the uncommitted tail
        n = len(store)
    with CellStore.open(path) as store, CellStore.open(reference) as ref:
        assert committed is None or n >= committed
        pd.testing.assert_frame_equal(store.cells(), ref.cells().iloc[:n])
        pd.testing.assert_frame_equal(store.images(), ref.images().iloc[: store.n_images])
        np.testing.assert_array_equal(store.roi(), ref.roi(slice(0, n)))
        np.testing.assert_array_equal(store.crops(), ref.crops(slice(0, n)))
        done = store.embedding_progress("ae")
        if done:
            np.testing.assert_array_equal(store._file["embeddings/ae"][:done], ref.embedding("ae")[:done])

    finished = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, env=env)
    assert finished.returncode == 0, finished.stderr
    assert_same_content(path, reference)


def shard(path, images, shard_name, embed=True):
    with CellStore.create(path, roi_shape=ROI, crop_shape=None, provenance=dict(PROVENANCE, shard=shard_name),
                          chunk_cells=3) as store:
        for i in images:
            store.add_image(f"img/{i:03d}.png", "lab", "blast", cells=make_cells(i % 3 + 1, i, crop=None))
        if embed:
            offset = 100 * int(shard_name[0])  # shards' embeddings differ
            store.write_embedding("ae", 0, np.arange(len(store) * 2).reshape(-1, 2) + offset, attrs={"ae": 1})
    return path


def test_merge_stores_joins_shards_without_duplicate_images(tmp_path):
    a = shard(tmp_path / "a.h5", range(0, 6), "1/2")
    b = shard(tmp_path / "b.h5", range(4, 11), "2/2")  # images 4 and 5 overlap
    out = merge_stores([a, b], tmp_path / "merged.h5")
    with CellStore.open(out) as merged, CellStore.open(a) as sa, CellStore.open(b) as sb:
        images = merged.images()
        assert images["image_path"].tolist() == [f"img/{i:03d}.png" for i in range(11)]
        cells_b = sb.cells()
        keep_b = ~cells_b["image_path"].isin(sa.images()["image_path"]).to_numpy()
        expected_roi = np.concatenate([sa.roi(), sb.roi()[keep_b]])
        np.testing.assert_array_equal(merged.roi(), expected_roi)
        np.testing.assert_array_equal(merged.embedding("ae"),
                                      np.concatenate([sa.embedding("ae"), sb.embedding("ae")[keep_b]]))
        cells = merged.cells()
        assert cells["cell_id"].tolist() == list(range(len(merged)))
        assert (cells.groupby("image_path").size().to_numpy() == images.set_index("image_path")["n_cells"]
                .loc[sorted(images["image_path"])].to_numpy()).all()
        assert merged.provenance["merged_from"] == [{"file": "a.h5", "shard": "1/2"}, {"file": "b.h5", "shard": "2/2"}]
        assert merged.embedding_attrs("ae") == {"ae": 1}


def test_merge_keeps_only_the_domains_asked_for(tmp_path):
    """A leave-one-lab-out fold's source store cut from a store of every lab: images, cells and embedding rows."""
    path = tmp_path / "all.h5"
    with CellStore.create(path, roi_shape=ROI, crop_shape=None, provenance=PROVENANCE, chunk_cells=3) as store:
        for i in range(8):
            store.add_image(f"img/{i:03d}.png", ["lab_a", "lab_b"][i % 2], "blast",
                            cells=make_cells(i % 3 + 1, i, crop=None))
        store.write_embedding("ae", 0, np.arange(len(store) * 2, dtype=np.float32).reshape(-1, 2), attrs={"ae": 1})
    out = merge_stores([path], tmp_path / "lab_b.h5", domains=["lab_b"])
    with CellStore.open(out) as kept, CellStore.open(path) as full:
        rows = (full.cells()["domain"] == "lab_b").to_numpy()
        assert set(kept.images()["domain"]) == {"lab_b"} and len(kept) == int(rows.sum())
        np.testing.assert_array_equal(kept.roi(), full.roi()[rows])
        np.testing.assert_array_equal(kept.embedding("ae"), full.embedding("ae")[rows])
        assert kept.provenance["domains_kept"] == ["lab_b"]
    with pytest.raises(InputError, match="lab_c"):
        merge_stores([path], tmp_path / "none.h5", domains=["lab_c"])
    assert not (tmp_path / "none.h5").exists()


def test_merge_refuses_mismatched_shards(tmp_path):
    a = shard(tmp_path / "a.h5", range(0, 3), "1/2")
    b = shard(tmp_path / "b.h5", range(3, 6), "2/2", embed=False)
    with pytest.raises(StoreError, match="b.h5: embedding 'ae' is missing or incomplete"):
        merge_stores([a, b], tmp_path / "m1.h5")
    with CellStore.create(tmp_path / "c.h5", roi_shape=ROI, crop_shape=None, provenance={"detector": "other"}) as s:
        s.add_image("z.png", "lab", status="error")
    with pytest.raises(StoreError, match="c.h5: provenance differs"):
        merge_stores([b, tmp_path / "c.h5"], tmp_path / "m2.h5")


def test_model_identity_hashes_the_weights_file(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    identity = model_identity({"layers": 3}, weights)
    assert identity == {"config": {"layers": 3}, "weights_sha256": hashlib.sha256(b"weights").hexdigest()}


class RecordingFile(io.RawIOBase):
    """An in-memory file for h5py's file-object driver that logs every write, and whether it
    happened inside the store's flush (``_sync``)."""

    def __init__(self):
        super().__init__()
        self.data, self.position, self.writes, self.in_flush = bytearray(), 0, [], False

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: len(self.data)}[whence]
        self.position = base + offset
        return self.position

    def tell(self):
        return self.position

    def readinto(self, buffer):
        chunk = self.data[self.position:self.position + len(buffer)]
        buffer[:len(chunk)] = chunk
        self.position += len(chunk)
        return len(chunk)

    def write(self, payload):
        payload = bytes(payload)
        self.writes.append((self.position, payload, self.in_flush))
        self._put(self.data, self.position, payload)
        self.position += len(payload)
        return len(payload)

    def truncate(self, size=None):
        size = self.position if size is None else size
        self.writes.append((size, None, self.in_flush))
        self._resize(self.data, size)
        return size

    @staticmethod
    def _put(data, offset, payload):
        if offset + len(payload) > len(data):
            data.extend(b"\0" * (offset + len(payload) - len(data)))
        data[offset:offset + len(payload)] = payload

    @staticmethod
    def _resize(data, size):
        del data[size:]
        data.extend(b"\0" * (size - len(data)))

    def states_between_flushes(self):
        """The file as a SIGKILL after each write made outside a flush would leave it."""
        data = bytearray()
        for offset, payload, in_flush in self.writes:
            if payload is None:
                self._resize(data, offset)
            else:
                self._put(data, offset, payload)
            if not in_flush:
                yield bytes(data)


def write_small_run(store):
    """Resumable writer: 16 images (every 4th undetected), then an embedding in blocks of 5."""
    done = store.processed_images()
    for i in range(16):
        if f"img/{i:03d}.png" not in done:
            fill(store, 1, first=i, crop=None)
    store.flush()
    embedding = np.random.default_rng(3).normal(size=(len(store), 4))
    for start in range(store.embedding_progress("ae"), len(store), 5):
        store.write_embedding("ae", start, embedding[start:start + 5], attrs={"ae": 1})


def test_every_kill_point_between_hdf5_flushes_is_recoverable(tmp_path, monkeypatch):
    """Record every write HDF5 makes, then check each state a kill outside HDF5's own flush
    leaves: it reopens, its committed rows match, and resuming gives the uninterrupted content.
    Two-cell compressed RoI chunks make appends rewrite committed chunks (the hard case)."""
    recording = RecordingFile()
    real_file = h5py.File
    monkeypatch.setattr(store_module, "h5py", SimpleNamespace(
        File=lambda path, mode, **kw: real_file(recording, "w" if mode == "w-" else mode, **kw),
        string_dtype=h5py.string_dtype))

    def recorded_sync(h5file):
        recording.in_flush = True
        h5file.flush()
        recording.in_flush = False

    monkeypatch.setattr(store_module, "_sync", recorded_sync)
    layout = StoreLayout(stage_chunk_cells=2, column_chunk_rows=8)
    store = CellStore.create(tmp_path / "recorded.h5", roi_shape=ROI, crop_shape=None, provenance={}, chunk_cells=4,
                             layout=layout)
    write_small_run(store)
    store.close()
    monkeypatch.undo()
    reference = tmp_path / "reference.h5"
    reference.write_bytes(bytes(recording.data))
    with CellStore.open(reference) as ref:
        ref_cells, ref_images, ref_roi = ref.cells(), ref.images(), ref.roi()

    states = list(recording.states_between_flushes())
    assert len(states) > 20
    for number, state in enumerate(states[1:], start=1):  # state 0: the empty file before create()
        path = tmp_path / f"state{number}.h5"
        path.write_bytes(state)
        with CellStore.open(path, mode="a") as store:
            n = len(store)
            pd.testing.assert_frame_equal(store.cells(), ref_cells.iloc[:n])
            pd.testing.assert_frame_equal(store.images(), ref_images.iloc[: store.n_images])
            np.testing.assert_array_equal(store.roi(), ref_roi[:n])
            write_small_run(store)
        assert_same_content(path, reference)
        path.unlink()


# ------------------------------------------------------------------------------------------ issue 11: hardening
def test_non_utf8_file_names_are_stored_losslessly_and_resume(tmp_path):
    """A name that is not UTF-8 (bytes 0xe9, 0xff) used to crash flush and every resume."""
    raw = b"img/caf\xe9_\xff.png"
    name = os.fsdecode(raw)
    path = tmp_path / "run.h5"
    with CellStore.create(path, roi_shape=ROI, crop_shape=None, provenance={}, chunk_cells=1) as store:
        store.add_image(name, os.fsdecode(b"lab\xe9"), cells=make_cells(2, 0, crop=None))
        store.add_image("img/plain.png", "lab", status="undetected", reason="no cell")
    with CellStore.open(path, mode="a") as store:
        assert name in store.processed_images()
        images = store.images()
        assert os.fsencode(images["image_path"][0]) == raw and os.fsencode(images["domain"][0]) == b"lab\xe9"
        assert store.cells()["image_path"].tolist() == [name, name]
        with pytest.raises(InputError, match="already in the store"):
            store.add_image(name, "lab")
    with h5py.File(path, "r") as f:  # on disk: the raw bytes; plain h5py reads them back the same way
        assert f["images/image_path"][0] == raw
        assert f["images/image_path"].asstr(errors="surrogateescape")[0] == name


def test_content_sha1_is_stored_and_groups_cells_of_identical_images(tmp_path):
    digest = hashlib.sha1(b"same bytes").hexdigest()
    with CellStore.create(tmp_path / "run.h5", roi_shape=None, crop_shape=None, provenance={}) as store:
        store.add_image("a/x.png", "lab_a", cells=make_cells(2, 0, roi=None, crop=None), content_sha1=digest)
        store.add_image("b/y.png", "lab_b", cells=make_cells(1, 1, roi=None, crop=None), content_sha1=digest)
        store.add_image("c/z.png", "lab_b", cells=make_cells(1, 2, roi=None, crop=None))
        with pytest.raises(InputError, match="content_sha1"):
            store.add_image("d.png", "lab_b", status="undetected", content_sha1="not a hash")
    with CellStore.open(tmp_path / "run.h5") as store:
        assert store.images()["content_sha1"].tolist() == [digest, digest, ""]
        assert store.cell_groups().tolist() == [digest, digest, digest, "path:c/z.png"]


def test_error_rows_can_be_retried_and_are_superseded(tmp_path):
    path = tmp_path / "run.h5"
    with CellStore.create(path, roi_shape=ROI, crop_shape=None, provenance={}, chunk_cells=2) as store:
        store.add_image("a.png", "lab", status="error", reason="unreadable: permission denied")
        store.add_image("b.png", "lab", cells=make_cells(1, 0, crop=None))
    with CellStore.open(path, mode="a") as store:
        assert store.error_images() == {"a.png"}
        assert store.processed_images(include_errors=False) == {"b.png"}
        with pytest.raises(InputError, match="status 'error'"):
            store.add_image("a.png", "lab", cells=make_cells(1, 1, crop=None))  # not without retry=True
        store.add_image("a.png", "lab", cells=make_cells(1, 1, crop=None), retry=True)
        with pytest.raises(InputError, match="already in the store"):
            store.add_image("b.png", "lab", cells=make_cells(1, 1, crop=None), retry=True)  # only errors
    with CellStore.open(path) as store:
        images = store.images()
        assert images["image_path"].tolist() == ["b.png", "a.png"] and set(images["status"]) == {"ok"}
        assert store.images(include_retried=True)["status"].tolist() == ["retried", "ok", "ok"]
        assert store.error_images() == set() and store.cells()["image_path"].tolist() == ["b.png", "a.png"]


def _flip(path: Path, offset: int, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + n] = bytes(b ^ 0xFF for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


def test_checksums_turn_flipped_bytes_into_an_error_naming_file_and_dataset(tmp_path):
    """Uncompressed RoI features and embeddings used to come back silently wrong after a bit flip."""
    path = tmp_path / "run.h5"
    layout = StoreLayout(compression=None, compression_level=None, shuffle=False)
    with CellStore.create(path, roi_shape=ROI, crop_shape=None, provenance={}, layout=layout) as store:
        fill(store, 6, crop=None)
        store.flush()
        store.write_embedding("ae", 0, np.ones((len(store), 3)))
    with h5py.File(path, "r") as f:
        assert all(f[name].fletcher32 for name in ("cells/roi", "cells/box", "images/n_cells", "embeddings/ae"))
        roi_offset = f["cells/roi"].id.get_chunk_info(0).byte_offset
        embedding_offset = f["embeddings/ae"].id.get_chunk_info(0).byte_offset
    _flip(path, roi_offset + 8)
    _flip(path, embedding_offset + 4)
    with CellStore.open(path) as store:  # the metadata is intact: it opens, and the damage shows on reading
        with pytest.raises(StoreError, match=r"run\.h5: cannot read dataset /cells/roi .*filter returned failure"):
            store.roi()
        with pytest.raises(StoreError, match="/embeddings/ae"):
            store.embedding("ae")
        assert len(store.cells()) == len(store)  # undamaged datasets still read
    report = store_module.verify_store(path)
    assert not report.ok and len(report.problems) == 2
    assert report.problems[0].startswith("/cells/roi rows 0:1") and "/embeddings/ae rows 0:" in report.problems[1]


def test_verify_store_command_reports_intact_and_damaged_stores(store_path, tmp_path, capsys):
    from aecfe.cli.verify_store import main

    assert main([str(store_path), "--json", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert f"{store_path}: ok:" in out and "/images/image_path" in out  # string columns: no checksum
    assert json.loads((tmp_path / "v.json").read_text())[0]["ok"] is True
    with h5py.File(store_path, "r") as f:
        offset = f["cells/crop"].id.get_chunk_info(2).byte_offset
    _flip(store_path, offset + 2)
    assert main([str(store_path), "--quiet"]) == 1
    assert f"{store_path}: /cells/crop rows 2:3:" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.h5")]) == 1
