"""The run-level hyper-parameters of the DG baselines (classifiers/dg/hparams.py): schedule scaling to a run
length, the shared settings, and the ALGO.KEY=VALUE overrides (read with the programs' one KEY=VALUE parser)."""
import pytest

from aecfe.cli import key_value
from aecfe.errors import InputError
from classifiers.dg.hparams import ALGORITHM_NAMES, SCHEDULE_KEYS, algorithm_hparams, get_hparams, split_overrides


def parse_hparams(items):
    """``--hparam`` items as train_dg reads them: each through aecfe.cli.key_value, then split per algorithm."""
    return split_overrides([key_value(item) for item in items])


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
    assert parse_hparams(["BoDA.nu=0.5", "BoDA.nu=0.25"]) == {"BoDA": {"nu": 0.25}}  # the last one wins


def test_schedule_keys_exist_and_the_one_algorithm_list_is_in_table_order():
    assert {"stage1_steps", "boda_start_step"} == set(SCHEDULE_KEYS)
    assert all(any(key in get_hparams(name) for name in ALGORITHM_NAMES) for key in SCHEDULE_KEYS)
    assert ALGORITHM_NAMES == ("ERM", "DANN", "CORAL", "Mixup", "SelfReg", "BoDA", "CRT", "SADA", "FewShot",
                               "Oracle")
