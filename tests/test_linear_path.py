"""The PCA-initialised linear path (extractors/linear_path.py) in the autoencoder and its trainer."""
import numpy as np
import pytest
import torch

from aecfe.errors import InputError
from extractors.autoencoder import AECFEAutoencoder, AutoencoderConfig
from extractors.linear_path import CODE_GAIN, LinearPath
from extractors.losses import UnexplainedVarianceLoss
from extractors.trainer import AutoencoderTrainer, RoiCropDataset, TrainerConfig, encode_dataset, load_autoencoder


def low_rank_maps(n=60, rank=6, seed=0):
    """Scaled maps (n,256,14,14) on a random rank-``rank`` subspace around a random mean, plus faint noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((256 * 196, rank)))[0].T  # (rank, D), orthonormal rows
    scores = rng.standard_normal((n, rank)) * np.linspace(20, 5, rank)
    maps = 0.1 * rng.standard_normal(256 * 196) + scores @ basis + 1e-3 * rng.standard_normal((n, 256 * 196))
    return torch.tensor(maps, dtype=torch.float32).view(n, 256, 14, 14)


def test_at_its_fit_the_model_is_the_whitened_pca_code_and_its_reconstruction():
    h = low_rank_maps()
    torch.manual_seed(0)
    model = AECFEAutoencoder(AutoencoderConfig(bottleneck=6, linear_path=6)).eval()
    statistics = model.init_linear_path(h)
    assert statistics["pca_explained"] > 0.99 and bool(model.linear_path.fitted)

    flat = h.flatten(1).double()
    centred = flat - flat.mean(0)
    _, singular, axes = torch.linalg.svd(centred, full_matrices=False)
    scores = centred @ axes[:6].T / (singular[:6] / np.sqrt(len(h) - 1))
    with torch.no_grad():
        z = model.encode(h)
        h_hat = model.decode_features(z)
    signs = torch.sign((z * torch.tanh(CODE_GAIN * scores)).sum(0))  # each axis up to its sign
    assert torch.allclose(z.double(), torch.tanh(CODE_GAIN * scores) * signs, atol=1e-3)
    # The reconstruction is the PCA one bent by tanh on outlying cells: nearly all the variance explained.
    assert float(UnexplainedVarianceLoss()(h_hat, h)) < 0.05


def test_an_unfitted_path_or_a_model_without_one_is_refused():
    with pytest.raises(InputError, match="linear_path"):
        AutoencoderConfig(linear_path=-1)
    with pytest.raises(InputError, match="no linear path"):
        AECFEAutoencoder(AutoencoderConfig()).init_linear_path(low_rank_maps(4))
    with pytest.raises(InputError, match=r"at least 2 maps of shape \(N, 48\)"):
        LinearPath(size=48, components=2, bottleneck=3).fit(torch.randn(6, 40))
    with pytest.raises(InputError, match="at least 2 maps"):
        LinearPath(size=48, components=2, bottleneck=3).fit(torch.randn(1, 48))


def test_with_fewer_cells_than_axes_only_the_fitted_axes_carry_the_code():
    path = LinearPath(size=48, components=6, bottleneck=6)
    assert path.fit(torch.randn(4, 48))["pca_axes"] == 3
    assert path.axes[3:].abs().sum() == 0 and torch.allclose(path.axes[:3] @ path.axes[:3].T, torch.eye(3), atol=1e-5)
    code = path.into_code(torch.randn(5, 48))
    assert code[:, 3:].abs().sum() == 0 and code[:, :3].abs().min() > 0


def dataset(n=24):
    rng = np.random.default_rng(1)
    roi = low_rank_maps(n, seed=1).numpy()
    crops = rng.integers(0, 256, (n, 3, 128, 128), dtype=np.uint8)
    return RoiCropDataset(roi, crops, np.arange(n) % 3)


def test_the_trainer_fits_the_path_once_and_a_checkpoint_keeps_it(tmp_path, caplog):
    data = dataset()
    config = TrainerConfig(epochs=1, batch_size=6, image_from_epoch=5, feature_loss="fvu", progress=False,
                           grid_every=0, pca_cells=12)
    torch.manual_seed(0)
    model = AECFEAutoencoder(AutoencoderConfig(bottleneck=6, linear_path=6))
    with caplog.at_level("INFO", logger="extractors.trainer"):
        AutoencoderTrainer(model, config, n_domains=3, out_dir=tmp_path).fit(data)
    assert "PCA of 12 cells on 6 axes" in caplog.text
    assert bool(model.linear_path.fitted) and model.linear_path.axes.abs().sum() > 0

    reloaded = load_autoencoder(tmp_path / "checkpoint.pt")
    assert np.allclose(encode_dataset(reloaded, data.roi), encode_dataset(model, data.roi), atol=1e-5)

    caplog.clear()
    resumed = AutoencoderTrainer(AECFEAutoencoder(AutoencoderConfig(bottleneck=6, linear_path=6)),
                                 TrainerConfig(**{**config.to_dict(), "epochs": 2}), n_domains=3)
    resumed.load_checkpoint(tmp_path / "checkpoint.pt")
    axes = resumed.model.linear_path.axes.clone()
    with caplog.at_level("INFO", logger="extractors.trainer"):
        resumed.fit(data)
    assert "PCA of" not in caplog.text and torch.equal(resumed.model.linear_path.axes, axes)


def test_training_from_the_pca_start_keeps_the_code_alive_and_explains_the_maps():
    data = dataset(48)
    torch.manual_seed(0)
    model = AECFEAutoencoder(AutoencoderConfig(bottleneck=6, linear_path=6))
    trainer = AutoencoderTrainer(model, TrainerConfig(epochs=3, batch_size=12, image_from_epoch=5, feature_loss="fvu",
                                                      beta=5.0, progress=False, grid_every=0), n_domains=3)
    trainer.fit(data)
    h = model.scale_input(data.roi)
    with torch.no_grad():
        z = model.encode(h)
        unexplained = float(UnexplainedVarianceLoss()(model.decode_features(z), h))
    assert z.std(0).min() > 0.1  # a live code, not the mean cell
    assert unexplained < 0.2
