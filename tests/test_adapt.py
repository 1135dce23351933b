"""aecfe-adapt end to end on synthetic images (tiny models, see test_bundle.py's workflow): the new lab's cells are
extracted, the bundle's autoencoder trains on with them as one more domain, the head is refitted, a new bundle is
written; the k labelled cells (--shots, --labels) enter the head's training set; bad labels rows are counted."""
import csv
import json

import numpy as np
import pytest

from aecfe.errors import InputError
from test_bundle import workflow  # noqa: F401  (the module-scoped fixture: images, detector, store, bundle)

FAST = ["--epochs", "1", "--train-option", "batch_size=8", "--train-option", "grid_every=0",
        "--train-option", "probe_cells=0", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def measured(workflow, tmp_path_factory):  # noqa: F811
    from aecfe.cli.adapt import main as adapt

    out = tmp_path_factory.mktemp("adapt") / "lab_c"
    assert adapt([str(workflow["bundle"]), "--domain", f"lab_c={workflow['images'] / 'lab_c'}",
                  "--shots", "0,1", "--shot-seeds", "0,1", "--out", str(out), *FAST]) == 0
    return out


def test_adapt_writes_adapted_bundles_with_provenance(workflow, measured):  # noqa: F811
    import torch

    from aecfe.bundle import load_bundle
    from aecfe.store import CellStore

    report = json.loads((measured / "adaptation.json").read_text())
    assert sorted(report["bundles"]) == ["bundle_k0", "bundle_k1"]
    assert report["domains"][-1] == "new_lab" and set(report["domains"][:-1]) == {"lab_a", "lab_b"}
    assert report["new_lab_cells"] == len(list((workflow["images"] / "lab_c").rglob("*.png")))
    assert set(report["wall_s"]) == {"extract_s", "autoencoder_s", "encode_s"}
    original = load_bundle(workflow["bundle"])
    adapted = load_bundle(measured / "bundle_k0")
    provenance = adapted.description["provenance"]
    assert provenance["adapted"] is True and provenance["adapted_from"]["bundle"] == str(workflow["bundle"].resolve())
    assert provenance["adapted_on"]["images"] == report["new_lab_cells"] and provenance["shots_per_class"] == 0
    assert provenance["training_store_matches_bundle"] is True
    assert adapted.classes == original.classes and adapted.scheme == original.scheme
    assert adapted.embedding_name.startswith("ae_adapted_") and adapted.preprocessing == original.preprocessing
    assert type(adapted.head) is type(original.head) and adapted.head.get_params() == original.head.get_params()
    before = torch.load(original.autoencoder_checkpoint, weights_only=True)["model"]
    after = torch.load(adapted.autoencoder_checkpoint, weights_only=True)["model"]
    assert any(not torch.equal(before[key], after[key]) for key in before)  # the autoencoder trained on
    with CellStore.open(measured / "cells.h5") as store:  # both embeddings of the new lab's cells
        assert {original.embedding_name, adapted.embedding_name} <= set(store.embedding_names())


def test_the_k_labelled_cells_enter_the_head_and_the_rest_is_scored(workflow, measured):  # noqa: F811
    from aecfe.bundle import load_bundle
    from aecfe.splits import few_shot_selection
    from aecfe.store import CellStore

    k0 = load_bundle(measured / "bundle_k0").description["provenance"]
    k1 = load_bundle(measured / "bundle_k1").description["provenance"]
    classes = load_bundle(workflow["bundle"]).classes
    with CellStore.open(measured / "cells.h5") as store:
        cells, groups = store.cells(), store.cell_groups()
    known = cells["label"].isin(classes).to_numpy()
    labels = cells["label"].to_numpy(dtype=str)
    shots = few_shot_selection(labels, 1, 0, keys=groups, candidates=np.flatnonzero(known))
    assert k1["target_labelled_cells"] == len(shots) > 0 and k0["target_labelled_cells"] == 0
    expected = dict(k0["class_counts"])
    for label in labels[shots]:  # the source's cells plus exactly the shots
        expected[label] = expected.get(label, 0) + 1
    assert k1["class_counts"] == expected
    rows = list(csv.DictReader(open(measured / "few_shot.csv")))
    assert sorted((row["embedding"], row["k"], row["seed"]) for row in rows) == sorted(
        (embedding, k, seed) for embedding in ("adapted", "bundle") for k in "01" for seed in "01")
    for row in rows:
        assert 0 <= float(row["f1_macro"]) <= 1 and 0 <= float(row["accuracy"]) <= 1
        chosen = few_shot_selection(labels, 1, int(row["seed"]), keys=groups, candidates=np.flatnonzero(known))
        assert int(row["n_scored"]) == int(known.sum()) - (len(chosen) if row["k"] == "1" else 0)
        assert int(row["n_shots"]) == (len(chosen) if row["k"] == "1" else 0)
    text = (measured / "few_shot.md").read_text()
    assert "Wall time" in text and " ± " in text  # two seeds: mean ± std


def test_a_labels_file_adds_its_cells_and_counts_bad_rows(workflow, measured, tmp_path):  # noqa: F811
    from aecfe.adaptation import adapt_bundle
    from aecfe.bundle import load_bundle
    from aecfe.prediction import collect_inputs

    bundle = load_bundle(workflow["bundle"])
    images = sorted((workflow["images"] / "lab_c").rglob("*.png"))
    known = [p for p in images if p.parent.name in bundle.classes][:2]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "class", "cell_index"])
        for path in known:
            writer.writerow([str(path), path.parent.name, ""])
        writer.writerow([str(tmp_path / "nowhere.png"), known[0].parent.name, ""])  # not in the store
        writer.writerow([str(images[0]), "dragon", ""])                            # a class the bundle lacks
        writer.writerow([str(images[0]), known[0].parent.name, "7"])               # no such cell
    listing = collect_inputs(domains=[("lab_c", workflow["images"] / "lab_c")])
    report = adapt_bundle(bundle, listing, measured, labels_file=labels, epochs=0, progress=False,
                          trainer_options={"batch_size": 8, "grid_every": 0, "probe_cells": 0})
    assert report["labels_skipped"] == {"cell_index not a cell of the image": 1, "class unknown to the bundle": 1,
                                        "image not in the store": 1}
    provenance = load_bundle(measured / "bundle").description["provenance"]
    assert provenance["target_labelled_cells"] == 2 and provenance["labels_file"] == str(labels.resolve())
    source = load_bundle(measured / "bundle_k0").description["provenance"]["class_counts"]
    assert sum(provenance["class_counts"].values()) == sum(source.values()) + 2
    with pytest.raises(InputError, match="exists already"):
        adapt_bundle(bundle, listing, measured, labels_file=labels, epochs=0, progress=False)
    (tmp_path / "bad.csv").write_text("path,label\nx.png,neutrophil\n")
    with pytest.raises(InputError, match=r"bad.csv: the labels file needs a header"):
        adapt_bundle(bundle, listing, measured, labels_file=tmp_path / "bad.csv", epochs=0, progress=False,
                     overwrite=True)


