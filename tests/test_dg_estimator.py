"""DGClassifier in the shared cross-domain evaluation, and the few-shot workflow end to end (tiny CNN)."""
import numpy as np
import pytest
import torch

from aecfe.errors import InputError
from aecfe.evaluation import evaluate_cross_domain
from aecfe.splits import domain_splits
from classifiers.dg import DGClassifier, TrainConfig, few_shot_workflow, synthetic_dataset

TINY = {"backbone": "tiny", "steps": 6, "checkpoint_every": 3, "batch_size": 4, "image_size": 24}


@pytest.fixture(scope="module")
def labs():
    data = synthetic_dataset(10, size=24, seed=0)
    return data, np.asarray(data.classes)[data.targets], np.asarray(data.domain_names)[data.domain_ids]


def test_fit_holds_out_the_evaluation_splits_of_each_domain_and_predicts_labels(labs):
    data, labels, domains = labs
    sources = np.flatnonzero(domains != "lab_c")
    model = DGClassifier("CORAL", {**TINY, "swad": True, "swad_n_converge": 1}, random_state=3)
    model.fit(data[sources], labels[sources])
    assert set(model.classes_) == set(labels[sources])
    assert np.isfinite(model.history_[-1]["val_loss"])
    predicted = model.predict(data[np.flatnonzero(domains == "lab_c")])
    assert predicted.shape == ((domains == "lab_c").sum(),) and set(predicted) <= set(model.classes_)
    # the validation part is domain_splits' test part of each source, with the same seed
    splits = domain_splits(labels[sources], domains[sources], 3).values()
    assert np.array_equal(model.validation_indices_, np.sort(np.concatenate([s.test for s in splits])))
    assert np.array_equal(model.train_indices_, np.sort(np.concatenate([s.train for s in splits])))

def test_dg_classifier_runs_in_evaluate_cross_domain(labs):
    data, labels, domains = labs
    result = evaluate_cross_domain(data, labels, domains, head=DGClassifier,
                                   head_params={"algorithm": "ERM", "hparams": TINY}, seeds=(0,),
                                   protocols=["lodo"])
    table = result.summary("f1_macro", "lodo")
    assert list(table.columns) == ["lab_a", "lab_b", "lab_c", "mean"]
    assert len(result.scores) == 3 and result.scores["f1_macro"].between(0, 1).all()
    with pytest.raises(InputError, match="ImageDataset"):
        DGClassifier().fit(np.zeros((3, 4)), ["a", "b", "a"])


def test_few_shot_workflow_fine_tunes_on_k_shots_and_scores_the_rest(labs, tmp_path):
    data, _, domains = labs
    network = {"backbone": "tiny", "include_top": False, "image_size": 24}
    result = few_shot_workflow(data, ["lab_a", "lab_b"], "lab_c", shots_per_class=2, degrade_domains=["lab_a"],
                               source_hparams={**network, "epochs": 1, "batch_size": 8},
                               finetune_hparams={"epochs": 2}, seed=0,
                               config=TrainConfig(out_dir=tmp_path, progress=False))
    target = np.flatnonzero(domains == "lab_c")
    assert set(result.finetune_indices) <= set(target) and set(result.test_indices) == set(target) - set(
        result.finetune_indices)
    assert np.bincount(data.targets[result.finetune_indices]).max() <= 2
    assert len(result.y_pred) == len(result.test_indices) == len(result.y_true)
    assert set(result.scores) == {"source_only", "finetuned"}
    assert (tmp_path / "source" / "model.pt").is_file() and (tmp_path / "finetune" / "model.pt").is_file()
    with pytest.raises(InputError, match="distinct known domains"):
        few_shot_workflow(data, ["lab_a"], "lab_a")


def test_run_folders_tell_apart_trainings_on_the_same_domains_and_finished_runs_are_loaded(labs, tmp_path):
    data, labels, domains = labs
    lab_a = np.flatnonzero(domains == "lab_a")
    part = domain_splits(labels, domains, 0)["lab_a"].train  # the matrix's training part of the same domain
    for indices in (lab_a, part, lab_a):
        DGClassifier("ERM", TINY, out_dir=tmp_path).fit(data[indices], labels[indices])
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert len(runs) == 2 and all(name.startswith("ERM_seed0_lab_a_") for name in runs)
    lines = [len((tmp_path / name / "log.jsonl").read_text().splitlines()) for name in runs]
    other = DGClassifier("ERM", {**TINY, "lr": 1e-3}, out_dir=tmp_path).fit(data[lab_a], labels[lab_a])
    assert len(list(tmp_path.iterdir())) == 3 and other.history_  # other hyper-parameters: a new run
    assert [len((tmp_path / name / "log.jsonl").read_text().splitlines()) for name in runs] == lines


def test_a_loaded_run_reports_the_training_time_it_recorded_in_the_evaluation(labs, tmp_path):
    data, labels, domains = labs
    params = {"algorithm": "ERM", "hparams": TINY, "out_dir": tmp_path}
    fresh, loaded = (evaluate_cross_domain(data, labels, domains, head=DGClassifier, head_params=params, seeds=(0,),
                                           protocols=["lodo"]).scores for _ in range(2))
    assert (fresh["fit_s"] > 0).all() and fresh["predict_ms_per_sample"].gt(0).all()
    assert np.array_equal(loaded["fit_s"], fresh["fit_s"])  # the trainings' own seconds, not the load time
    assert loaded["predict_ms_per_sample"].gt(0).all()


def test_crt_freezes_the_featurizer_of_a_boda_stage_one_shared_with_the_boda_run(labs, tmp_path):
    data, labels, domains = labs
    sources = np.flatnonzero(domains != "lab_c")
    boda = DGClassifier("BoDA", TINY, out_dir=tmp_path).fit(data[sources], labels[sources])
    crt = DGClassifier("CRT", TINY, out_dir=tmp_path).fit(data[sources], labels[sources])
    assert sorted(p.name.split("_")[0] for p in tmp_path.iterdir()) == ["BoDA", "CRT"]  # stage 1 = the BoDA run
    for (name, value), stage1 in zip(crt.algorithm_.featurizer.state_dict().items(),
                                     boda.algorithm_.featurizer.state_dict().values()):
        assert torch.equal(value, stage1), name
    assert crt.algorithm_.hparams["class_balanced"] and len(crt.predict(data[sources])) == len(sources)
