"""The one --device rule: the GPU when present, else the CPU; an unavailable device is a clear error."""
import pytest
import torch

from aecfe.devices import resolve_device
from aecfe.errors import InputError


def test_default_is_the_gpu_when_present_else_the_cpu():
    assert resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None) and resolve_device("cpu") == "cpu"


def test_unavailable_or_unknown_devices_are_refused():
    with pytest.raises(InputError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(InputError, match="no such CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_torchrun_processes_share_the_gpus_round_robin(monkeypatch):
    import torch

    from aecfe.devices import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert default_device() == "cuda:1"
    monkeypatch.delenv("LOCAL_RANK")
    assert default_device() == "cuda"
