"""aecfe.comparison: the plan's steps and the report built from every method's scores."""
import itertools
import re

import pandas as pd
import pytest

from aecfe.comparison.plan import ComparisonConfig, build_steps
from aecfe.comparison.report import (collect_scores, cost_table, format_table, input_table, model_cost_table,
                                    results_table, uses_target_labels, verdict, write_report)
from aecfe.comparison.steps import StepRecord

DOMAINS = ("a", "b", "c")


def fake_scores(f1_by_seed, head="rf"):
    """scores.csv rows of a method: matrix (both variants) and lodo, f1_macro = f1_by_seed[seed] everywhere;
    each model trains in 2 s (seed 0) or 4 s (seed 1, ...) and predicts in 0.5 ms per sample."""
    rows = []
    for seed, value in enumerate(f1_by_seed):
        cost = dict(fit_s=2.0 if seed == 0 else 4.0, predict_ms_per_sample=0.5)
        for train, test in itertools.product(DOMAINS, DOMAINS):
            rows.append(dict(head=head, seed=seed, protocol="matrix", variant="whole_domain", train_domain=train,
                             test_domain=test, accuracy=value, f1_macro=value, f1_micro=value, **cost))
            rows.append(dict(head=head, seed=seed, protocol="matrix", variant="test_split", train_domain=train,
                             test_domain=test, accuracy=value + (0.3 if train == test else 0),
                             f1_macro=value, f1_micro=value, **cost))
        for held_out in DOMAINS:
            rows.append(dict(head=head, seed=seed, protocol="lodo", variant="whole_domain",
                             train_domain="+".join(d for d in DOMAINS if d != held_out), test_domain=held_out,
                             accuracy=value, f1_macro=value, f1_micro=value, **cost))
    return pd.DataFrame(rows)


@pytest.fixture
def methods_dir(tmp_path):
    for method, values in {"AE-CFE": [0.5, 0.7], "ERM": [0.8, 0.8], "R-CNN-RF": [0.2, 0.4]}.items():
        folder = tmp_path / "methods" / method / "rf"
        folder.mkdir(parents=True)
        fake_scores(values).to_csv(folder / "scores.csv", index=False)
        confusion = pd.DataFrame({"protocol": "lodo", "variant": "whole_domain", "train_domain": "b+c",
                                  "test_domain": "a", "true": ["x", "x", "y"], "predicted": ["x", "y", "y"],
                                  "count": [3, 1, 4]})
        confusion.to_csv(folder / "confusion.csv", index=False)
    return tmp_path / "methods"


def test_results_table_means_over_pairs_then_seeds(methods_dir):
    scores = collect_scores(methods_dir)
    assert set(scores["method"]) == {"AE-CFE", "ERM", "R-CNN-RF"}
    table = results_table(scores)
    mean, std, n = table.loc[("AE-CFE", "rf"), ("LODO", "f1_macro")]
    assert (mean, std, n) == (pytest.approx(0.6), pytest.approx(0.1), 2)
    # "same domain" takes the test_split diagonal only (accuracy +0.3 there), "one -> others" the off-diagonal
    assert table.loc[("ERM", "rf"), ("same domain", "accuracy")][0] == pytest.approx(1.1)
    assert table.loc[("ERM", "rf"), ("one -> others", "accuracy")][0] == pytest.approx(0.8)


def test_verdict_says_where_the_reference_loses(methods_dir):
    lines = verdict(results_table(collect_scores(methods_dir)))
    assert "Best: ERM (rf) at 80.0 %" in lines[1] and "worst: R-CNN-RF (rf) at 30.0 %" in lines[1]
    assert lines[2] == "AE-CFE (rf) ranks 2 of 3 at 60.0 %, 20.0 points behind the best label-free method."


