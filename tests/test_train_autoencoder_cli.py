"""The train_autoencoder command line on a tiny HDF5 cell store: training, checkpoint, embedding write-back."""
import json

import numpy as np
import pytest
import torch

from aecfe.cli import key_value
from aecfe.cli.train_autoencoder import main
from aecfe.store.training_cells import domain_ids
from aecfe.errors import InputError
from aecfe.store import CellStore
from extractors.trainer import encode_dataset, load_autoencoder


def make_store(path, n_per_domain=3):
    rng = np.random.default_rng(0)
    with CellStore.create(path, provenance={"detector": None}, chunk_cells=4) as store:
        for domain in ("labA", "labB"):
            for i in range(n_per_domain):
                store.add_image(f"{domain}/{i}.png", domain, cells={
                    "box": np.array([[0, 0, 10, 10]], np.float32), "score": np.array([0.9]),
                    "mask_area": np.array([80]), "crop": rng.integers(0, 256, (1, 3, 128, 128), dtype=np.uint8),
                    "roi": rng.standard_normal((1, 256, 14, 14)).astype(np.float32)})
    return path


def test_trains_saves_a_checkpoint_and_writes_the_embedding_back(tmp_path):
    store_path = make_store(tmp_path / "cells.h5")
    run = tmp_path / "run"
    code = main([str(store_path), "--out", str(run), "--recipe", "reference", "--epochs", "1", "--batch-size", "3",
                 "--bottleneck", "5",
                 "--source-domain", "labB", "--alignment", "kmmd", "--alignment-option", "unbiased=false",
                 "--embedding", "ae", "--no-progress", "--grid-every", "0", "--no-allocator-tuning"])
    assert code == 0
    assert len((run / "losses.jsonl").read_text().splitlines()) == 2
    model = load_autoencoder(run / "checkpoint.pt")
    with CellStore.open(store_path) as store:
        codes = store.embedding("ae")
        attrs = store.embedding_attrs("ae")
        expected = encode_dataset(model, store.roi())
    assert codes.shape == (6, 5)
    assert np.allclose(codes, expected, atol=1e-5)
    assert attrs["domain_ids"] == ["labB", "labA"]
    assert attrs["trainer"]["alignment_options"] == {"unbiased": False}
    assert attrs["model"]["config"]["bottleneck"] == 5 and len(attrs["model"]["weights_sha256"]) == 64


def test_max_cells_trains_on_a_subset_and_resume_continues(tmp_path):
    store_path = make_store(tmp_path / "cells.h5")
    args = [str(store_path), "--out", str(tmp_path / "run"), "--batch-size", "2", "--max-cells", "4",
            "--bottleneck", "5", "--no-progress", "--grid-every", "0", "--no-allocator-tuning"]
    main(args + ["--epochs", "1"])
    main(args + ["--epochs", "2", "--resume", str(tmp_path / "run" / "checkpoint.pt")])
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_domain_ids_put_the_source_first_and_options_parse_as_json():
    ids, order = domain_ids(["b", "a", "c", "a"], "c")
    assert order == ["c", "a", "b"] and ids.tolist() == [2, 1, 0, 1]
    assert domain_ids(["b", "a"], None)[1] == ["a", "b"]
    with pytest.raises(InputError, match="not in the store"):
        domain_ids(["a"], "z")
    assert key_value("bandwidths=[1, 2]") == ("bandwidths", [1, 2])
    assert key_value("pairing=all") == ("pairing", "all")


def test_default_recipe_is_the_collapse_proof_one_and_options_override_it(tmp_path):
    store_path = make_store(tmp_path / "cells.h5")
    run = tmp_path / "run"
    assert main([str(store_path), "--out", str(run), "--epochs", "5", "--batch-size", "6", "--bottleneck", "5",
                 "--beta", "2", "--alignment-option", "pairing=all", "--no-progress", "--grid-every", "0"]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    trainer, model = state["trainer_config"], state["model_config"]
    assert model["image_decoder"] == "light" and model["bottleneck"] == 5
    assert trainer["alignment"] == "mmd" and trainer["alignment_options"] == {"pairing": "all"}
    assert trainer["feature_loss"] == "fvu"
    assert trainer["beta"] == 2 and trainer["image_from_epoch"] == 4 and trainer["lr_schedule"] == "onecycle"
    curves = [json.loads(line) for line in (run / "curves.jsonl").read_text().splitlines()]
    assert [c["image_decoder"] for c in curves] == [False] * 4 + [True]
    assert (run / "curves.png").stat().st_size > 0
    reference = tmp_path / "reference"
    assert main([str(store_path), "--out", str(reference), "--recipe", "reference", "--epochs", "1",
                 "--bottleneck", "5", "--no-progress", "--grid-every", "0"]) == 0
    state = torch.load(reference / "checkpoint.pt", weights_only=True)
    assert state["model_config"]["image_decoder"] == "reference"
    assert state["trainer_config"]["beta"] == 5 and state["trainer_config"]["alignment_options"] == {}
    assert state["trainer_config"]["feature_loss"] == "mse" and state["trainer_config"]["image_from_epoch"] == 0


def test_streamed_training_writes_its_embedding_into_the_store_it_read(tmp_path):
    store_path = make_store(tmp_path / "cells.h5")
    assert main([str(store_path), "--out", str(tmp_path / "run"), "--epochs", "1", "--bottleneck", "5", "--stream",
                 "--embedding", "ae", "--no-progress", "--grid-every", "0"]) == 0
    with CellStore.open(store_path) as store:
        assert store.embedding("ae").shape == (6, 5)
