"""The one default-device rule (base layer): every program and library function that takes ``device=None``
resolves it here, so "where does it run" has one answer.

Rule: CUDA when PyTorch sees a CUDA device, else the CPU. Under ``torchrun`` (env ``LOCAL_RANK``) each process
takes its own GPU, ``cuda:<LOCAL_RANK mod the number of GPUs>``.

>>> default_device() in ("cpu", "cuda") or default_device().startswith("cuda:")
True
"""
from __future__ import annotations

import os

from aecfe.errors import InputError


def default_device() -> str:
    """``"cuda"`` (``"cuda:<LOCAL_RANK mod GPUs>"`` under torchrun) when PyTorch sees a CUDA device, else ``"cpu"``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        return "cuda"
    count = torch.cuda.device_count()
    return f"cuda:{int(local_rank) % count if count else int(local_rank)}"  # more processes than GPUs share them


def resolve_device(device: str | None = None) -> str:
    """``device`` checked (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), or :func:`default_device` when it is
    None, empty or ``"auto"``. A device that is not available here is an :class:`~aecfe.errors.InputError`, never
    a silent fall-back to the CPU."""
    import torch

    if device in (None, "", "auto"):
        return default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"--device {device!r}: not a torch device ({error})") from error
    if parsed.type == "cuda" and (not torch.cuda.is_available()
                                  or (parsed.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"--device {device}: no such CUDA device here (cuda available: {torch.cuda.is_available()})")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device}: MPS is not available here")
    return str(parsed)
