"""The DG training-step benchmark (benchmarks/dg_speed.py) on the tiny test CNN."""
import json

import pytest

from dg_speed import VARIANTS, benchmark, main, measure


def test_every_variant_runs_and_ratios_are_relative_to_erm():
    table = benchmark(list(VARIANTS), "tiny", [16], batch_per_domain=2, n_domains=3, warmup=1, steps=2, rounds=2)
    assert list(table["algorithm"]) == list(VARIANTS)
    assert (table["seconds_per_step"] > 0).all() and table["images_per_step"].eq(6).all()
    assert (table["min_seconds"] <= table["seconds_per_step"]).all() and table["rounds"].eq(2).all()
    assert table.set_index("algorithm").loc["ERM", ["ratio_to_ERM", "min_ratio_to_ERM"]].tolist() == [1.0, 1.0]
    row = table.set_index("algorithm").loc["CORAL"]
    assert row["ratio_to_ERM"] == pytest.approx(row["seconds_per_step"] / table.iloc[0]["seconds_per_step"])


def test_dann_is_timed_per_discriminator_and_generator_cycle():
    row = measure("DANN", "tiny", 16, batch_per_domain=2, n_domains=2, warmup=0, steps=1)
    assert row["timed_steps"] == 1 and row["min_seconds"] == row["max_seconds"]


def test_main_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["--algorithms", "ERM", "Mixup", "--backbone", "tiny", "--sizes", "16", "24", "--batch-per-domain",
                 "2", "--warmup", "0", "--steps", "1", "--threads", "1", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "## tiny, 16 px, 6 images per step" in printed and "## tiny, 24 px" in printed
    assert [row["algorithm"] for row in json.loads(path.read_text())] == ["ERM", "Mixup", "ERM", "Mixup"]
    assert main(["--backbone", "tiny", "--steps", "0"]) == 2 and main(["--backbone", "tiny", "--rounds", "0"]) == 2
