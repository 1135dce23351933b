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
