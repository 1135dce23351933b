"""The base layer's one model-identity builder, the default device and the torchrun set-up outside torchrun."""
import hashlib

import pytest

from aecfe.devices import default_device, resolve_device
from aecfe.errors import InputError
from aecfe.distributed import init_distributed, world
from aecfe.identity import DETECTOR_OPTIONS, detector_identity, file_tag, model_identity, sha256_file


def test_detector_identity_records_every_option_and_the_checkpoint_hash(tmp_path):
    checkpoint = tmp_path / "det.pt"
    checkpoint.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    identity = detector_identity(checkpoint, "torchvision", min_size=128, score_threshold=0.5)
    assert identity == {"config": {"backend": "torchvision", "backbone": None, "min_size": 128, "max_size": None,
                                   "score_threshold": 0.5, "single_cell_fallback": None},
                        "weights_sha256": digest}
    assert set(identity["config"]) == {"backend", *DETECTOR_OPTIONS}
    assert identity == model_identity(identity["config"], checkpoint)  # the one builder underneath
    assert sha256_file(checkpoint) == digest and file_tag("checkpoint", checkpoint) == f"checkpoint:det.pt:sha256={digest}"
    with pytest.raises(ValueError, match="unknown option"):
        detector_identity(checkpoint, threshold=0.5)


def test_extract_features_and_the_demo_build_detector_identities_alike(tmp_path):
    """Both programs go through aecfe.identity: the same options give the same identity."""
    from aecfe.pipeline import detector_factory

    checkpoint = tmp_path / "det.pt"
    checkpoint.write_bytes(b"w")
    options = {"score_threshold": 0.5, "single_cell_fallback": "center", "min_size": 128, "max_size": 128}
    factory, identity = detector_factory(checkpoint, "torchvision", **options)
    assert callable(factory) and identity == detector_identity(checkpoint, "torchvision", **options)
    assert detector_factory(None) == (None, None)


def test_default_device_is_cuda_when_available_else_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu" and resolve_device(None) == "cpu"
    with pytest.raises(InputError, match="no such CUDA device"):  # checked, never a silent fall-back
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert default_device() == "cuda"
    monkeypatch.setenv("LOCAL_RANK", "3")  # under torchrun each process takes its own GPU
    assert default_device() == "cuda:3" == resolve_device(None)


def test_outside_torchrun_the_process_is_alone(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == (0, 1) == world()
