"""The one device rule of aecfe's programs (base layer: imports nothing of ours).

``--device`` defaults to the GPU when one is present (``cuda``), else the CPU; an explicit device that is not
available is an :class:`~aecfe.errors.InputError`, not a silent fall-back.
"""
from __future__ import annotations

from aecfe.errors import InputError


def resolve_device(name: str | None = None) -> str:
    """``name`` checked (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), or the default: ``"cuda"`` if
    ``torch.cuda.is_available()`` else ``"cpu"``."""
    import torch

    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"--device {name!r}: not a torch device ({error})") from error
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"--device {name}: no such CUDA device here (cuda available: {torch.cuda.is_available()})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS is not available here")
    return str(device)
