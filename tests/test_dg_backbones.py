"""Featurizers (classifiers/dg/backbones.py): shapes, last conv maps, frozen BatchNorm, weights resolution."""
from pathlib import Path

import pytest
import torch

from aecfe.errors import InputError
from classifiers.dg.backbones import BACKBONES, build_featurizer, resolve_weights, weights_name


MOBILENET_WEIGHTS = Path("/work/shared/weights/mobilenet_v2-b0353104.pth")


def test_tiny_featurizer_features_are_pooled_maps():
    featurizer = build_featurizer("tiny").eval()
    x = torch.rand(2, 3, 32, 32)
    features, maps = featurizer.forward_with_maps(x)
    assert features.shape == (2, featurizer.n_outputs) and maps.shape[:2] == (2, featurizer.map_channels)
    assert torch.allclose(features, maps.mean(dim=(2, 3)))
    assert torch.allclose(featurizer(x), features)


@pytest.mark.parametrize("name, width", [("resnet18", 512), ("mobilenet_v2", 1280), ("efficientnet_b0", 1280)])
def test_torchvision_featurizers_widths(name, width):
    featurizer = build_featurizer(name).eval()
    features, maps = featurizer.forward_with_maps(torch.rand(1, 3, 64, 64))
    assert featurizer.n_outputs == width and features.shape == (1, width) and maps.shape[1] == width


def test_include_top_keeps_the_imagenet_classifier():
    featurizer = build_featurizer("efficientnet_b0", include_top=True).eval()
    assert featurizer.n_outputs == 1000 and featurizer(torch.rand(1, 3, 32, 32)).shape == (1, 1000)
    assert featurizer.map_channels == 1280


def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_its_statistics():
    frozen, trainable = build_featurizer("tiny", freeze_bn=True), build_featurizer("tiny", freeze_bn=False)
    for featurizer in (frozen, trainable):
        featurizer.train()
        before = [m.running_mean.clone() for m in featurizer.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        featurizer(torch.rand(4, 3, 16, 16) * 3)
        after = [m.running_mean for m in featurizer.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        changed = any(not torch.equal(a, b) for a, b in zip(before, after))
        assert changed == (featurizer is trainable)
    assert all(p.requires_grad for p in frozen.parameters())  # affine weights still train


def test_weight_names_resolve_and_round_trip():
    weights = resolve_weights("resnet50", "IMAGENET1K_V2")
    assert resolve_weights("resnet50", weights_name(weights)) is weights
    assert resolve_weights("resnet50", "DEFAULT") is weights
    assert resolve_weights("resnet50", None) is None
    with pytest.raises(InputError, match="IMAGENET1K_V1"):
        resolve_weights("resnet50", "no-such-weights")
    with pytest.raises(InputError, match="available"):
        build_featurizer("vgg11")
    assert set(BACKBONES) == {"resnet18", "resnet50", "efficientnet_b0", "mobilenet_v2", "tiny"}


def test_local_state_dict_file_loads_with_or_without_its_classifier(tmp_path):
    import torchvision  # compat imported by backbones

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=7)  # a fine-tuned model with another head
    path = tmp_path / "resnet18.pth"
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, path)
    featurizer = build_featurizer("resnet18", str(path))
    assert torch.equal(featurizer.trunk[0].weight, reference.conv1.weight)
    with pytest.raises(InputError, match="do not fit"):
        build_featurizer("resnet18", path, include_top=True)
    torch.save({"conv1.weight": reference.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(InputError, match="missing"):
        build_featurizer("resnet18", tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        build_featurizer("resnet18", tmp_path / "junk.pth")


@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason="offline ImageNet MobileNetV2 weights not present")
def test_offline_imagenet_mobilenet_weights_load():
    featurizer = build_featurizer("mobilenet_v2", MOBILENET_WEIGHTS, include_top=True).eval()
    state = torch.load(MOBILENET_WEIGHTS, weights_only=True)
    assert torch.equal(featurizer.top[-1].weight, state["classifier.1.weight"])
