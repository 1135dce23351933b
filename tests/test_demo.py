"""The README's main command at a tiny size: synthetic labs -> detector -> store -> autoencoder -> heads -> tables."""
import json

import numpy as np

from aecfe.cli.demo import main
from aecfe.store import CellStore

TINY = ["--n-per-domain", "8", "--detector-fields", "2", "--detector-steps", "2", "--ae-epochs", "1",
        "--ae-batch", "8", "--seeds", "0", "--no-umap", "--no-progress"]


def test_demo_end_to_end_writes_store_tables_and_caches_stages(tmp_path, capsys):
    assert main(["--out", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    with CellStore.open(tmp_path / "cells.h5") as store:
        assert sorted(store.embedding_names()) == ["ae_mmd", "raw_pixels", "rcnn_roi"]
        X, y, domains = store.arrays("ae_mmd", labelled_only=True)
        assert store.roi(slice(0, 2)).shape == (2, 256, 14, 14) and store.crops(slice(0, 2)).shape == (2, 3, 128, 128)
        assert store.provenance["detector"]["weights_sha256"]
    # every single-cell image gives one cell (a detection or the centred fallback box)
    assert X.shape == (24, 50) and np.isfinite(X).all() and sorted(set(domains)) == ["lab_a", "lab_b", "lab_c"]
    report = json.loads((tmp_path / "cells.h5.report.json").read_text())
    assert report["totals"]["images"] == 24 and report["totals"]["cells"] == 24
    for features in ("ae_mmd", "rcnn_roi", "raw_pixels"):
        for head in ("linear", "rf"):
            assert (tmp_path / features / head / "report.md").exists()
    assert "leave-one-lab-out macro-F1" in out and out.count("| ae_mmd") == 2
    comparison = (tmp_path / "comparison.csv").read_text().splitlines()
    assert len(comparison) == 1 + 3 * 2

    # a second run reuses every stage: same store content, no retraining
    checkpoint_time = (tmp_path / "autoencoder" / "checkpoint.pt").stat().st_mtime_ns
    assert main(["--out", str(tmp_path), *TINY, "--heads", "linear"]) == 0
    assert (tmp_path / "autoencoder" / "checkpoint.pt").stat().st_mtime_ns == checkpoint_time
    with CellStore.open(tmp_path / "cells.h5") as store:
        assert len(store) == 24
        np.testing.assert_array_equal(store.arrays("ae_mmd", labelled_only=True)[0], X)

