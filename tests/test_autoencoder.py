"""The AE-CFE autoencoder (extractors/autoencoder.py): shapes, the reference group norm, input scaling, config."""
import pytest
import torch
from torch import nn

from aecfe.errors import InputError
from extractors.autoencoder import (AECFEAutoencoder, AutoencoderConfig, ChunkGroupNorm, GROUP_NORMS,
                                    scale_roi_features)


class LiteralReferenceGroupNorm(nn.Module):
    """The reference ``model.py`` GroupNorm, line for line (parameters shaped (1, C, 1, 1))."""

    def __init__(self, num_features, num_groups=32, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.num_groups = num_groups
        self.eps = eps

    def forward(self, x):
        N, C, H, W = x.size()
        G = self.num_groups
        x = x.view(N, G, -1)
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True)
        x = (x - mean) / (var + self.eps).sqrt()
        x = x.view(N, C, H, W)
        return x * self.weight + self.bias


@pytest.mark.parametrize("channels, groups, size", [(200, 32, 12), (150, 30, 5), (60, 20, 1), (70, 10, 2)])
def test_chunk_group_norm_equals_the_literal_reference(channels, groups, size):
    gen = torch.Generator().manual_seed(channels)
    x = torch.randn(3, channels, size, size, generator=gen) * 3 + 1
    ours, reference = ChunkGroupNorm(channels, groups), LiteralReferenceGroupNorm(channels, groups)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(channels, generator=gen))
        ours.bias.copy_(torch.randn(channels, generator=gen))
        reference.weight.copy_(ours.weight.view(1, -1, 1, 1))
        reference.bias.copy_(ours.bias.view(1, -1, 1, 1))
    assert torch.allclose(ours(x), reference(x), atol=1e-5)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(ours(channels_last), reference(x), atol=1e-5)


def test_chunk_group_norm_rejects_indivisible_inputs():
    with pytest.raises(ValueError, match="groups of >= 2"):
        ChunkGroupNorm(7, 3)(torch.randn(1, 7, 1, 1))
    with pytest.raises(ValueError, match="groups of >= 2"):  # one value per chunk: no unbiased variance
        ChunkGroupNorm(4, 4)(torch.randn(1, 4, 1, 1))


@pytest.mark.parametrize("bottleneck", [5, 50, 1000])
@pytest.mark.parametrize("group_norm", GROUP_NORMS)
def test_forward_shapes_and_ranges(bottleneck, group_norm):
    torch.manual_seed(0)
    model = AECFEAutoencoder(AutoencoderConfig(bottleneck=bottleneck, group_norm=group_norm))
    h = model.scale_input(torch.randn(2, 256, 14, 14))
    z, h_hat, r_hat = model(h)
    assert z.shape == (2, bottleneck) and h_hat.shape == (2, 256, 14, 14) and r_hat.shape == (2, 3, 128, 128)
    assert z.abs().max() <= 1 and h_hat.abs().max() <= 1 and 0 <= r_hat.min() and r_hat.max() <= 1
    assert torch.equal(model.encode(h), z)


def test_layer_one_norm_is_chunked_32_or_library_40_groups_and_checkpoints_are_interchangeable():
    faithful = AECFEAutoencoder(AutoencoderConfig(group_norm="chunk"))
    library = AECFEAutoencoder(AutoencoderConfig(group_norm="torch"))
    assert isinstance(faithful.encoder[2], ChunkGroupNorm) and faithful.encoder[2].num_groups == 32
    assert isinstance(library.encoder[2], nn.GroupNorm) and library.encoder[2].num_groups == 40
    library.load_state_dict(faithful.state_dict())  # same names and shapes
    h = faithful.scale_input(torch.randn(2, 256, 14, 14))
    assert not torch.allclose(faithful.encode(h), library.encode(h))  # the variants differ (biased variance)


def test_minmax_scaling_maps_each_sample_to_minus_one_one():
    roi = torch.randn(3, 256, 14, 14) * torch.tensor([1.0, 10.0, 0.1]).view(3, 1, 1, 1) + 5
    roi[2] = 7.0  # a constant sample
    h = scale_roi_features(roi.half())
    assert h.dtype == torch.float32
    assert torch.allclose(h[:2].flatten(1).amin(1), torch.tensor([-1.0, -1.0]))
    assert torch.allclose(h[:2].flatten(1).amax(1), torch.tensor([1.0, 1.0]))
    assert torch.equal(h[2], torch.zeros(256, 14, 14))
    assert torch.equal(scale_roi_features(roi, "none"), roi)
    with pytest.raises(InputError, match="unknown input scaling"):
        scale_roi_features(roi, "zscore")


def test_config_round_trips_through_json_and_rejects_bad_values():
    config = AutoencoderConfig(bottleneck=10, group_norm="torch", input_scaling="none")
    assert AutoencoderConfig.from_json(config.to_json()) == config
    with pytest.raises(InputError, match="unknown AutoencoderConfig keys"):
        AutoencoderConfig.from_dict({"bottleneck": 10, "depth": 3})
    with pytest.raises(InputError, match="bottleneck"):
        AutoencoderConfig(bottleneck=0)
    with pytest.raises(InputError, match="group_norm"):
        AutoencoderConfig(group_norm="batch")
