"""AnnData export of a store's cells and one embedding (the .h5ad test runs when anndata is installed)."""
import json

import numpy as np
import pandas as pd
import pytest

from aecfe.errors import StoreError
from aecfe.store import CellStore


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "cells.h5"
    rng = np.random.default_rng(0)
    with CellStore.create(path, roi_shape=None, crop_shape=None, provenance={"detector": {"x": 1}}) as opened:
        images = [("lab_a", "neutrophil", 2), ("lab_b", None, 1), ("lab_b", "monocyte", 1)]
        for i, (domain, label, n) in enumerate(images):
            corner = rng.uniform(0, 50, (n, 2))
            opened.add_image(f"/img/{i}.png", domain, label, content_sha1=f"{i:040x}",
                             cells={"box": np.hstack([corner, corner + 10]), "score": np.full(n, 0.9),
                                    "mask_area": np.full(n, 80)})
        opened.add_image("/img/empty.png", "lab_b", None, status="undetected", reason="no cell found")
        opened.flush()
        opened.write_embedding("ae", 0, rng.normal(size=(4, 3)).astype(np.float32), attrs={"model": "m"})
    return path


def test_anndata_parts_hold_the_embedding_and_cell_metadata(store):
    from aecfe.export import anndata_parts

    parts = anndata_parts(store, "ae")
    with CellStore.open(store) as opened:
        expected = opened.embedding("ae")
    np.testing.assert_array_equal(parts["X"], expected)
    np.testing.assert_array_equal(parts["obsm"]["X_ae"], expected)
    obs = parts["obs"]
    assert list(obs.index) == ["0", "1", "2", "3"] and list(parts["var"].index) == ["ae_0", "ae_1", "ae_2"]
    assert isinstance(obs["domain"].dtype, pd.CategoricalDtype) and list(obs["domain"]) == ["lab_a"] * 2 + ["lab_b"] * 2
    assert list(obs["label"].astype(object).where(obs["label"].notna(), None)) == ["neutrophil", "neutrophil", None,
                                                                                   "monocyte"]
    assert {"image_path", "cell_index", "x1", "y2", "score", "mask_area", "image_group"} <= set(obs.columns)
    assert json.loads(parts["uns"]["aecfe"]["embedding_attrs_json"]) == {"model": "m"}
    with pytest.raises(StoreError, match="no embedding 'cnn'"):
        anndata_parts(store, "cnn")


def test_h5ad_file_reads_back_with_anndata(store, tmp_path):
    anndata = pytest.importorskip("anndata")
    from aecfe.cli.export_anndata import main

    assert main([str(store), "--embedding", "ae", "--out", str(tmp_path / "cells.h5ad")]) == 0
    adata = anndata.read_h5ad(tmp_path / "cells.h5ad")
    assert adata.shape == (4, 3) and "X_ae" in adata.obsm and adata.obs["domain"].tolist()[0] == "lab_a"
    assert adata.uns["aecfe"]["embedding"] == "ae"


def test_missing_anndata_is_a_clear_error(store, tmp_path, monkeypatch):
    import builtins

    from aecfe.errors import InputError
    from aecfe.export import export_anndata

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "anndata" else real_import(name, *a, **k))
    with pytest.raises(InputError, match=r"pip install 'aecfe\[anndata\]'"):
        export_anndata(store, "ae", tmp_path / "x.h5ad")