def test_adapt_refuses_a_missing_source_store(workflow, tmp_path):  # noqa: F811
    from aecfe.cli.adapt import main as adapt

    assert adapt([str(workflow["bundle"]), "--images", str(workflow["images"] / "lab_c"), "--source-store",
                  str(tmp_path / "gone.h5"), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert not (tmp_path / "o").exists()


def test_joined_cells_keep_the_asked_order_across_parts():
    import torch

    from aecfe.store.training_cells import JoinedCells
    from extractors.trainer import RoiCropDataset

    def part(n, value):
        roi = np.full((n, 256, 14, 14), value, np.float16) + np.arange(n, dtype=np.float16)[:, None, None, None]
        return RoiCropDataset(roi, np.zeros((n, 3, 128, 128), np.uint8), np.zeros(n, np.int64))

    joined = JoinedCells([part(3, 0), part(2, 100)], [np.array([0, 1, 1]), np.array([2, 2])],
                         [np.array([0, -1, 1]), np.array([-1, -1])])
    roi, crops, domains = joined.batch([4, 0, 3, 2])
    assert roi[:, 0, 0, 0].tolist() == [101, 0, 100, 2] and crops.shape == (4, 3, 128, 128)
    assert domains.tolist() == [2, 0, 2, 1] and joined.n_domains == 3 and len(joined) == 5
    assert joined.features([1])[1] is None and torch.equal(joined.domains, torch.tensor([0, 1, 1, 2, 2]))
    with pytest.raises(InputError):
        JoinedCells([part(2, 0)], [np.zeros(3, np.int64)], [np.zeros(2, np.int64)])
