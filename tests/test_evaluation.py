"""Cross-domain evaluation: splits, the matrix and leave-one-domain-out protocols, metrics, reports."""
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from aecfe.errors import InputError
from aecfe.evaluation import COST_COLUMNS, evaluate_cross_domain
from aecfe.splits import domain_splits
from aecfe.metrics import classification_scores, per_class_report

CLASSES = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")
FAST_RF = {"n_estimators": 10, "n_jobs": 1}


def shifted_blobs(n_per_class=40, domains=("lab_a", "lab_b", "lab_c"), missing=None, shift=2.5, seed=0):
    """Gaussian class blobs in 6-d; domain k adds a shift of ``k * shift`` along a domain direction and a
    rotation-like mix, so a model trained in one domain transfers imperfectly. ``missing``: {domain: class}."""
    rng = np.random.default_rng(seed)
    X, y, d = [], [], []
    for k, domain in enumerate(domains):
        mix = np.eye(6) + 0.5 * k * rng.normal(size=(6, 6))
        for c, label in enumerate(CLASSES):
            if missing and missing.get(domain) == label:
                continue
            points = rng.normal(size=(n_per_class, 6)) + 5 * np.eye(6)[c]
            X.append(points @ mix + k * shift * np.eye(6)[5])
            y += [label] * n_per_class
            d += [domain] * n_per_class
    return np.vstack(X), np.array(y), np.array(d)


@pytest.fixture(scope="module")
def result():
    X, y, d = shifted_blobs()
    return evaluate_cross_domain(X, y, d, head="rf", head_params=FAST_RF, seeds=(0, 1),
                                 lodo_variants=("whole_domain", "domainbed"))


def test_domain_splits_are_stratified_disjoint_and_reusable():
    _, y, d = shifted_blobs(n_per_class=20)
    splits = domain_splits(y, d, seed=3)
    assert list(splits) == ["lab_a", "lab_b", "lab_c"]
    for domain, split in splits.items():
        assert split.stratified and split.reason == ""
        assert np.intersect1d(split.train, split.test).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([split.train, split.test])), np.flatnonzero(d == domain))
        assert len(split.test) == 16 and set(np.unique(y[split.test], return_counts=True)[1]) == {4}
    again = domain_splits(y, d, seed=3)
    np.testing.assert_array_equal(again["lab_b"].test, splits["lab_b"].test)
    assert not np.array_equal(domain_splits(y, d, seed=4)["lab_b"].test, splits["lab_b"].test)
    # a domain's split does not depend on the other domains being present
    only_b = d == "lab_b"
    alone = domain_splits(y[only_b], d[only_b], seed=3)["lab_b"]
    np.testing.assert_array_equal(np.flatnonzero(only_b)[alone.test], splits["lab_b"].test)


def test_domain_splits_fall_back_to_unstratified_with_a_reason(caplog):
    y = np.array(["a"] * 10 + ["b"] * 10 + ["rare"])
    d = np.array(["lab"] * 21)
    split = domain_splits(y, d, seed=0)["lab"]
    assert not split.stratified and "'rare' has 1 sample" in split.reason
    assert "unstratified split" in caplog.text
    assert len(split.test) == 5 and len(split.train) == 16
    single = domain_splits(np.array(["a"]), np.array(["tiny"]), seed=0)["tiny"]
    assert len(single.train) == 1 and len(single.test) == 0 and "no test part" in single.reason


def test_in_domain_beats_cross_domain(result):
    rows = result.scores[(result.scores["protocol"] == "matrix") & (result.scores["variant"] == "test_split")]
    diagonal = rows[rows["train_domain"] == rows["test_domain"]]["accuracy"].mean()
    off_diagonal = rows[rows["train_domain"] != rows["test_domain"]]["accuracy"].mean()
    assert diagonal > 0.9
    assert diagonal > off_diagonal + 0.1


