"""PNG figures: confusion matrices and 2-d embeddings (UMAP, PCA fallback)."""
import logging

import numpy as np
import pytest
from PIL import Image

from aecfe.metrics import confusion
from aecfe.plots import MIN_UMAP_POINTS, embed_2d, plot_confusion_matrix, plot_embedding, plot_scatter


def _assert_png(path, min_side=200):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side


def test_confusion_matrix_png(tmp_path):
    counts = confusion(["a", "a", "b", "c"], ["a", "b", "b", "a"], classes=["a", "b", "c", "absent"])
    path = plot_confusion_matrix(counts, tmp_path / "nested" / "cm.png", title="lab_a -> lab_b")
    assert path == tmp_path / "nested" / "cm.png"
    _assert_png(path)
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.ones((2, 3)), tmp_path / "bad.png")


def test_scatter_png(tmp_path):
    coords = np.random.default_rng(0).normal(size=(30, 2))
    path = plot_scatter(coords, ["x", "y", "z"] * 10, tmp_path / "scatter.png", title="t", legend_title="class")
    _assert_png(path)


def test_small_embedding_falls_back_to_pca(tmp_path, caplog):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(MIN_UMAP_POINTS - 1, 8))
    with caplog.at_level(logging.WARNING, logger="aecfe.plots"):
        paths = plot_embedding(X, rng.choice(["lab_a", "lab_b"], len(X)), rng.choice(["n", "l"], len(X)), tmp_path)
    assert "using PCA" in caplog.text
    assert [p.name for p in paths] == ["umap_by_domain.png", "umap_by_class.png"]
    for path in paths:
        _assert_png(path)


def test_embed_2d_subsamples_and_uses_umap():
    X = np.random.default_rng(0).normal(size=(300, 5))
    coords, rows, method = embed_2d(X, seed=0, max_points=MIN_UMAP_POINTS + 10)  # numba compiles: ~10 s
    assert method == "umap" and coords.shape == (len(rows), 2) == (MIN_UMAP_POINTS + 10, 2)
    assert np.all(np.diff(rows) > 0) and rows.max() < 300
    _, same_rows, _ = embed_2d(X, seed=0, max_points=20)
    np.testing.assert_array_equal(same_rows, embed_2d(X, seed=0, max_points=20)[1])
