"""Autoencoder training (extractors/trainer.py): steps, batches, logs, checkpoints and resume, data parallel.

The image decoder costs ~16 GFLOP per cell and training step, so every test uses a handful of cells.
"""
import copy
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from aecfe.errors import InputError
from extractors.autoencoder import AECFEAutoencoder, AutoencoderConfig
from extractors.losses import AECFELoss
from extractors.trainer import (AutoencoderTrainer, DomainBatchSampler, RoiCropDataset, TrainerConfig,
                                encode_dataset, load_autoencoder, read_checkpoint, reconstruction_grid)


def cells(n=8, seed=0):
    rng = np.random.default_rng(seed)
    roi = rng.standard_normal((n, 256, 14, 14)).astype(np.float32)
    crops = rng.integers(0, 256, (n, 3, 128, 128), dtype=np.uint8)
    domains = np.arange(n) % 3
    return RoiCropDataset(roi, crops, domains)


def quiet(**options):
    return TrainerConfig(progress=False, grid_every=0, **options)


def new_model(seed=0, **options):
    torch.manual_seed(seed)
    return AECFEAutoencoder(AutoencoderConfig(**options))


def test_micro_batched_step_has_the_whole_batch_loss_and_gradients():
    data = cells(4)
    model = new_model()
    reference = copy.deepcopy(model)
    trainer = AutoencoderTrainer(model, quiet(batch_size=4, image_chunk_size=3), n_domains=3)
    terms = trainer.training_step(*data.batch([0, 1, 2, 3]))

    roi, crops, domains = data.batch([0, 1, 2, 3])
    h = reference.scale_input(roi)
    expected = AECFELoss(bottleneck=50, n_domains=3, source_domain=0)(*reference(h), h, crops.float() / 255, domains)
    expected["total"].backward()
    for name in ("feature", "image", "alignment", "total"):
        assert terms[name] == pytest.approx(float(expected[name].detach()), rel=1e-4)
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters()):
        assert torch.linalg.norm(ours.grad - theirs.grad) <= 1e-3 * torch.linalg.norm(theirs.grad), name


@pytest.mark.parametrize("alignment", ["mmd", "adversarial"])
def test_loss_falls_over_a_few_steps_on_one_batch(alignment):
    data = cells(3)
    trainer = AutoencoderTrainer(new_model(bottleneck=5), quiet(batch_size=3, alignment=alignment), n_domains=3)
    totals = [trainer.training_step(*data.batch([0, 1, 2]))["total"] for _ in range(6)]
    assert totals[-1] < totals[0]
    if alignment == "adversarial":
        assert "discriminator" in trainer.training_step(*data.batch([0, 1, 2]))


def test_sampler_covers_every_cell_once_per_epoch_and_shards_the_global_batches():
    domains = np.array([0] * 10 + [1] * 7 + [2] * 3)
    single = DomainBatchSampler(domains, 6, seed=1)
    single.set_epoch(2)
    batches = list(single)
    assert sorted(np.concatenate(batches).tolist()) == list(range(20))
    shards = []
    for rank in range(2):
        sampler = DomainBatchSampler(domains, 3, seed=1, num_replicas=2, rank=rank)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    for b, batch in enumerate(batches):  # two processes at 3 see the batches of one process at 6
        assert sorted(np.concatenate([shards[0][b], shards[1][b]]).tolist()) == sorted(batch.tolist())
    single.set_epoch(3)
    assert not np.array_equal(np.concatenate(list(single)), np.concatenate(batches))


def test_balanced_batches_draw_equally_from_each_domain_and_pad_or_drop_the_last():
    domains = np.array([0] * 30 + [1] * 6 + [2] * 3)
    sampler = DomainBatchSampler(domains, 9, balance_domains=True, seed=0)
    for batch in list(sampler)[:-1]:
        assert np.bincount(domains[batch], minlength=3).tolist() == [3, 3, 3]
    assert len(np.concatenate(list(sampler))) == 39
    odd = DomainBatchSampler(domains, 4, seed=0, num_replicas=2, rank=1)
    assert [len(b) for b in odd] == [4] * 4 + [4]  # 39 = 4 batches of 8 + 7 padded to 8
    assert len(DomainBatchSampler(domains, 4, seed=0, num_replicas=2, drop_last=True)) == 4