def test_matrix_shape_and_summary_strings(result):
    table = result.summary("accuracy")
    assert table.shape == (3, 3)
    assert list(table.index) == list(table.columns) == ["lab_a", "lab_b", "lab_c"]
    assert table.index.name == "trained on" and table.columns.name == "tested on"
    assert all(" ± " in cell for cell in table.to_numpy().ravel())
    lodo = result.summary("f1_macro", protocol="lodo")
    assert list(lodo.columns) == ["lab_a", "lab_b", "lab_c", "mean"] and len(lodo) == 1


def test_both_matrix_variants_and_lodo_variants(result):
    scores = result.scores
    matrix = scores[scores["protocol"] == "matrix"]
    assert len(matrix) == 2 * 3 * 3 * 2  # seeds x train x test x variants
    whole = matrix[matrix["variant"] == "whole_domain"]
    cross = whole[whole["train_domain"] != whole["test_domain"]]
    assert set(cross["test_part"]) == {"all"} and set(cross["n_test"]) == {160}
    assert set(whole[whole["train_domain"] == whole["test_domain"]]["test_part"]) == {"test_split"}
    assert set(matrix[matrix["variant"] == "test_split"]["n_test"]) == {32}
    lodo = scores[scores["protocol"] == "lodo"]
    by_variant = lodo.groupby("variant")
    assert set(by_variant.get_group("whole_domain")["n_train"]) == {320}
    assert set(by_variant.get_group("whole_domain")["n_test"]) == {160}
    assert set(by_variant.get_group("domainbed")["n_train"]) == {256}
    assert set(by_variant.get_group("domainbed")["n_test"]) == {128}
    assert set(by_variant.get_group("domainbed")["test_part"]) == {"train_split"}
    assert set(lodo["train_domain"]) == {"lab_b+lab_c", "lab_a+lab_c", "lab_a+lab_b"}


def test_seeds_aggregate(result):
    aggregate = result.aggregate()
    assert set(aggregate["n_seeds"]) == {2}
    row = aggregate[(aggregate["protocol"] == "matrix") & (aggregate["variant"] == "test_split")
                    & (aggregate["train_domain"] == "lab_a") & (aggregate["test_domain"] == "lab_b")
                    & (aggregate["metric"] == "f1_macro")].iloc[0]
    per_seed = result.scores.query("protocol == 'matrix' and variant == 'test_split' and train_domain == 'lab_a' "
                                   "and test_domain == 'lab_b'")["f1_macro"]
    assert row["mean"] == pytest.approx(per_seed.mean()) and row["std"] == pytest.approx(np.std(per_seed))
    assert result.summary("f1_macro").loc["lab_a", "lab_b"] == f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}"


def test_confusion_sums_over_seeds(result):
    counts = result.confusion[("matrix", "test_split", "lab_a", "lab_c")]
    assert list(counts.index) == list(counts.columns) == list(CLASSES)
    assert counts.to_numpy().sum() == 2 * 32
    assert counts.sum(axis=1).tolist() == [16] * 4  # stratified: 8 per class and seed


def test_same_seed_is_deterministic():
    X, y, d = shifted_blobs(n_per_class=15)
    order = ("lab_c", "lab_a", "lab_b")
    first = evaluate_cross_domain(X, y, d, head="rf", head_params=FAST_RF, seeds=(5,), protocols=("matrix",),
                                  domain_order=order)
    second = evaluate_cross_domain(X, y, d, head="rf", head_params=FAST_RF, seeds=(5,), protocols=("matrix",),
                                   domain_order=order)
    assert tuple(first.summary().index) == tuple(first.summary().columns) == order
    pd.testing.assert_frame_equal(first.scores.drop(columns=list(COST_COLUMNS)),
                                  second.scores.drop(columns=list(COST_COLUMNS)))
    pd.testing.assert_frame_equal(first.per_class, second.per_class)


def test_every_model_is_timed_once_per_fit_and_per_predicted_sample():
    X, y, d = shifted_blobs(n_per_class=15)
    scores = evaluate_cross_domain(X, y, d, head="rf", head_params=FAST_RF, seeds=(0,)).scores
    assert (scores[list(COST_COLUMNS)] > 0).all().all()
    # one fit per (protocol, variant-of-training, training domain): its rows share the fit time
    matrix = scores[scores["protocol"] == "matrix"]
    assert (matrix.groupby("train_domain")["fit_s"].nunique() == 1).all()
    assert matrix["fit_s"].nunique() == 3


