"""The ResNet-RF baseline's CNN embedding of a store's crops (extractors.cnn_features, embed_cnn CLI)."""
import numpy as np
import torch

from aecfe.cli.embed_cnn import main
from aecfe.store import CellStore
from classifiers.dg.backbones import build_featurizer
from extractors.cnn_features import cnn_features


def test_features_shape_and_resize_independent_of_batching():
    torch.manual_seed(0)
    featurizer = build_featurizer("tiny")
    crops = np.random.default_rng(0).integers(0, 256, (5, 3, 40, 40), dtype=np.uint8)
    whole = cnn_features(featurizer, crops, image_size=32, batch_size=5)
    batched = cnn_features(featurizer, crops, image_size=32, batch_size=2)
    assert whole.shape == (5, featurizer.n_outputs) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, batched, rtol=1e-5, atol=1e-6)
    assert cnn_features(featurizer, crops[:0]).shape == (0, featurizer.n_outputs)


def test_cli_writes_a_resumable_embedding(tmp_path):
    path = tmp_path / "cells.h5"
    rng = np.random.default_rng(1)
    with CellStore.create(path, roi_shape=None, provenance={"detector": None}) as store:
        for i in range(3):
            store.add_image(f"img{i}.png", "lab", "neutrophil",
                            cells={"box": np.array([[0, 0, 9, 9]], np.float32), "score": np.ones(1, np.float32),
                                   "mask_area": np.array([50]),
                                   "crop": rng.integers(0, 256, (1, 3, 128, 128), dtype=np.uint8)})
    argv = [str(path), "--backbone", "tiny", "--image-size", "32", "--no-progress"]
    assert main(argv) == 0
    with CellStore.open(path) as store:
        first = store.embedding("cnn")
        assert first.shape == (3, 32) and np.isfinite(first).all()
        assert store.embedding_attrs("cnn")["model"]["config"]["backbone"] == "tiny"
    assert main(argv) == 0  # nothing left to do: same rows
    with CellStore.open(path) as store:
        np.testing.assert_array_equal(store.embedding("cnn"), first)