def test_fit_writes_step_logs_grid_and_a_weights_only_checkpoint(tmp_path):
    data = cells(4)
    trainer = AutoencoderTrainer(new_model(), TrainerConfig(epochs=1, batch_size=2, grid_cells=3, progress=False),
                                 n_domains=3, out_dir=tmp_path)
    trainer.fit(data)
    records = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert {"feature", "image", "alignment", "total", "seconds"} <= set(records[0])
    grid = np.asarray(Image.open(tmp_path / "reconstructions_epoch001.png"))
    assert grid.shape == (130, 4 * 258, 3)
    assert np.array_equal(grid[1:129, 1:129], data.crops[0].permute(1, 2, 0).numpy())
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 2 and state["model_config"]["bottleneck"] == 50


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    data = cells(4)
    straight = AutoencoderTrainer(new_model(), quiet(epochs=2, batch_size=2, alignment="nd",
                                                     alignment_options={"reference": "sampled"}), n_domains=3)
    straight.fit(data)

    first = AutoencoderTrainer(new_model(), quiet(epochs=1, batch_size=2, alignment="nd",
                                                  alignment_options={"reference": "sampled"}),
                               n_domains=3, out_dir=tmp_path)
    first.fit(data)
    resumed = AutoencoderTrainer(new_model(seed=5), quiet(epochs=2, batch_size=2, alignment="nd",
                                                          alignment_options={"reference": "sampled"}), n_domains=3)
    resumed.load_checkpoint(tmp_path / "checkpoint.pt").fit(data)
    assert resumed.epoch == 2 and resumed.step == 4
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_of_another_model_or_file_is_rejected(tmp_path):
    trainer = AutoencoderTrainer(new_model(), quiet(), n_domains=3)
    trainer.save_checkpoint(tmp_path / "ae.pt")
    with pytest.raises(InputError, match="different model"):
        AutoencoderTrainer(new_model(bottleneck=5), quiet(), n_domains=3).load_checkpoint(tmp_path / "ae.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        read_checkpoint(tmp_path / "junk.pt")


def test_encode_dataset_matches_encode_in_batches_and_after_reloading(tmp_path):
    data = cells(5)
    model = new_model(bottleneck=10)
    trainer = AutoencoderTrainer(model, quiet(), n_domains=3)
    trainer.save_checkpoint(tmp_path / "ae.pt")
    codes = encode_dataset(model, data.roi.numpy(), batch_size=2)
    with torch.no_grad():
        expected = model.eval().encode(model.scale_input(data.roi))
    assert codes.shape == (5, 10) and codes.dtype == np.float32
    assert np.allclose(codes, expected.numpy(), atol=1e-5)
    assert np.allclose(encode_dataset(load_autoencoder(tmp_path / "ae.pt"), data.roi.half()), codes, atol=1e-2)


def test_reconstruction_grid_places_pairs_side_by_side():
    crops = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    grid = reconstruction_grid(crops, torch.ones(3, 3, 4, 4), columns=2)
    assert grid.shape == (2 * 6, 2 * 10, 3)
    assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 5:9] == 255).all()


def test_dataset_rejects_bad_shapes_and_mismatched_lengths():
    good = cells(2)
    with pytest.raises(InputError, match="uint8"):
        RoiCropDataset(good.roi, good.crops.float(), good.domains)
    with pytest.raises(InputError, match="disagree"):
        RoiCropDataset(good.roi, good.crops[:1], good.domains)
    with pytest.raises(InputError, match="256, 14, 14"):
        RoiCropDataset(good.roi[:, :10], good.crops, good.domains)


# --- data parallel: 2 processes at batch 2 equal 1 process at batch 4 --------------------------------------------

