"""The store boundary's writers share one embedding attribute schema; the package re-exports the old names."""
import numpy as np
import pytest

from aecfe.errors import InputError
from aecfe.store import (EMBEDDING_KINDS, CellStore, EmbeddingStage, baseline_stage, embedding_attrs,
                         write_embedding)


def test_every_embedding_attribute_follows_one_schema():
    for name in ("rcnn_roi", "raw_pixels"):
        attrs = baseline_stage(name).attrs
        assert attrs["kind"] == "baseline" and attrs["model"] is None and attrs["features"]
    attrs = embedding_attrs("autoencoder", "code", {"config": {}, "weights_sha256": "ab"}, trainer={"beta": 1})
    assert list(attrs)[:3] == ["kind", "features", "model"] and attrs["trainer"] == {"beta": 1}
    assert set(EMBEDDING_KINDS) == {"baseline", "autoencoder", "cnn"}
    with pytest.raises(InputError, match="unknown embedding kind"):
        embedding_attrs("pca", "x")


def test_write_embedding_resumes_by_path_and_keeps_the_attrs(tmp_path):
    path = tmp_path / "cells.h5"
    with CellStore.create(path, roi_shape=(2, 1, 1), crop_shape=None, provenance={}) as store:
        for i in range(5):
            store.add_image(f"{i}.png", "lab", "a", cells={"box": np.zeros((1, 4)), "score": np.ones(1),
                                                          "mask_area": np.ones(1), "roi": np.full((1, 2, 1, 1), i, np.float32)})
    calls = []
    stage = EmbeddingStage("mean", lambda store, rows: calls.append(rows) or store.roi(rows).reshape(-1, 2),
                           embedding_attrs("baseline", "the RoI features"))
    assert write_embedding(path, stage, block=2, progress=False) == 5 and len(calls) == 3
    assert write_embedding(path, stage, block=2, progress=False) == 0 and len(calls) == 3  # resumed: nothing left
    with CellStore.open(path) as store:
        assert store.embedding_attrs("mean") == dict(stage.attrs)
        np.testing.assert_array_equal(store.embedding("mean")[:, 0], np.arange(5))


def test_old_import_paths_keep_working():
    from aecfe.store import CellStore as again, StoreCells, load_training_cells, model_identity  # noqa: F401
    from aecfe.pipeline import EmbeddingStage as stage_class

    assert again is CellStore and stage_class is EmbeddingStage
    with pytest.raises(AttributeError):
        import aecfe.store

        aecfe.store.no_such_name  # noqa: B018
