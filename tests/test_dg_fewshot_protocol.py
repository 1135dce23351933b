"""The few-shot protocol (classifiers/dg/fewshot_protocol.py): leave one domain out, one source model per held-out
domain shared by every k, its fingerprinted run folders (a rerun loads them), and the scoring of its folds into
the cross-domain tables (aecfe.dg_baselines)."""
import numpy as np
import pytest

from aecfe.dg_baselines import score_few_shot
from aecfe.errors import InputError
from aecfe.synthetic import default_domains
from classifiers.dg import synthetic_dataset
from classifiers.dg.fewshot_protocol import few_shot_lodo, protocol_fingerprint

SOURCE = {"backbone": "tiny", "include_top": False, "image_size": 16, "epochs": None, "steps": 2,
          "checkpoint_every": 2, "batch_size": 4}
FINETUNE = {"epochs": 1}


@pytest.fixture(scope="module")
def labs():
    return synthetic_dataset(6, size=16, seed=0)


def _log_lines(root):
    return {path: len(path.read_text().splitlines()) for path in sorted(root.rglob("log.jsonl"))}


def test_fingerprint_names_the_settings_and_the_labels(labs):
    base = protocol_fingerprint(labs, SOURCE, FINETUNE, "all", ["lab_a"])
    assert len(base) == 12 and base == protocol_fingerprint(labs, dict(SOURCE), dict(FINETUNE), "all", ["lab_a"])
    assert protocol_fingerprint(labs, SOURCE, FINETUNE, "all", ["lab_a", "lab_b"]) != base
    assert protocol_fingerprint(labs, SOURCE, {"epochs": 2}, "all", ["lab_a"]) != base
    assert protocol_fingerprint(labs, SOURCE, FINETUNE, "head", ["lab_a"]) != base
    assert protocol_fingerprint(labs.subset(np.arange(len(labs) - 1)), SOURCE, FINETUNE, "all", ["lab_a"]) != base


def test_lodo_folds_share_the_source_model_and_a_rerun_loads_every_training(labs, tmp_path):
    folds = few_shot_lodo(labs, [1, 2], tmp_path, source_hparams=SOURCE, finetune_hparams=FINETUNE,
                          progress=False)
    names = list(labs.domain_names)
    assert [(f.target, f.shots) for f in folds] == [(d, k) for d in names for k in (1, 2, 0)]
    for fold in folds:
        target = np.flatnonzero(labs.domain_ids == names.index(fold.target))
        n_source = len(labs) - len(target)
        assert fold.seed == 0 and fold.target not in fold.sources and len(fold.sources) == len(names) - 1
        assert set(fold.test_indices) <= set(target) and len(fold.y_pred) == len(fold.test_indices)
        shots = len(target) - len(fold.test_indices)  # the labelled target images, left out of the scoring
        assert fold.n_train == n_source + shots
        assert shots == 0 if fold.shots == 0 else 0 < shots <= fold.shots * len(labs.classes)
    fingerprint = protocol_fingerprint(labs, SOURCE, FINETUNE, "all", [])
    run = tmp_path / f"FewShot_seed0_lab_a-heldout_{fingerprint}"
    assert (run / "k1" / "source" / "model.pt").is_file() and (run / "k2" / "finetune" / "model.pt").is_file()
    assert not (run / "k2" / "source").exists()  # trained once, for k = 1, and shared
    logs = _log_lines(tmp_path)
    again = few_shot_lodo(labs, [1, 2], tmp_path, source_hparams=SOURCE, finetune_hparams=FINETUNE,
                          progress=False)
    assert _log_lines(tmp_path) == logs  # nothing trained again
    assert all(np.array_equal(a.y_pred, b.y_pred) for a, b in zip(folds, again))

    labels = np.asarray(labs.classes)[labs.targets]
    domains = np.asarray(labs.domain_names)[labs.domain_ids]
    results = score_few_shot(folds, labels, domains, labs.classes, [1, 2], {"trainable": "all"})
    assert list(results) == ["FewShot_k0", "FewShot_k1", "FewShot_k2"]
    whole = results["FewShot_k0"].scores.set_index("test_domain")["n_test"]
    assert whole.to_dict() == {d: int((domains == d).sum()) for d in names}
    assert set(results["FewShot_k2"].scores["test_part"]) == {"all_but_2_shots_per_class"}
    assert results["FewShot_k1"].config["shots"] == 1


def test_bad_protocol_arguments_are_clear_errors(labs, tmp_path):
    with pytest.raises(InputError, match=">= 1"):
        few_shot_lodo(labs, [0, 5], tmp_path)
    one_lab = synthetic_dataset(4, size=16, domains=default_domains()[:1])
    with pytest.raises(InputError, match="holds out one domain"):
        few_shot_lodo(one_lab, [5], tmp_path)