def _data_parallel_worker(rank, world_size, init_file, out_file, model_options):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    data = cells(8)
    step = AutoencoderTrainer(new_model(seed=rank), quiet(image_chunk_size=1), n_domains=3)  # rank 0's weights win
    terms = step.training_step(*data.batch([rank, rank + 2]))
    grads = {name: param.grad for name, param in step.model.named_parameters()}
    # With a linear path, rank 0 fits its PCA and broadcasts it before the first step.
    trainer = AutoencoderTrainer(new_model(seed=rank, **model_options), quiet(epochs=1, batch_size=2), n_domains=3)
    trainer.fit(data)
    torch.save({"terms": terms, "grads": grads, "trained": trainer.model.state_dict()}, f"{out_file}.{rank}")
    dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("model_options", [{}, {"linear_path": 4}], ids=["reference", "linear-path"])
def test_two_process_data_parallel_equals_one_process_on_the_global_batch(tmp_path, model_options):
    out_file = tmp_path / "ddp.pt"
    mp.spawn(_data_parallel_worker, args=(2, str(tmp_path / "init"), str(out_file), model_options), nprocs=2)
    parallel, other_rank = (torch.load(f"{out_file}.{rank}", weights_only=True) for rank in (0, 1))
    data = cells(8)

    step = AutoencoderTrainer(new_model(seed=0), quiet(), n_domains=3)
    terms = step.training_step(*data.batch([0, 2, 1, 3]))
    assert parallel["terms"] == pytest.approx(terms, rel=1e-4)
    for name, param in step.model.named_parameters():  # gradients: the global-batch ones, not a per-process share
        assert torch.linalg.norm(parallel["grads"][name] - param.grad) <= 1e-3 * torch.linalg.norm(param.grad), name

    for name, value in parallel["trained"].items():  # every process ends with the same weights
        assert torch.equal(other_rank["trained"][name], value), name
    single = AutoencoderTrainer(new_model(seed=0, **model_options), quiet(epochs=1, batch_size=4), n_domains=3)
    single.fit(data)
    for name, value in single.model.state_dict().items():
        if name.startswith("linear_path."):  # the PCA fitted on rank 0 is the one-process fit
            assert torch.allclose(parallel["trained"][name], value, atol=1e-4), name
        elif not model_options:  # Adam's first steps are ±lr: 1e-3 would be an error. With a linear path the
            # PCA's last bits differ between the processes' BLAS calls, and ±lr steps amplify them on near-zero
            # gradients, so only the reference model is compared weight by weight.
            assert torch.allclose(parallel["trained"][name], value, atol=5e-5), name


# --- beyond the reference: cheap path, warm-up, schedules, bf16, light decoder, learning curves --------------------

def test_cheap_path_step_trains_encoder_and_feature_decoder_only():
    data = cells(4)
    trainer = AutoencoderTrainer(new_model(), quiet(batch_size=4), n_domains=3)
    before = copy.deepcopy(trainer.model.state_dict())
    terms = trainer.training_step(*data.features([0, 1, 2, 3]), with_image=False)
    assert "image" not in terms and terms["total"] == pytest.approx(terms["feature"] + 5 * terms["alignment"],
                                                                    rel=1e-5)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("image_decoder"))
    assert not torch.equal(before["encoder.0.weight"], after["encoder.0.weight"])


def test_beta_warms_up_linearly_and_the_image_decoder_joins_at_its_epoch(tmp_path):
    data = cells(8)
    config = quiet(epochs=3, batch_size=4, beta=2.0, beta_warmup_epochs=2, image_from_epoch=1, probe_cells=8)
    AutoencoderTrainer(new_model(bottleneck=5), config, n_domains=3, out_dir=tmp_path).fit(data)
    steps = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [s["beta"] for s in steps] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    assert ["image" in s for s in steps] == [False, False, True, True, True, True]
    curves = [json.loads(line) for line in (tmp_path / "curves.jsonl").read_text().splitlines()]
    assert [c["epoch"] for c in curves] == [1, 2, 3] and [c["cells_seen"] for c in curves] == [8, 16, 24]
    assert [c["image_decoder"] for c in curves] == [False, True, True]
    for key in ("code_std", "effective_rank", "domain_accuracy", "train_seconds", "feature", "lr"):
        assert np.isfinite(curves[-1][key]), key
    assert curves[-1]["train_seconds"] > curves[0]["train_seconds"] > 0