def test_verdict_measures_the_gap_to_the_best_method_without_target_labels(methods_dir):
    for head, value in (("FewShot_k5", 0.95), ("FewShot_k0", 0.1)):
        folder = methods_dir / "FewShot" / head
        folder.mkdir(parents=True)
        fake_scores([value]).to_csv(folder / "scores.csv", index=False)
    lines = verdict(results_table(collect_scores(methods_dir)))
    assert "Best: FewShot (FewShot_k5) at 95.0 %" in lines[1] and "worst: FewShot (FewShot_k0)" in lines[1]
    assert lines[2].startswith("Best without labels of the held-out domain: ERM (rf) at 80.0 %")
    assert lines[3] == "AE-CFE (rf) ranks 3 of 5 at 60.0 %, 20.0 points behind the best label-free method."
    assert uses_target_labels("Oracle", "Oracle") and not uses_target_labels("ERM", "ERM")


def test_cost_tables_give_each_step_and_each_models_cost(methods_dir):
    records = {"ERM.train_dg": StepRecord("ERM.train_dg", "deep baseline", "ERM", ["x"], 120.0, 900.0, 0)}
    costs = cost_table(records)
    assert costs.to_dict("records") == [{"step": "ERM.train_dg", "method": "ERM", "kind": "deep baseline",
                                         "wall (s)": 120.0, "peak RSS (MiB)": 900}]
    scores = collect_scores(methods_dir)
    per_model = model_cost_table(scores).set_index("method")
    # 2 seeds x (3 matrix trainings, scored in both variants, + 3 lodo trainings)
    assert per_model.loc["ERM", "models trained"] == 12
    assert per_model.loc["ERM", "train per model (s)"] == pytest.approx(3.0)  # median of six 2 s and six 4 s
    assert per_model.loc["ERM", "inference (ms/sample)"] == pytest.approx(0.5)
    # predictions made outside the evaluation (few-shot) are written untimed: empty cells in scores.csv
    folder = methods_dir / "FewShot" / "FewShot_k5"
    folder.mkdir(parents=True)
    fake_scores([0.9]).assign(fit_s=float("nan"), predict_ms_per_sample=float("nan")).to_csv(folder / "scores.csv",
                                                                                            index=False)
    few_shot = model_cost_table(collect_scores(methods_dir)).set_index("method").loc["FewShot"]
    assert few_shot["models trained"] == 6 and pd.isna(few_shot["train per model (s)"])
    # scores written before models were timed: the count stays, the costs are unknown
    untimed = model_cost_table(scores.drop(columns=["fit_s", "predict_ms_per_sample"]))
    assert untimed.loc[0, "models trained"] == 12 and pd.isna(untimed.loc[0, "train per model (s)"])


def test_a_single_seed_shows_its_mean_without_a_std():
    table = results_table(fake_scores([0.8]).assign(method="ERM"))
    shown = format_table(table, "f1_macro")
    assert shown.loc[0, "LODO"] == "80.0"
    assert format_table(results_table(fake_scores([0.8, 0.6]).assign(method="ERM")), "f1_macro").loc[0, "LODO"] \
        == "70.0 ± 10.0"


def test_write_report_has_tables_confusions_and_costs(methods_dir, tmp_path):
    records = {"extract": StepRecord("extract", "extraction", "R-CNN-RF", ["x"], 10.0, 500.0, 0)}
    path = write_report(tmp_path / "report", methods_dir, records, title="T", command="cmd")
    text = path.read_text()
    assert re.search(r"\| ERM +\| rf +\| none +\| 80\.0 ± 0\.0", text)
    assert re.search(r"\| AE-CFE +\| rf +\| unlabelled \(UDA\) +\|", text)
    assert "confusion_best.png" in text and (tmp_path / "report" / "confusion_worst.png").exists()
    assert "## Cost on this machine" in text and "extraction" in text and "train per model (s)" in text
    assert (tmp_path / "report" / "costs_per_model.csv").exists()
    assert pd.read_csv(tmp_path / "report" / "results_f1_macro.csv").shape == (3, 6)


