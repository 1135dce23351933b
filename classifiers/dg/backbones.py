"""Featurizers for the deep DG algorithms: torchvision CNNs without their classifier, plus a tiny CNN for tests.

A :class:`Featurizer` maps images (B, 3, H, W), float in [0, 1] (not normalised), to features (B, n_outputs):

    maps = trunk(normalise(x))            (B, map_channels, h, w)   the last convolutional map ("layer4")
    features = dropout(top(GAP(maps)))    (B, n_outputs)

``normalise`` is the ImageNet mean/std normalisation (on by default, so the algorithms and the stain
augmentation of SADA work on [0, 1] images). ``top`` is the identity, or with ``include_top`` the network's own
ImageNet classifier (the few-shot workflow keeps EfficientNet-B0's dropout + 1280 -> 1000 layer, METHODS §5.4).
:meth:`Featurizer.forward_with_maps` returns the last convolutional map explicitly, for SADA's local alignment
(METHODS §8.12: no forward hook, so data-parallel replicas cannot overwrite it).

Frozen BatchNorm (``freeze_bn``, METHODS §3.1): every BatchNorm layer stays in eval mode (running statistics
fixed) even in ``train()``; its affine weights still train, as in DomainBed's ``freeze_bn``.

Weights (``weights=``): None (random initialisation), a torchvision weight enum or its name (``"DEFAULT"``,
``"IMAGENET1K_V1"``, ``"ResNet50_Weights.IMAGENET1K_V2"``: downloaded by torchvision for users with internet), or
the path of a local state dict of the full torchvision model (read with ``torch.load(weights_only=True)``;
the classifier's keys may be missing or of another shape when ``include_top`` is off).

>>> featurizer = build_featurizer("tiny")
>>> featurizer(torch.rand(2, 3, 32, 32)).shape, featurizer.n_outputs
(torch.Size([2, 32]), 32)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from aecfe import torchvision_compat  # noqa: F401  (must precede torchvision)
from aecfe import checkpoints
from aecfe.errors import InputError

import torchvision  # noqa: E402  (after torchvision_compat)
from torchvision.models import WeightsEnum  # noqa: E402

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Featurizer(nn.Module):
    """``trunk`` (images -> last conv map) + global average pooling + optional ``top`` + dropout.

    Attributes:
        n_outputs: width of the features. map_channels: channels of the last convolutional map.
        freeze_bn: keep BatchNorm layers in eval mode during training.
    """

    def __init__(self, trunk: nn.Module, map_channels: int, *, top: nn.Module | None = None,
                 top_outputs: int | None = None, normalize: bool = True, freeze_bn: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.trunk = trunk
        self.top = top if top is not None else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.map_channels = map_channels
        self.n_outputs = top_outputs if top is not None else map_channels
        self.normalize = normalize
        self.freeze_bn = freeze_bn
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.train()

    def train(self, mode: bool = True) -> "Featurizer":
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward_maps(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> last convolutional map (B, map_channels, h, w)."""
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.trunk(x)

    def pool(self, maps: Tensor) -> Tensor:
        """(B, map_channels, h, w) -> features (B, n_outputs)."""
        return self.dropout(self.top(maps.mean(dim=(2, 3))))

    def forward_with_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features (B, n_outputs), last convolutional map (B, map_channels, h, w))."""
        maps = self.forward_maps(x)
        return self.pool(maps), maps

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_maps(x))


def tiny_cnn(width: int = 32) -> tuple[nn.Module, int]:
    """A three-layer CNN (stride 2, 2, 1; BatchNorm; ReLU) for tests: (trunk, map channels)."""
    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*block(3, width // 2, 2), *block(width // 2, width, 2), *block(width, width, 1)), width


def _resnet_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, int, int]:
    trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                          model.layer3, model.layer4)
    return trunk, model.fc, model.fc.in_features, model.fc.out_features


def _features_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, int, int]:
    """EfficientNet / MobileNetV2: ``features`` is the trunk, ``classifier`` = (Dropout, Linear) the top."""
    linear = model.classifier[-1]
    return model.features, model.classifier, linear.in_features, linear.out_features


ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], Callable[[nn.Module], tuple], str]] = {
    "resnet18": (torchvision.models.resnet18, _resnet_parts, "fc."),
    "resnet50": (torchvision.models.resnet50, _resnet_parts, "fc."),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, _features_parts, "classifier."),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, _features_parts, "classifier."),
}
"""torchvision architectures: (builder, split into (trunk, top, map channels, top outputs), top key prefix)."""

BACKBONES: tuple[str, ...] = (*ARCHITECTURES, "tiny")


def resolve_weights(architecture: str, weights: Any) -> WeightsEnum | Path | None:
    """``weights`` as a torchvision enum member, a local file path, or None (see the module docstring)."""
    if weights is None or isinstance(weights, WeightsEnum):
        return weights
    if isinstance(weights, Path) or Path(str(weights)).is_file():
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"{path}: weights file not found")
        return path
    enum = torchvision.models.get_model_weights(architecture)
    name = str(weights)
    try:
        return enum[name] if "." not in name else torchvision.models.get_weight(name)
    except (KeyError, ValueError, AttributeError):
        names = ", ".join(enum.__members__)
        raise InputError(f"weights {name!r} are neither a file nor a torchvision weight name of {architecture} "
                         f"(available: {names})") from None


def weights_name(weights: Any) -> str | None:
    """A string that :func:`resolve_weights` maps back to ``weights`` (for configs and checkpoints)."""
    if weights is None:
        return None
    return str(weights)


def _load_state_dict_file(model: nn.Module, path: Path, top_prefix: str, include_top: bool) -> None:
    state = checkpoints.load_weights_only(path, "weights")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a state dict (parameter name -> tensor) of the full torchvision model")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if not include_top:
        state = {key: value for key, value in state.items() if not key.startswith(top_prefix)}
    expected = model.state_dict()
    wrong_shape = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    missing = [k for k in expected if k not in state and (include_top or not k.startswith(top_prefix))]
    unexpected = [k for k in state if k not in expected]
    if wrong_shape or missing or unexpected:
        raise InputError(f"{path}: weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"wrong shape {wrong_shape[:5]}")
    model.load_state_dict(state, strict=False)


def build_featurizer(name: str, weights: Any = None, *, freeze_bn: bool = True, dropout: float = 0.0,
                     include_top: bool = False, normalize: bool = True) -> Featurizer:
    """A :class:`Featurizer` of backbone ``name`` (:data:`BACKBONES`); see the module docstring for ``weights``.

    Output widths: resnet18 512, resnet50 2048, efficientnet_b0 1280, mobilenet_v2 1280, tiny 32; with
    ``include_top`` the ImageNet classifier's 1000.
    """
    if name == "tiny":
        if weights is not None or include_top:
            raise InputError("the 'tiny' test backbone has no pretrained weights and no top")
        trunk, channels = tiny_cnn()
        return Featurizer(trunk, channels, normalize=normalize, freeze_bn=freeze_bn, dropout=dropout)
    if name not in ARCHITECTURES:
        raise InputError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    builder, split, top_prefix = ARCHITECTURES[name]
    resolved = resolve_weights(name, weights)
    model = builder(weights=resolved if isinstance(resolved, WeightsEnum) else None)
    if isinstance(resolved, Path):
        _load_state_dict_file(model, resolved, top_prefix, include_top)
    if resolved is not None:
        logger.info("%s: loaded weights %s", name, resolved)
    trunk, top, channels, top_outputs = split(model)
    return Featurizer(trunk, channels, top=top if include_top else None, top_outputs=top_outputs,
                      normalize=normalize, freeze_bn=freeze_bn, dropout=dropout)