def test_collapsed_code_is_reported_loudly(tmp_path, caplog):
    data = cells(8)
    trainer = AutoencoderTrainer(new_model(bottleneck=5), quiet(epochs=1, batch_size=8, probe_cells=8),
                                 n_domains=3, out_dir=tmp_path)
    with torch.no_grad():  # a constant code: zero weights into the tanh
        trainer.model.encoder[-2].weight.zero_()
    trainer.model.encoder[-2].weight.requires_grad_(False)
    trainer.model.encoder[-2].bias.requires_grad_(False)
    with caplog.at_level("WARNING"):
        trainer.fit(data)
    assert "CODE COLLAPSE" in caplog.text
    curve = json.loads((tmp_path / "curves.jsonl").read_text().splitlines()[0])
    assert curve["code_std"] < 1e-6 and curve["effective_rank"] == 0.0


def test_onecycle_schedule_resumes_exactly(tmp_path):
    data = cells(4)
    options = dict(batch_size=2, lr_schedule="onecycle", probe_cells=0)
    straight = AutoencoderTrainer(new_model(bottleneck=5), quiet(epochs=2, **options), n_domains=3)
    straight.fit(data)
    first = AutoencoderTrainer(new_model(bottleneck=5), quiet(epochs=2, **options), n_domains=3, out_dir=tmp_path)
    first._build_scheduler(steps_per_epoch=2)  # the two-epoch schedule, then a run stopped after its first epoch
    first.config.epochs = 1
    first.fit(data)
    resumed = AutoencoderTrainer(new_model(bottleneck=5, seed=3), quiet(epochs=2, **options), n_domains=3)
    resumed.load_checkpoint(tmp_path / "checkpoint.pt").fit(data)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(straight.optimizer.param_groups[0]["lr"])
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_bf16_step_stays_close_to_fp32_on_the_same_weights():
    data = cells(4)
    fp32 = AutoencoderTrainer(new_model(), quiet(batch_size=4), n_domains=3)
    bf16 = AutoencoderTrainer(new_model(), quiet(batch_size=4, precision="bf16"), n_domains=3)
    a, b = fp32.training_step(*data.batch([0, 1, 2, 3])), bf16.training_step(*data.batch([0, 1, 2, 3]))
    for name in ("feature", "image", "total"):
        assert b[name] == pytest.approx(a[name], rel=0.05), name


def test_light_image_decoder_reconstructs_64_pixels_against_the_averaged_crop(tmp_path):
    data = cells(4)
    model = new_model(image_decoder="light")
    h = model.scale_input(data.roi[:2])
    assert model(h)[2].shape == (2, 3, 64, 64) and model.image_size == 64
    trainer = AutoencoderTrainer(model, TrainerConfig(epochs=1, batch_size=4, progress=False, probe_cells=0),
                                 n_domains=3, out_dir=tmp_path)
    targets = trainer.image_targets(data.crops[:1])
    assert targets.shape == (1, 3, 64, 64)
    assert torch.allclose(targets[0, :, 0, 0], data.crops[0, :, :2, :2].float().mean((1, 2)) / 255, atol=1e-6)
    trainer.fit(data)
    grid = np.asarray(Image.open(tmp_path / "reconstructions_epoch001.png"))
    assert grid.shape == (130, 4 * 258, 3)  # the 64 px reconstruction is shown beside the 128 px crop


def test_bad_trainer_settings_are_refused():
    for bad in ({"lr_schedule": "cosine"}, {"precision": "fp8"}, {"lr": -1.0}, {"batch_size": 0}, {"epochs": -1}):
        with pytest.raises(InputError):
            TrainerConfig(**bad)


def test_under_one_cycle_the_late_image_decoder_keeps_the_peak_learning_rate(tmp_path):
    data = cells(8)
    config = quiet(epochs=4, batch_size=4, lr_schedule="onecycle", image_from_epoch=3, probe_cells=0)
    trainer = AutoencoderTrainer(new_model(bottleneck=5, image_decoder="light"), config, n_domains=3)
    before = copy.deepcopy(trainer.model.image_decoder.state_dict())
    trainer.fit(data)
    assert trainer.optimizer.param_groups[0]["lr"] < 1e-4  # the cycle has annealed the rest
    assert trainer.image_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert trainer.image_optimizer.state_dict()["state"]  # it stepped (in the last epoch only)
    after = trainer.model.image_decoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
