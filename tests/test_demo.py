"""The README's main command at a tiny size: synthetic labs -> store -> embedding -> heads -> tables."""
import numpy as np
import pytest

from aecfe.cli.demo import block_average, main
from aecfe.store import CellStore


def test_block_average_means_each_block():
    images = np.zeros((1, 3, 4, 4), dtype=np.uint8)
    images[0, 0, :2, :2] = 255
    features = block_average(images, 2)
    assert features.shape == (1, 12)
    assert features[0, 0] == pytest.approx(1.0) and features[0, 1:].max() == 0.0
    with pytest.raises(ValueError, match="multiple"):
        block_average(np.zeros((1, 3, 6, 6), np.uint8), 4)


def test_demo_end_to_end_writes_store_and_tables(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--n-per-domain", "24", "--seeds", "0", "--pixels", "8"]) == 0
    with CellStore.open(tmp_path / "cells.h5") as store:
        X, y, domains = store.arrays("raw_pixels", labelled_only=True)
    assert X.shape == (72, 3 * 8 * 8) and sorted(set(domains)) == ["lab_a", "lab_b", "lab_c"]
    for head in ("linear", "rf"):
        assert (tmp_path / "raw_pixels" / head / "report.md").exists()
    assert (tmp_path / "raw_pixels" / "umap_by_domain.png").exists()
    assert "linear: matrix / test_split / f1_macro" in capsys.readouterr().out
