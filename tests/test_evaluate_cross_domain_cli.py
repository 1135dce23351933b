"""The evaluate_cross_domain command: its core on arrays, and end to end on a small cell store."""
import numpy as np
import pandas as pd
import pytest

from aecfe.cli.evaluate_cross_domain import main, parse_head_params
from aecfe.reporting import run_evaluation
from aecfe.taxonomy import relabel
from aecfe.errors import InputError


def _data(n_per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    X, y, d = [], [], []
    for k, domain in enumerate(["lab_a", "lab_b"]):
        for c, label in enumerate(["neutrophil", "lymphocyte", "monocyte"]):
            X.append(rng.normal(size=(n_per_class, 4)) + 4 * np.eye(4)[c] + k)
            y += [label] * n_per_class
            d += [domain] * n_per_class
    return np.vstack(X), np.array(y, dtype=object), np.array(d)


def test_run_evaluation_writes_tables_and_figures(tmp_path, caplog):
    X, y, d = _data()
    y[:5] = None  # unlabelled cells are left out, with a logged count
    caplog.set_level("INFO")
    results = run_evaluation(X, y, d, tmp_path, heads=("rf", "linear"), seeds=(0, 1),
                             head_params={"rf": {"n_estimators": 5, "n_jobs": 1}}, umap_max_points=30)
    assert "5 of 72 samples have no label" in caplog.text
    assert set(results) == {"rf", "linear"}
    lodo = results["rf"].scores.query("protocol == 'lodo'").set_index("test_domain")["n_train"]
    assert set(lodo["lab_a"]) == {36} and set(lodo["lab_b"]) == {31}  # every labelled cell of the other lab
    for head in ("rf", "linear"):
        assert (tmp_path / head / "report.md").is_file()
        assert len(pd.read_csv(tmp_path / head / "scores.csv")) == len(results[head].scores)
        pngs = sorted((tmp_path / head / "confusion").rglob("*.png"))
        assert len(pngs) == 2 * 4 + 2  # matrix: 2 variants x 2x2, lodo: 2 held-out domains
    summary = (tmp_path / "summary.md").read_text()
    assert "## rf: matrix / test_split / accuracy" in summary and "## linear: lodo / whole_domain" in summary
    assert (tmp_path / "umap_by_domain.png").stat().st_size > 0 and (tmp_path / "umap_by_class.png").is_file()


def test_head_params_and_relabel():
    params = parse_head_params(["rf.n_estimators=7", "rf.max_depth=None", "xgboost.learning_rate=0.3"],
                               ["rf", "xgboost", "linear"], class_weight="balanced", n_jobs=1)
    assert params["rf"] == {"class_weight": "balanced", "n_jobs": 1, "n_estimators": 7, "max_depth": None}
    assert params["linear"] == {"class_weight": "balanced"} and params["xgboost"]["learning_rate"] == 0.3
    with pytest.raises(InputError, match="HEAD.PARAM=VALUE"):
        parse_head_params(["n_estimators=7"], ["rf"], None, None)
    assert list(relabel(["NGS", "EBO"], ["matek19", "matek19"], "five")) == ["neutrophil", None]
    assert list(relabel(["neutrophil", "platelet"], ["x", "y"], "five", label_dataset="canonical")) == [
        "neutrophil", None]


def test_main_on_a_cell_store(tmp_path):
    store_module = pytest.importorskip("aecfe.store")
    X, y, d = _data(n_per_class=10)
    y[0] = None
    path = tmp_path / "cells.h5"
    with store_module.CellStore.create(path, roi_shape=(2, 2, 2), crop_shape=None, provenance={"test": True}) as store:
        for i, (features, label, domain) in enumerate(zip(X, y, d)):
            store.add_image(f"{domain}/{i}.png", domain, label, cells={
                "box": np.array([[0, 0, 8, 8]], np.float32), "score": np.ones(1), "mask_area": np.array([40]),
                "roi": np.tile(features[:2], 4).reshape(1, 2, 2, 2).astype(np.float32)})
        store.flush()
        store.write_embedding("ae", 0, X)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--features", "ae", "--head", "rf", "--head-param",
                 "rf.n_estimators=5", "--seeds", "0", "--protocol", "matrix", "--no-umap", "--n-jobs", "1",
                 "--scheme", "five", "--label-dataset", "canonical"]) == 0
    scores = pd.read_csv(out / "rf" / "scores.csv")
    assert set(scores["protocol"]) == {"matrix"} and scores["n_train"].max() == 24  # 29 labelled in lab_a -> 80 %
    assert main([str(path), "--out", str(tmp_path / "roi"), "--features", "roi", "--head", "linear",
                 "--seeds", "0", "--protocol", "lodo", "--no-umap", "--no-confusion-png"]) == 0
    assert (tmp_path / "roi" / "linear" / "summary_lodo_whole_domain_f1_macro.csv").is_file()
    assert main([str(path), "--out", str(out), "--features", "missing", "--no-umap"]) == 2
    assert main([str(path), "--out", str(tmp_path / "shots"), "--features", "ae", "--head", "linear", "--seeds", "0",
                 "--few-shot-k", "0,2", "--scheme", "five", "--label-dataset", "canonical"]) == 0
    shots = pd.read_csv(tmp_path / "shots" / "linear_k2" / "scores.csv")  # only the few-shot rows ran
    assert sorted((tmp_path / "shots").iterdir()) == [tmp_path / "shots" / "linear_k0", tmp_path / "shots" / "linear_k2"]
    assert set(shots["test_part"]) == {"all_but_2_shots_per_class"} and len(shots) == 2  # one row per held-out lab
