"""The DG training loop (classifiers/dg/training.py) and SWAD (classifiers/dg/swad.py): checkpoints, exact
resume, SWAD selection, hooks, data parallel, prediction."""
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from aecfe.errors import InputError
from aecfe.metrics import classification_scores
from classifiers.dg.algorithms import build_algorithm
from classifiers.dg.data import synthetic_dataset, steps_for_epochs
from classifiers.dg.swad import SWAD
from classifiers.dg.training import TrainConfig, load_algorithm, predict_dataset, read_checkpoint, train
from classifiers.dg.transforms import eval_transform, train_transform


def datasets(augmentation="domainbed", n=6):
    """Training set of two labs (training transforms), validation set of the same labs, test set of the third."""
    data = synthetic_dataset(n, size=24, seed=0)
    source = np.flatnonzero(data.domain_ids < 2)
    target = np.flatnonzero(data.domain_ids == 2)
    return (data.subset(source, transform=train_transform(augmentation, 24)),
            data.subset(source, transform=eval_transform(augmentation, 24)),
            data.subset(target, transform=eval_transform(augmentation, 24)))


def new(name, train_set, num_domains=2, **hparams):
    torch.manual_seed(0)
    extra = {"include_top": False} if name.startswith("FewShot") else {}
    settings = {"backbone": "tiny", "batch_size": 4, "steps": 7, "checkpoint_every": 3, "lr": 1e-3,
                **extra, **hparams}
    return build_algorithm(name, len(train_set.classes), num_domains, settings)


def quiet(**options):
    return TrainConfig(progress=False, **options)


# ---- SWAD --------------------------------------------------------------------------------------------------------

def scripted_swad(losses, n_converge=2, n_tolerance=3):
    """One-step segments whose single weight equals the segment index."""
    swad, model = SWAD(n_converge, n_tolerance, 0.3), torch.nn.Linear(1, 1, bias=False)
    for step, loss in enumerate(losses):
        with torch.no_grad():
            model.weight.fill_(step)
        swad.update(model, step)
        swad.end_segment(loss, step)
    return swad, model


def test_swad_loss_valley_selects_the_segments_of_the_reference():
    swad, model = scripted_swad([1.0, 0.5, 0.6, 0.55, 0.7, 2.0, 2.0, 2.0])
    assert swad.converged and swad.converge_step == 1 and swad.threshold == pytest.approx(0.715)
    assert swad.dead_valley
    assert swad.averaged(model).weight.item() == pytest.approx(2.5)  # segments 1, 2, 3, 4
    alive, model = scripted_swad([1.0, 0.5, 0.6, 0.55, 0.7, 2.0])
    assert not alive.dead_valley
    assert alive.averaged(model).weight.item() == pytest.approx(2.5)  # segment 4 added at the end, not 5
    early, model = scripted_swad([1.0, 0.9, 0.8])
    assert not early.converged and early.averaged(model).weight.item() == 2.0  # the last segment


def test_swad_state_round_trips_through_a_weights_only_file(tmp_path):
    swad, model = scripted_swad([1.0, 0.5, 0.6, 0.55])
    torch.save(swad.state_dict(), tmp_path / "swad.pt")
    restored = SWAD(2, 3, 0.3)
    restored.load_state_dict(torch.load(tmp_path / "swad.pt", weights_only=True))
    assert restored.converge_queue[-1] is restored.smooth_queue[-1]  # shared segments stay shared
    for s in (swad, restored):
        with torch.no_grad():
            model.weight.fill_(9)
        s.update(model, 9)
        s.end_segment(0.6, 9)
    assert restored.averaged(model).weight.item() == swad.averaged(model).weight.item()


# ---- the loop ----------------------------------------------------------------------------------------------------

def test_train_writes_weights_only_checkpoints_and_a_model_that_reloads(tmp_path):
    train_set, val_set, test_set = datasets()
    result = train(new("ERM", train_set), train_set, val_set, quiet(out_dir=tmp_path, log_every=2))
    assert [record["step"] for record in result.history] == [0, 3, 6]
    assert all(np.isfinite(record["val_loss"]) for record in result.history)
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["finished"] and state["step"] == 6 and state["classes"] == list(train_set.classes)
    assert state["domains"] == ["lab_a", "lab_b"]
    model, meta = load_algorithm(tmp_path / "model.pt")
    x = torch.stack([test_set[i][0] for i in range(4)])
    result.algorithm.eval()
    assert torch.allclose(model.predict(x), result.algorithm.predict(x))
    assert meta["classes"] == list(train_set.classes) and meta["swad_averaged"] is False
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any(line.get("checkpoint") for line in lines) and lines[0]["step"] == 0


def test_resumed_run_continues_exactly_with_swad(tmp_path):
    train_set, val_set, _ = datasets()
    options = {"steps": 9, "swad": True, "swad_n_converge": 2, "swad_n_tolerance": 2}
    straight = train(new("CORAL", train_set, **options), train_set, val_set, quiet(out_dir=tmp_path / "a"))
    first = train(new("CORAL", train_set, **options), train_set, val_set,
                  quiet(out_dir=tmp_path / "b", stop_at=5))
    assert not (tmp_path / "b" / "model.pt").exists() and read_checkpoint(tmp_path / "b" / "checkpoint.pt")[
        "step"] == 4
    assert int(first.last.update_count) == 5
    resumed = train(new("CORAL", train_set, **options), train_set, val_set, quiet(out_dir=tmp_path / "b"))
    for a, b in zip(straight.last.state_dict().values(), resumed.last.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.algorithm.state_dict().values(), resumed.algorithm.state_dict().values()):
        assert torch.equal(a, b)  # the SWAD averages too
    assert read_checkpoint(tmp_path / "b" / "model.pt")["swad_averaged"]
    again = train(new("CORAL", train_set, **options), train_set, val_set, quiet(out_dir=tmp_path / "b"))
    assert again.history == [] and int(again.last.update_count) == 9  # finished: nothing more to do
    # the training time adds up over the interrupted and the resumed process, and a finished run reports it
    assert 0 < first.seconds < resumed.seconds == again.seconds
    assert read_checkpoint(tmp_path / "b" / "model.pt")["train_seconds"] == resumed.seconds


