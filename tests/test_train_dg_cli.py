"""The train_dg command (aecfe/cli/train_dg.py): a tiny end-to-end run on the synthetic labs, resume, argument
errors, and the scoring of outside predictions it relies on (aecfe.evaluation). The hyper-parameter plumbing is
tested in test_dg_hparams.py, the few-shot protocol in test_dg_fewshot_protocol.py."""
import numpy as np
import pandas as pd
import pytest

from aecfe.cli.train_dg import main
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
    with pytest.raises(SystemExit) as usage:  # the shared KEY=VALUE parser (aecfe.cli.key_value)
        main(["--synthetic", "--out", str(tmp_path), "--hparam", "BoDA.nu"])
    assert usage.value.code == 2


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
