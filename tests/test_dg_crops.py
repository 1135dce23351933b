"""The deep baselines on the detector's cell crops (classifiers/dg/crops.py, aecfe/store/readers.py): the same cells,
labels, groups and splits as the embedding heads, crop augmentations, DGClassifier / few-shot / SADA on crops, and
train_dg --store end to end (tiny CNN, a few steps)."""
import numpy as np
import pandas as pd
import pytest
import torch

from aecfe.store.readers import labelled_cells, load_cell_crops
from aecfe.store.readers import load_features
from aecfe.cli.evaluate_cross_domain import main as evaluate_main
from aecfe.cli.train_dg import main as train_dg_main
from aecfe.errors import InputError
from aecfe.evaluation import domain_splits
from aecfe.store import CellStore
from aecfe.taxonomy import relabel
from classifiers.dg import DGClassifier, ImageDataset, TrainConfig, few_shot_workflow
from classifiers.dg.crops import CropDataset, crop_dataset, resize_crops
from classifiers.dg.transforms import RandomCenterZoom, RandomResolutionLoss, train_transform

SIDE = 32
TINY = {"backbone": "tiny", "steps": 4, "checkpoint_every": 2, "batch_size": 4, "image_size": 16}


def _cells(image: np.ndarray, n: int = 1) -> dict:
    crop = np.ascontiguousarray(image.transpose(2, 0, 1))[None].repeat(n, 0)
    return {"box": np.tile(np.array([[4, 4, 28, 28]], np.float32), (n, 1)), "score": np.full(n, 0.9, np.float32),
            "mask_area": np.full(n, 300), "crop": crop}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """Three synthetic labs as a store of 32-px crops: one unlabelled cell, platelets (the 'five' scheme drops
    them), an image with two cells and two byte-identical images (one group each), and an embedding for heads."""
    from aecfe.synthetic import default_domains, make_single_cell_images

    path = tmp_path_factory.mktemp("crops") / "cells.h5"
    with CellStore.create(path, roi_shape=None, crop_shape=(3, SIDE, SIDE), provenance={"test": True}) as store:
        for domain in default_domains():
            cells = make_single_cell_images(domain, 24, seed=1, size=SIDE)
            for i, cell in enumerate(cells):
                label = None if (domain.name, i) == ("lab_a", 0) else "platelet" if i % 8 == 7 else cell.labels[0]
                sha1 = f"{domain.name}-{i}".encode().hex()[:40].ljust(40, "0")
                if domain.name == "lab_b" and i == 2:  # a byte-identical copy of image 1
                    sha1 = f"{domain.name}-1".encode().hex()[:40].ljust(40, "0")
                store.add_image(f"{domain.name}/{i}.png", domain.name, label, content_sha1=sha1,
                                cells=_cells(cell.image, 2 if i == 3 else 1))
        store.flush()
        crops = store.crops().astype(np.float32)
        store.write_embedding("mean_colour", 0, crops.reshape(len(crops), 3, -1).mean(-1))
    return path


def test_crops_are_the_heads_cells_with_their_labels_and_groups(store_path):
    data, labels, domains = load_cell_crops(store_path, scheme="five", size=16)
    with CellStore.open(store_path) as store:
        X, y, heads_domains, groups = load_features(store, "mean_colour", with_groups=True)
        index, _, _ = labelled_cells(store)
        y = relabel(y, heads_domains, "five", "canonical")
        keep = np.array([label is not None for label in y])
        assert 0 < keep.sum() < len(keep)  # the scheme drops the platelets, for both
        np.testing.assert_array_equal(data.images, resize_crops(store.crops(index[keep]), 16))
    assert isinstance(data, CropDataset) and data.images.shape[1:] == (16, 16, 3)
    np.testing.assert_array_equal(labels, y[keep].astype(str))
    np.testing.assert_array_equal(domains, heads_domains[keep])
    np.testing.assert_array_equal(data.groups, groups[keep])
    assert len(set(data.groups)) < len(data)  # the two cells of one image and the copied image share groups
    for seed in (0, 1):  # the splits drawn from them are the heads' splits
        ours, theirs = (domain_splits(labels, domains, seed, groups=data.groups),
                        domain_splits(y[keep].astype(str), heads_domains[keep], seed, groups=groups[keep]))
        assert all(np.array_equal(ours[d].test, theirs[d].test) for d in ours)
    with pytest.raises(InputError, match="uint8 crops"):
        resize_crops(np.zeros((2, 16, 16, 3), np.uint8), 8)


