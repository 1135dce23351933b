"""The embedding heads' few-shot rows (aecfe.few_shot): leave one domain out with the k labelled cells of the
shared selection added to the head, scored on the rest of the held-out domain; the comparison report's table."""
import numpy as np

from aecfe.few_shot import few_shot_heads, run_few_shot_rows, shot_split
from aecfe.splits import few_shot_selection


def labs(n=40, seed=0):
    """Three domains whose class clusters sit elsewhere in the third (a shift only target labels can fix)."""
    rng = np.random.default_rng(seed)
    y = np.tile(["a", "b"], 3 * n // 2)
    domains = np.repeat(["lab1", "lab2", "lab3"], n)
    X = rng.normal(size=(3 * n, 2)) * 0.3 + np.where(y == "a", 1.0, -1.0)[:, None]
    X[domains == "lab3"] *= -1  # classes swapped in lab3
    groups = np.array([f"img{i // 2}" for i in range(3 * n)])  # two cells per image
    return X, y, domains, groups


def test_shots_are_the_shared_selection_and_never_scored():
    X, y, domains, groups = labs()
    target = np.flatnonzero(domains == "lab3")
    shots, scored = shot_split(y, groups, target, 3, seed=1)
    assert np.array_equal(shots, few_shot_selection(y, 3, 1, keys=groups, candidates=target))
    assert not set(groups[shots]) & set(groups[scored]) and set(scored) | set(shots) == set(target)
    assert shot_split(y, groups, target, 0, 1)[1].tolist() == sorted(target)


def test_k_labelled_target_cells_enter_the_training_set_and_help():
    X, y, domains, groups = labs()
    results = few_shot_heads(X, y, domains, groups, "linear", shots=(0, 5), seeds=(0,), held_out=["lab3"])
    assert sorted(results) == ["linear_k0", "linear_k5"]
    k0, k5 = (results[name].scores.iloc[0] for name in ("linear_k0", "linear_k5"))
    n_source = int((domains != "lab3").sum())
    assert k0["n_train"] == n_source and k0["n_test"] == 40 and k0["test_part"] == "all"
    shots = few_shot_selection(y, 5, 0, keys=groups, candidates=np.flatnonzero(domains == "lab3"))
    assert k5["n_train"] == n_source + len(shots) and k5["n_test"] == 40 - len(shots)
    assert k5["test_part"] == "all_but_5_shots_per_class" and k5["protocol"] == "lodo"
    assert k0["f1_macro"] < 0.3  # swapped classes: without target labels the head is wrong on lab3


def test_rows_are_written_where_the_comparison_report_finds_them(tmp_path):
    from aecfe.comparison.report import collect_scores, few_shot_table, results_table

    X, y, domains, groups = labs(20)
    y = y.astype(object)
    y[0] = ""  # an unlabelled cell is left out
    run_few_shot_rows(X, y, domains, groups, tmp_path / "AE-CFE", heads=["rf"], shots=(0, 5),
                      head_params={"rf": {"n_estimators": 5}})
    assert (tmp_path / "AE-CFE" / "rf_k5" / "scores.csv").exists()
    table = few_shot_table(results_table(collect_scores(tmp_path)))
    assert list(table.columns) == ["method", "head", "k=0", "k=5"] and table.loc[0, "head"] == "rf"
    assert table.loc[0, "method"] == "AE-CFE" and table.loc[0, "k=5"] != "—"
    scores = collect_scores(tmp_path)
    plain = results_table(scores[scores["head"] == "rf_k0"].assign(head="rf"))
    assert few_shot_table(plain).empty  # no few-shot head: no table
