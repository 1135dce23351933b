"""The sweep benchmark's linear yardstick: principal components of the scaled RoI maps, streamed from the store."""
import numpy as np
import pytest
import torch
from autoencoder_sweep import pca_codes
from sklearn.decomposition import PCA

from aecfe.store import CellStore
from extractors.autoencoder import scale_roi_features


def low_rank_store(path, n_cells=23, rank=3, noise=0.0):
    """Cells whose RoI maps are mean + a mix of ``rank`` fixed maps (+ noise), in two labs."""
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((rank, 256 * 14 * 14)).astype(np.float32)
    with CellStore.create(path, provenance={"detector": None}, chunk_cells=4) as store:
        for i in range(n_cells):
            roi = 5 + rng.standard_normal(rank).astype(np.float32) @ basis
            roi += noise * rng.standard_normal(roi.shape).astype(np.float32)
            store.add_image(f"cell{i}.png", "labA" if i % 2 else "labB", cells={
                "box": np.array([[0, 0, 10, 10]], np.float32), "score": np.array([0.9]), "mask_area": np.array([80]),
                "crop": np.zeros((1, 3, 128, 128), np.uint8), "roi": roi.reshape(1, 256, 14, 14)})
    return path


def scaled_maps(path):
    with CellStore.open(path) as store:
        return scale_roi_features(torch.from_numpy(store.roi())).flatten(1).numpy()


def test_pca_codes_match_a_full_pca_of_the_scaled_maps_when_streamed_in_blocks(tmp_path):
    path = low_rank_store(tmp_path / "cells.h5", noise=0.3)
    codes, fvu = pca_codes(path, 4, block=8)  # 23 cells: blocks of 8, 8 and the last 7 merged into 15
    full = PCA(4).fit(scaled_maps(path))
    assert codes.shape == (23, 4) and codes.dtype == np.float32
    assert fvu == pytest.approx(1 - full.explained_variance_ratio_.sum(), abs=0.02)
    assert 0.05 < fvu < 1


def test_pca_of_maps_of_rank_k_leaves_almost_nothing_unexplained(tmp_path):
    path = low_rank_store(tmp_path / "cells.h5", rank=3)
    # min-max scaling is affine per cell: the scaled maps stay in the span of the three maps and the constant map
    assert pca_codes(path, 3, block=10)[1] < 0.05
    assert pca_codes(path, 1, block=10)[1] > 0.2


def test_too_few_cells_for_k_components_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot give 30 principal components"):
        pca_codes(low_rank_store(tmp_path / "cells.h5", n_cells=5), 30)
