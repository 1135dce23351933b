"""The one default-device rule (base layer): every program and library function that takes ``device=None``
resolves it here, so "where does it run" has one answer.

>>> default_device() in ("cuda", "cpu")
True
"""
from __future__ import annotations


def default_device() -> str:
    """``"cuda"`` when PyTorch sees a CUDA device, else ``"cpu"`` (torch is imported on call)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """``device`` as given, or :func:`default_device` when it is None."""
    return default_device() if device is None else str(device)
