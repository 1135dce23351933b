"""The train_dg command (aecfe/cli/train_dg.py): a tiny end-to-end run on the synthetic labs, resume, the
hyper-parameter plumbing, and the scoring of outside predictions it relies on (aecfe.evaluation)."""
import numpy as np
import pandas as pd
import pytest

from aecfe.cli.train_dg import algorithm_hparams, main, parse_hparams
from aecfe.errors import InputError
from aecfe.evaluation import COST_COLUMNS, Predictions, evaluate_cross_domain, score_predictions
from classifiers.heads import make_head

TINY_RUN = ["--synthetic", "--synthetic-n", "12", "--synthetic-size", "24", "--backbone", "tiny",
            "--image-size", "16", "--steps", "3", "--batch-size", "2", "--few-shot-k", "2",
            "--hparam", "FewShotFinetune.epochs=1", "--threads", "1"]


def _log_lines(root):
    return {path: len(path.read_text().splitlines()) for path in sorted(root.rglob("log.jsonl"))}


def test_tiny_synthetic_run_writes_every_table_and_resumes_without_training(tmp_path):
    out = tmp_path / "dg"
    assert main([*TINY_RUN, "--algorithm", "ERM", "Oracle", "FewShot", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary_f1_macro.csv", index_col=0)
    assert list(summary.index) == ["ERM", "Oracle", "FewShot_k0", "FewShot_k2"]
    assert list(summary.columns) == ["lab_a", "lab_b", "lab_c", "mean"]
    assert (out / "summary_f1_micro.csv").is_file() and "## f1_micro" in (out / "summary.md").read_text()
    erm = pd.read_csv(out / "ERM" / "scores.csv")
    assert len(erm) == 3 and set(erm["protocol"]) == {"lodo"} and erm["f1_macro"].between(0, 1).all()
    oracle = pd.read_csv(out / "Oracle" / "scores.csv")
    assert set(oracle["protocol"]) == {"matrix"} and len(oracle) == 2 * 9  # both matrix variants, 3 x 3
    few = pd.read_csv(out / "FewShot_k2" / "scores.csv")
    # scored on the held-out domain without its labelled shots (at most 2 per class)
    whole = pd.read_csv(out / "FewShot_k0" / "scores.csv").set_index("test_domain")["n_test"]
    shots = whole - few.set_index("test_domain")["n_test"]
    assert (shots > 0).all() and (shots <= 2 * 5).all()
    for head in ("ERM", "Oracle", "FewShot_k2"):
        assert (out / head / "per_class.csv").is_file() and (out / head / "report.md").is_file()
        assert list((out / head / "confusion").rglob("*.png"))
    assert (out / "train_dg.log").is_file()
    logs = _log_lines(out / "runs")
    assert len(logs) == 3 + 3 + 3 * 2  # ERM and Oracle folds; per held-out lab: the source and one fine-tuning
    assert main([*TINY_RUN, "--algorithm", "ERM", "Oracle", "FewShot", "--out", str(out)]) == 0
    assert _log_lines(out / "runs") == logs  # every finished training was loaded, none ran again
    assert pd.read_csv(out / "summary_f1_macro.csv", index_col=0).equals(summary)


def test_bad_arguments_exit_with_a_clear_error(tmp_path, caplog):
    assert main(["--out", str(tmp_path), "--algorithm", "ERM"]) == 2
    assert "--domains-root" in caplog.text
    assert main(["--synthetic", "--out", str(tmp_path), "--hparam", "ERM.not_a_key=1"]) == 2
    assert "not_a_key" in caplog.text


def test_hyper_parameters_scale_the_schedule_and_explicit_values_win():
    common = {"backbone": "tiny", "weights": None, "image_size": 16, "batch_size": 4, "lr": 1e-3}
    sada = algorithm_hparams("SADA", common, 800, None, {})
    assert sada["stage1_steps"] == 400 and sada["steps"] == 800 and sada["checkpoint_every"] == 80
    assert sada["batch_size"] == 4 and "weights" not in sada  # None means the default
    boda = algorithm_hparams("BoDA", common, 1000, 50, {})
    assert boda["boda_start_step"] == 120 and boda["checkpoint_every"] == 50  # not before the first centroids
    assert algorithm_hparams("BoDA", common, 1000, None, {"feat_update_freq": 50})["boda_start_step"] == 100
    few = algorithm_hparams("FewShot", common, 10, None, {})
    assert "batch_size" not in few and few["epochs"] is None and few["include_top"] is False
    dann = algorithm_hparams("DANN", common, None, None, {"lr_d": 0.5})
    assert dann["lr_g"] == 1e-3 and dann["lr_d"] == 0.5 and "steps" not in dann
    assert parse_hparams(["BoDA.nu=1.0", "SADA.jitter=[0.1, 0.1, 0.1, 0.1]"]) == {
        "BoDA": {"nu": 1.0}, "SADA": {"jitter": (0.1, 0.1, 0.1, 0.1)}}
    for bad, message in (("nu=1", "ALGO.KEY=VALUE"), ("Nope.nu=1", "unknown algorithm"),
                         ("BoDA.nu_typo=1", "nu_typo")):
        with pytest.raises(InputError, match=message):
            parse_hparams([bad])


def test_score_predictions_reproduces_evaluate_cross_domain_and_the_in_domain_row():
    rng = np.random.default_rng(0)
    y = np.array(["a", "b", "c"] * 20)
    domains = np.repeat(["x", "y", "z"], 20)
    X = rng.normal(size=(60, 3)) + 2 * (y[:, None] == np.array(["a", "b", "c"]))
    result = evaluate_cross_domain(X, y, domains, head="linear", seeds=(0,))
    predictions = []
    for target in ("x", "y", "z"):
        train = np.flatnonzero(domains != target)
        test = np.flatnonzero(domains == target)
        model = make_head("linear", random_state=0).fit(X[train], y[train])
        predictions.append(Predictions(0, "lodo", "whole_domain", "+".join(sorted({"x", "y", "z"} - {target})),
                                       target, "all", test, model.predict(X[test]), model.classes_, len(train)))
    outside = score_predictions(predictions, y, domains, "linear")
    assert outside.summary("f1_macro", "lodo").equals(result.summary("f1_macro", "lodo"))
    assert outside.per_class.equals(result.per_class[result.per_class["protocol"] == "lodo"].reset_index(drop=True))
    assert outside.scores[list(COST_COLUMNS)].isna().all().all()  # made elsewhere: nothing was timed here
    with pytest.raises(InputError, match="variant"):
        score_predictions([Predictions(0, "lodo", "nope", "x", "y", "all", [0], ["a"], ["a"], 1)], y, domains, "h")
    row = result.in_domain_summary("accuracy")
    matrix = result.summary("accuracy", "matrix", "test_split")
    assert [row.loc["same domain", d] for d in "xyz"] == [matrix.loc[d, d] for d in "xyz"]
    assert list(row.columns) == ["x", "y", "z", "mean"]
