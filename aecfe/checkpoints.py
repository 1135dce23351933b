"""Checkpoint files: atomic writes and safe reads (``torch.load(..., weights_only=True)``, never pickle).

Every checkpoint aecfe writes is a dict of tensors and plain values with a ``"format"`` key naming what wrote
it (e.g. ``"aecfe.autoencoder/1"``), so a file of the wrong kind is refused with a clear error.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from aecfe.atomic import replacing
from aecfe.errors import InputError


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    with replacing(path) as temporary:
        torch.save(state, temporary)
    return Path(path)


def load_weights_only(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; :class:`InputError` naming the file
    and ``what`` it should have been when it is missing, corrupt or holds more than tensors and plain values."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise InputError(f"{path}: cannot read the {what} ({error})") from error


def read_checkpoint(path: str | os.PathLike, checkpoint_format: str, what: str) -> dict[str, Any]:
    """The checkpoint dict at ``path``; :class:`InputError` unless its ``"format"`` is ``checkpoint_format``."""
    state = load_weights_only(path, what)
    if not isinstance(state, dict) or state.get("format") != checkpoint_format:
        raise InputError(f"{path}: not a {what} of format {checkpoint_format}")
    return state