def test_a_checkpoint_written_before_training_time_was_recorded_resumes_with_unknown_time(tmp_path):
    train_set, val_set, _ = datasets()
    train(new("ERM", train_set), train_set, val_set, quiet(out_dir=tmp_path, stop_at=4))
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["train_seconds"] > 0
    del state["train_seconds"]
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = train(new("ERM", train_set), train_set, val_set, quiet(out_dir=tmp_path))
    assert int(resumed.last.update_count) == 7 and np.isnan(resumed.seconds)


def test_boda_hooks_get_counts_and_refresh_centroids(tmp_path):
    train_set, val_set, _ = datasets("boda")
    algorithm = new("BoDA", train_set, feat_update_freq=3, boda_start_step=4, steps=6)
    result = train(algorithm, train_set, val_set, quiet())
    counts = train_set.class_counts()[:2]
    assert torch.equal(torch.isinf(algorithm.counts), torch.as_tensor(counts == 0))
    assert bool(algorithm.centroids_initialised)
    assert "boda" in result.history[-1]


def test_sada_swad_ignores_stage_one_segments():
    train_set, val_set, _ = datasets("sada", n=4)
    algorithm = new("SADA", train_set, stage1_steps=4, steps=9, checkpoint_every=2, swad_n_converge=3,
                    swad_n_tolerance=6)
    result = train(algorithm, train_set, val_set, quiet())
    ended = [s.end for s in result.swad.smooth_queue]
    assert ended and min(ended) >= 4
    # no kept segment holds stage-1 weights (the one ending at step 4 also holds step 3's)
    assert min(s.start for s in result.swad.smooth_queue) >= 4
    assert "contrastive" in result.history[0] and "contrastive" not in result.history[-1]


def test_class_balanced_crt_and_pooled_few_shot_with_epochs_and_one_cycle(tmp_path):
    train_set, val_set, _ = datasets("fewshot")
    crt = new("CRT", train_set)
    assert train(crt, train_set, None, quiet()).history[-1]["step"] == 6
    few = new("FewShot", train_set, num_domains=1, epochs=2, batch_size=5)
    result = train(few, train_set, None, quiet(out_dir=tmp_path))
    assert int(few.update_count) == steps_for_epochs(len(train_set), 5, 2)
    assert few.optimizer.param_groups[0]["lr"] < 1e-3 / 25  # annealed by the one-cycle schedule
    assert len(read_checkpoint(tmp_path / "checkpoint.pt")["schedulers"]) == 1
    assert result.history[-1]["step"] == int(few.update_count) - 1


def test_configuration_errors_are_clear():
    train_set, val_set, _ = datasets()
    with pytest.raises(InputError, match="val_set"):
        train(new("ERM", train_set, swad=True), train_set, None, quiet())
    with pytest.raises(InputError, match="2 domains"):
        train(new("ERM", train_set, num_domains=3), train_set, val_set, quiet())


def test_predict_dataset_feeds_the_shared_metrics():
    train_set, val_set, test_set = datasets()
    result = train(new("ERM", train_set), train_set, val_set, quiet())
    y_true, y_pred = predict_dataset(result.algorithm, DataLoader(test_set, batch_size=5))
    assert y_true.tolist() == test_set.targets.tolist() and y_pred.shape == y_true.shape
    scores = classification_scores(np.asarray(test_set.classes)[y_true], np.asarray(test_set.classes)[y_pred],
                                   train_set.classes)
    assert 0 <= scores["f1_macro"] <= 1


# ---- data parallel -----------------------------------------------------------------------------------------------

def _data_parallel_worker(rank, world_size, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        train_set, val_set, _ = datasets()
        result = train(new("ERM", train_set, batch_size=2), train_set, val_set, quiet())
        if rank == 0:
            torch.save(result.last.state_dict(), out_file)
        trainable_bn = train(new("ERM", train_set, batch_size=2, freeze_bn=False), train_set, val_set, quiet())
        torch.save(dict(trainable_bn.last.named_buffers()), f"{out_file}.buffers{rank}")
    finally:
        dist.destroy_process_group()


def test_two_process_training_equals_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_data_parallel_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp.pt")), nprocs=2)
    train_set, val_set, _ = datasets()
    single = train(new("ERM", train_set, batch_size=4), train_set, val_set, quiet())
    parallel = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name, value in single.last.state_dict().items():
        assert torch.allclose(parallel[name], value, atol=1e-6), name
    rank0, rank1 = (torch.load(tmp_path / f"ddp.pt.buffers{r}", weights_only=True) for r in range(2))
    assert any(name.endswith("running_mean") for name in rank0)
    for name, value in rank0.items():  # BatchNorm statistics averaged over the processes at checkpoints
        assert torch.equal(value, rank1[name]), name