def test_class_missing_in_a_domain_is_reported_not_a_crash():
    X, y, d = shifted_blobs(n_per_class=20, missing={"lab_b": "monocyte"})
    result = evaluate_cross_domain(X, y, d, head="linear", seeds=(0,))
    rows = result.scores.set_index(["protocol", "variant", "train_domain", "test_domain"])
    assert rows.loc[("matrix", "test_split", "lab_b", "lab_a"), "classes_missing_in_train"] == "monocyte"
    assert rows.loc[("matrix", "test_split", "lab_b", "lab_a"), "n_test_missing_in_train"] == 4
    assert rows.loc[("matrix", "test_split", "lab_a", "lab_b"), "classes_missing_in_train"] == ""
    assert rows.loc[("matrix", "test_split", "lab_a", "lab_b"), "n_classes_test"] == 3  # macro over present
    report = result.per_class.query("protocol == 'matrix' and train_domain == 'lab_b' and test_domain == 'lab_a' "
                                    "and variant == 'test_split'").set_index("class")
    assert not report.loc["monocyte", "in_train"] and report.loc["monocyte", "recall"] == 0
    assert "monocyte" in result.markdown()


def test_single_class_domain_trains_or_is_skipped_with_reason():
    X, y, d = shifted_blobs(n_per_class=10)
    only_neutrophils = np.r_[X, np.full((12, 6), 9.0)], np.r_[y, ["neutrophil"] * 12], np.r_[d, ["lab_z"] * 12]
    ours = evaluate_cross_domain(*only_neutrophils, head="rf", head_params=FAST_RF, seeds=(0,), protocols=("matrix",))
    from_z = ours.scores[ours.scores["train_domain"] == "lab_z"]
    assert len(from_z) == 8 and set(from_z["n_classes_train"]) == {1}
    assert (ours.summary("accuracy").loc["lab_z", "lab_z"]) == "100.0 ± 0.0"
    # a head that refuses a single class (plain LogisticRegression) is reported as skipped, not a crash
    plain = evaluate_cross_domain(*only_neutrophils, head=LogisticRegression, seeds=(0,), protocols=("matrix",))
    assert plain.config["head"] == "LogisticRegression"
    skipped = plain.skipped[plain.skipped["train_domain"] == "lab_z"]
    assert len(skipped) == 1 and "training failed" in skipped["reason"].iloc[0]
    assert "lab_z" not in set(plain.scores["train_domain"]) and plain.summary().shape == (3, 4)


def test_files_written(result, tmp_path):
    written = result.to_files(tmp_path / "rf")
    names = {path.name for path in written}
    assert {"scores.csv", "per_class.csv", "aggregate.csv", "confusion.csv", "splits.csv", "report.md",
            "summary_matrix_test_split_accuracy.csv", "summary_lodo_domainbed_f1_macro.csv"} <= names
    assert all(path.is_file() and path.stat().st_size > 0 for path in written)
    scores = pd.read_csv(tmp_path / "rf" / "scores.csv")
    assert len(scores) == len(result.scores)
    summary = pd.read_csv(tmp_path / "rf" / "summary_matrix_test_split_accuracy.csv", index_col=0)
    assert summary.shape == (3, 3)
    report = (tmp_path / "rf" / "report.md").read_text()
    assert "## matrix / test_split / accuracy" in report and "| lab_a" in report


def test_bad_input_is_rejected_clearly():
    X, y, d = shifted_blobs(n_per_class=5)
    y = y.astype(object)
    y[0] = None
    with pytest.raises(InputError, match="1 of 60 labels are missing"):
        evaluate_cross_domain(X, y, d)
    with pytest.raises(InputError, match="same length"):
        evaluate_cross_domain(X[:-1], y, d)
    with pytest.raises(InputError, match="protocol"):
        evaluate_cross_domain(X[1:], y[1:], d[1:], protocols=("loo",))
    with pytest.raises(InputError, match="domain_order"):
        evaluate_cross_domain(X[1:], y[1:], d[1:], domain_order=("lab_a", "lab_b"))


