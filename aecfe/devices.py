"""The one default-device rule (base layer): every program and library function that takes ``device=None``
resolves it here, so "where does it run" has one answer.

Rule: CUDA when PyTorch sees a CUDA device, else the CPU. Under ``torchrun`` (env ``LOCAL_RANK``) each process
takes its own GPU, ``cuda:<LOCAL_RANK>``.

>>> default_device() in ("cpu", "cuda") or default_device().startswith("cuda:")
True
"""
from __future__ import annotations

import os


def default_device() -> str:
    """``"cuda"`` (``"cuda:<LOCAL_RANK>"`` under torchrun) when PyTorch sees a CUDA device, else ``"cpu"``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(local_rank)}" if local_rank is not None else "cuda"


def resolve_device(device: str | None) -> str:
    """``device`` as given (e.g. ``"cpu"``, ``"cuda:1"``), or :func:`default_device` when it is None."""
    return default_device() if device is None else str(device)