def test_plan_orders_dependencies_and_shares_seeds(tmp_path):
    config = ComparisonConfig(out=tmp_path, seeds=(0, 1), methods=("AE-CFE", "R-CNN-RF", "ERM", "FewShot"))
    steps = build_steps(config)
    names = [step.name for step in steps]
    for step in steps:
        assert all(names.index(before) < names.index(step.name) for before in step.after)
    assert names[:2] == ["data.synthetic", "detector.train"] and "ae_mmd.train" in names
    for step in steps:
        if step.name.endswith(".evaluate"):
            assert step.command[step.command.index("--seeds") + 1:][:2] == ("0", "1")
    few_shot = next(step for step in steps if step.name == "FewShot.train_dg")
    assert few_shot.command[few_shot.command.index("--protocol") + 1] == "lodo"
    rows = next(step for step in steps if step.name == "ae_mmd.few_shot")  # the heads' few-shot rows beside it
    assert rows.command[rows.command.index("--few-shot-k") + 1] == "5,10,20" and str(tmp_path / "methods" / "AE-CFE") \
        in rows.command
    with pytest.raises(ValueError, match="unknown methods"):
        ComparisonConfig(out=tmp_path, methods=("AE-XYZ",))


def test_fold_methods_are_collected_from_one_folder_per_held_out_domain(tmp_path):
    for held_out in DOMAINS:
        scores = fake_scores([0.5])
        rows = scores[(scores.protocol == "lodo") & (scores.test_domain == held_out)]
        folder = tmp_path / "AE-CFE-DG" / "folds" / held_out / "rf"
        folder.mkdir(parents=True)
        rows.to_csv(folder / "scores.csv", index=False)
    scores = collect_scores(tmp_path)
    assert set(scores["method"]) == {"AE-CFE-DG"} and sorted(scores["test_domain"]) == sorted(DOMAINS)
    shown = format_table(results_table(scores), "f1_macro")
    assert shown.loc[0, "LODO"] == "50.0" and shown.loc[0, "same domain"] == "—"
    assert shown.loc[0, "scored domain in training"] == "none"


def test_the_no_target_autoencoder_trains_once_per_fold_without_the_held_out_domain(tmp_path):
    config = ComparisonConfig(out=tmp_path, methods=("AE-CFE", "AE-CFE-DG"), seeds=(0,))
    steps = {step.name: step for step in build_steps(config)}
    for lab in ("lab_a", "lab_b", "lab_c"):
        train = steps[f"ae_mmd_without_{lab}.train"].command
        assert train[train.index("--exclude-domain") + 1] == lab and "ae_mmd_without_" + lab in train
        evaluate = steps[f"ae_mmd_without_{lab}.evaluate"].command
        assert evaluate[evaluate.index("--held-out") + 1] == lab
        assert evaluate[evaluate.index("--protocol") + 1:evaluate.index("--seeds")] == ("lodo",)
        assert str(tmp_path / "methods" / "AE-CFE-DG" / "folds" / lab) in evaluate
    assert "--exclude-domain" not in steps["ae_mmd.train"].command


def test_each_autoencoder_variant_runs_with_its_alignments_default_beta(tmp_path):
    """AAE-DA with β = 1 (METHODS §8.7), the moment losses with 5; a --beta in --ae-options wins (comes last)."""
    steps = {step.name: step for step in build_steps(ComparisonConfig(out=tmp_path, methods=("AE-CFE", "AAE-DA"),
                                                                      seeds=(0,)))}

    def betas(command):
        return [float(command[i + 1]) for i, word in enumerate(command) if word == "--beta"]

    assert betas(steps["ae_adversarial.train"].command) == [1.0]
    assert betas(steps["ae_mmd.train"].command) == [5.0]
    overridden = build_steps(ComparisonConfig(out=tmp_path, methods=("AAE-DA",), seeds=(0,), ae_options=("--beta", "3")))
    command = next(step for step in overridden if step.name == "ae_adversarial.train").command
    assert betas(command)[-1] == 3.0