def test_macro_metrics_use_classes_present_in_the_test_set():
    y_true = ["a", "a", "b", "b"]
    y_pred = ["a", "a", "b", "c"]  # "c": a class the test set lacks
    scores = classification_scores(y_true, y_pred, train_classes=["a", "b", "c"])
    assert scores["accuracy"] == scores["f1_micro"] == 0.75
    assert scores["f1_macro"] == pytest.approx((1.0 + 2 / 3) / 2)  # over a and b only, not c
    assert scores["balanced_accuracy"] == pytest.approx(0.75)
    assert scores["classes_missing_in_train"] == "" and scores["n_classes_test"] == 2
    report = per_class_report(y_true, y_pred, train_classes=["a", "b", "c"]).set_index("class")
    assert np.isnan(report.loc["c", "recall"]) and report.loc["c", "support"] == 0
    assert report.loc["c", "n_predicted"] == 1 and not report.loc["c", "in_test"]


# ------------------------------------------------------------------------------------------ issue 11: groups
def _with_copies(n_per_domain=40, seed=0):
    """Two domains, three classes; every 4th sample of a domain is a copy of the one before it, and one image
    of domain a is copied into domain b."""
    rng = np.random.default_rng(seed)
    domains = np.repeat(["a", "b"], n_per_domain)
    y = np.tile(np.arange(3), 2 * n_per_domain // 3 + 1)[: 2 * n_per_domain].astype(str)
    groups = np.array([f"g{i}" for i in range(2 * n_per_domain)], dtype=object)
    for i in range(3, 2 * n_per_domain, 4):
        groups[i], y[i] = groups[i - 1], y[i - 1]
    groups[n_per_domain] = groups[0]  # an image of a, copied into b
    X = rng.normal(size=(2 * n_per_domain, 4)) + y.astype(int)[:, None]
    return X, y, domains, groups


def test_grouped_splits_keep_every_copy_on_one_side():
    X, y, domains, groups = _with_copies()
    for seed in range(5):
        for split in domain_splits(y, domains, seed, groups=groups).values():
            assert not set(groups[split.train]) & set(groups[split.test])
            assert len(split.train) + len(split.test) == (domains == split.domain).sum()
    ungrouped = domain_splits(y, domains, 3)
    unique = domain_splits(y, domains, 3, groups=np.arange(len(y)))  # singleton groups: the same splits
    assert all(np.array_equal(ungrouped[d].test, unique[d].test) for d in ungrouped)
    copies_split = any(set(groups[s.train]) & set(groups[s.test]) for seed in range(5)
                       for s in domain_splits(y, domains, seed).values())
    assert copies_split  # what grouping prevents: without it copies land on both sides


def test_evaluate_cross_domain_reports_copies_across_domains():
    X, y, domains, groups = _with_copies()
    result = evaluate_cross_domain(X, y, domains, head=LogisticRegression, seeds=(0,), protocols=("matrix",),
                                   groups=groups)
    assert result.config["groups_across_domains"] == {"groups": 1, "samples": 2}
    assert "## Copies across domains" in result.markdown()
    with pytest.raises(InputError, match="groups"):
        evaluate_cross_domain(X, y, domains, head=LogisticRegression, groups=groups[:5])


def test_held_out_runs_only_the_chosen_leave_one_domain_out_folds():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = np.array(["a", "b"] * 30)
    domains = np.repeat(["d1", "d2", "d3"], 20)
    result = evaluate_cross_domain(X, y, domains, head="linear", seeds=[0], protocols=["lodo"], held_out=["d2"])
    assert set(result.scores["test_domain"]) == {"d2"} and result.config["held_out"] == ["d2"]
    with pytest.raises(InputError, match="held-out domain"):
        evaluate_cross_domain(X, y, domains, head="linear", seeds=[0], protocols=["lodo"], held_out=["d9"])