def test_crop_augmentations_keep_the_whole_cell_at_its_scale():
    x = torch.rand(3, SIDE, SIDE)
    crop_version, field_version = train_transform("sada", SIDE, crops=True), train_transform("sada", SIDE)
    outputs = [crop_version(x) for _ in range(12)]
    # a crop is only flipped: every pixel of the cell is kept, at its scale
    assert all(torch.allclose(out, x) or torch.allclose(out, x.flip(-1)) for out in outputs)
    assert any(not (torch.allclose(out, x) or torch.allclose(out, x.flip(-1)))
               for out in (field_version(x) for _ in range(12)))  # the whole-field recipe zooms in
    steps = lambda transform: [type(step) for step in transform.transforms]  # noqa: E731
    assert RandomCenterZoom in steps(train_transform("fewshot", 96, degrade=True))
    degraded = steps(train_transform("fewshot", 96, degrade=True, crops=True))
    assert RandomCenterZoom not in degraded and RandomResolutionLoss in degraded
    for name in ("domainbed", "boda", "fewshot_target", "none"):
        assert train_transform(name, 16, crops=True)(x).shape == (3, 16, 16)


def test_dg_classifier_trains_on_crops_with_grouped_holdout_and_its_own_runs(store_path, tmp_path):
    data, labels, domains = load_cell_crops(store_path, scheme="five", size=16)
    sources = np.flatnonzero(domains != "lab_c")
    model = DGClassifier("ERM", TINY, random_state=2, out_dir=tmp_path).fit(data[sources], labels[sources])
    assert model.crops_
    splits = domain_splits(labels[sources], domains[sources], 2, groups=data.groups[sources]).values()
    assert np.array_equal(model.validation_indices_, np.sort(np.concatenate([s.test for s in splits])))
    predicted = model.predict(data[np.flatnonzero(domains == "lab_c")])
    assert len(predicted) == (domains == "lab_c").sum() and set(predicted) <= set(model.classes_)
    # the same pixels as whole images train with other augmentations: another run folder
    images = ImageDataset(data.images, labels, domains)
    DGClassifier("ERM", TINY, random_state=2, out_dir=tmp_path).fit(images[sources], labels[sources])
    assert len(list(tmp_path.iterdir())) == 2


def test_sada_stain_augmentation_and_few_shot_fine_tuning_on_crops(store_path, tmp_path):
    data, labels, domains = load_cell_crops(store_path, scheme="five", size=16)
    sources = np.flatnonzero(domains != "lab_c")
    sada = DGClassifier("SADA", {**TINY, "stage1_steps": 2, "include_top": False})
    sada.fit(data[sources], labels[sources])
    assert {"contrastive"} <= set(sada.history_[0]) and len(sada.predict(data[sources[:5]])) == 5
    # every cell of lab_c shares its group (image) with one other cell: a shot's twin must not be scored
    groups = data.groups.copy()
    target = np.flatnonzero(domains == "lab_c")
    groups[target] = [f"pair{j // 2}" for j in range(len(target))]
    paired = CropDataset(data.images, labels, domains, groups=groups)
    result = few_shot_workflow(paired, ["lab_a", "lab_b"], "lab_c", shots_per_class=2, degrade_domains=["lab_a"],
                               source_hparams={"backbone": "tiny", "include_top": False, "image_size": 16,
                                               "epochs": 1, "batch_size": 8},
                               finetune_hparams={"epochs": 1}, config=TrainConfig(out_dir=tmp_path, progress=False))
    shots, scored = set(groups[result.finetune_indices]), set(groups[result.test_indices])
    assert set(result.finetune_indices) <= set(target) and scored and not shots & scored
    assert set(result.test_indices) == set(target[~np.isin(groups[target], list(shots))])
    assert len(result.y_pred) == len(result.test_indices) and set(result.scores) == {"source_only", "finetuned"}


def test_train_dg_on_a_store_scores_the_heads_splits(store_path, tmp_path):
    common = ["--scheme", "five", "--seeds", "0", "--protocol", "matrix", "lodo"]
    assert evaluate_main([str(store_path), "--out", str(tmp_path / "heads"), "--features", "mean_colour",
                          "--head", "linear", "--label-dataset", "canonical", "--no-umap", "--no-confusion-png",
                          *common]) == 0
    out = tmp_path / "dg"
    assert train_dg_main(["--store", str(store_path), "--algorithm", "ERM", "FewShot", "--backbone", "tiny",
                          "--image-size", "16", "--steps", "3", "--batch-size", "2", "--few-shot-k", "2",
                          "--hparam", "FewShotFinetune.epochs=1", "--threads", "1", "--no-confusion-png",
                          "--out", str(out), *common]) == 0
    keys = ["seed", "protocol", "variant", "train_domain", "test_domain", "n_train", "n_test"]
    heads = pd.read_csv(tmp_path / "heads" / "linear" / "scores.csv")[keys].sort_values(keys[:5])
    erm = pd.read_csv(out / "ERM" / "scores.csv")[keys].sort_values(keys[:5])
    assert len(erm) == 9 + 9 + 3 and heads.reset_index(drop=True).equals(erm.reset_index(drop=True))
    summary = pd.read_csv(out / "summary_f1_macro.csv", index_col=0)
    assert list(summary.index) == ["ERM", "FewShot_k0", "FewShot_k2"]
    assert train_dg_main(["--store", str(store_path), "--synthetic", "--out", str(tmp_path / "bad")]) == 2
