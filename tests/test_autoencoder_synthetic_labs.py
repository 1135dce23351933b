"""The default autoencoder recipe on three synthetic labs: its code keeps the cells' class and mixes the labs.

The RoI features here are a fixed random convolution of each synthetic cell crop, pooled to 256x14x14 (a
stand-in for the detector's, which would take minutes to train); raw pixels are the crop averaged to 8x8 RGB, as
in the demo. Probes: :func:`extractors.diagnostics.linear_probe` (logistic regression on standardised features,
half of each lab's cells to train, macro-F1 on the other half; the lab probe's balanced accuracy, chance 33 %).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aecfe.synthetic import default_domains, make_single_cell_images
from extractors.autoencoder import AECFEAutoencoder
from extractors.diagnostics import linear_probe
from extractors.recipes import recipe_configs
from extractors.trainer import AutoencoderTrainer, RoiCropDataset, encode_dataset


@pytest.fixture(scope="module")
def labs():
    crops, labels, domains = [], [], []
    for domain, style in enumerate(default_domains()):
        for field in make_single_cell_images(style, 60, seed=0, size=128):
            crops.append(field.image)
            labels.append(field.labels[0])
            domains.append(domain)
    crops = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    names = sorted(set(labels))
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 5, 2, 2), torch.nn.ReLU(),
                                   torch.nn.Conv2d(64, 256, 3, 2, 1), torch.nn.ReLU())
    with torch.no_grad():
        roi = F.adaptive_avg_pool2d(features(crops.float() / 255), 14)
    return roi, crops, np.array([names.index(name) for name in labels]), np.array(domains)


def test_the_default_code_keeps_the_class_and_mixes_the_labs(labs):
    roi, crops, labels, domains = labs
    model_config, trainer_config = recipe_configs(trainer={"epochs": 10, "image_from_epoch": 10, "batch_size": 32,
                                                           "progress": False, "grid_every": 0, "probe_cells": 0})
    torch.manual_seed(0)
    model = AECFEAutoencoder(model_config)
    AutoencoderTrainer(model, trainer_config, n_domains=3).fit(RoiCropDataset(roi, crops, domains, labels))
    code = encode_dataset(model, roi)
    raw_pixels = F.adaptive_avg_pool2d(crops.float() / 255, 8).flatten(1).numpy()
    pooled_roi = roi.mean((2, 3)).numpy()
    probes = {name: linear_probe(X, labels, domains) for name, X in
              (("code", code), ("raw pixels", raw_pixels), ("RoI features", pooled_roi))}

    assert code.std(0).min() > 0.05  # alive in every dimension, not the mean cell
    # The class survives the compression: within a few points of raw pixels, far above chance (20 %).
    assert probes["code"]["probe_f1_macro"] >= probes["raw pixels"]["probe_f1_macro"] - 5, probes
    # The alignment mixes the labs: the lab is harder to tell from the code than from the features it compresses.
    assert probes["code"]["domain_accuracy"] <= probes["RoI features"]["domain_accuracy"] - 5, probes