def test_plan_runs_every_deep_baseline_on_whole_images_and_on_the_stores_crops(tmp_path):
    config = ComparisonConfig(out=tmp_path, seeds=(0,), methods=("ERM", "FewShot", "Oracle"))
    steps = {step.name: step for step in build_steps(config)}
    assert list(steps) == ["data.synthetic", "detector.train", "extract", "ERM.train_dg", "FewShot.train_dg",
                           "Oracle.train_dg", "ERM_crop.train_dg", "FewShot_crop.train_dg", "Oracle_crop.train_dg"]
    for algorithm in ("ERM", "FewShot", "Oracle"):
        image, crop = steps[f"{algorithm}.train_dg"], steps[f"{algorithm}_crop.train_dg"]
        assert image.method == algorithm and crop.method == f"{algorithm} (crop)" and crop.after == ("extract",)
        assert str(config.data_root) in image.command and "--store" not in image.command
        assert crop.command[crop.command.index("--store") + 1] == str(config.store)
        assert crop.command[crop.command.index("--out") + 1] == str(tmp_path / "methods" / f"{algorithm}_crop")
        # the same settings on both inputs
        assert image.command[image.command.index("--scheme"):] == tuple(
            str(tmp_path / "methods" / algorithm) if part.endswith(f"{algorithm}_crop") else part
            for part in crop.command[crop.command.index("--scheme"):])
    only_images = ComparisonConfig(out=tmp_path, methods=("ERM",), dg_inputs=("image",), domains_root=tmp_path)
    assert [step.name for step in build_steps(only_images)] == ["ERM.train_dg"]
    with pytest.raises(ValueError, match="dg_inputs"):
        ComparisonConfig(out=tmp_path, dg_inputs=("tiles",))


def test_report_puts_each_deep_baseline_on_both_inputs_side_by_side_and_names_the_best_per_input(methods_dir,
                                                                                                  tmp_path):
    for folder, head, value in (("ERM_crop", "ERM", 0.9), ("ERM", "ERM", 0.4), ("Oracle_crop", "Oracle", 0.99)):
        path = methods_dir / folder / head
        path.mkdir(parents=True, exist_ok=True)
        fake_scores([value]).to_csv(path / "scores.csv", index=False)
    scores = collect_scores(methods_dir)
    assert {"ERM (crop)", "Oracle (crop)"} <= set(scores["method"])
    table = results_table(scores)
    lines = verdict(table)
    assert "Best on the whole image input: ERM (rf) at 80.0 %." in lines
    assert ("Best on the detector crop input: Oracle (crop) (Oracle) at 99.0 %; without labels of the held-out "
            "domain: ERM (crop) (ERM) at 90.0 %.") in lines
    assert uses_target_labels("Oracle (crop)", "Oracle")
    shown = format_table(table, "f1_macro").set_index(["method", "head"])
    assert shown.loc[("ERM (crop)", "ERM"), "scored domain in training"] == "none"
    side = input_table(table).set_index(["algorithm", "head"])
    assert side.loc[("ERM", "ERM"), "LODO: whole image"] == "40.0"
    assert side.loc[("ERM", "ERM"), "LODO: detector crop"] == "90.0"
    assert side.loc[("ERM", "ERM"), "LODO crop − image"] == "+50.0"
    assert side.loc[("ERM", "rf"), "LODO: detector crop"] == "—"  # the fixture's ERM (rf) ran on images only
    text = write_report(tmp_path / "report", methods_dir, {}, title="T", command="cmd").read_text()
    assert "## Deep baselines: whole image vs detector crop (f1-macro)" in text
    assert (tmp_path / "report" / "results_dg_inputs_f1_macro.csv").is_file()


def test_few_shot_heads_are_listed_in_the_order_of_k_not_of_their_text(methods_dir):
    for k in (0, 10, 20, 5):
        path = methods_dir / "FewShot" / f"FewShot_k{k}"
        path.mkdir(parents=True)
        fake_scores([0.3 + k / 100]).to_csv(path / "scores.csv", index=False)
    table = results_table(collect_scores(methods_dir))
    few_shot = [head for method, head in table.index if method == "FewShot"]
    assert few_shot == ["FewShot_k0", "FewShot_k5", "FewShot_k10", "FewShot_k20"]
    side = input_table(table)
    assert list(side.loc[side["algorithm"] == "FewShot", "head"]) == few_shot
