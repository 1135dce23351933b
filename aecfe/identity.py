"""The one model-identity builder (base layer): what a store's provenance, an embedding's attrs and a detector's
``config()`` record about a model, so that a resumed run can tell "the same model" from "another model".

* :func:`sha256_file` — hex SHA-256 of a file's bytes (a weights file's identity).
* :func:`file_tag` — ``"<kind>:<file name>:sha256=<hex>"``, the one-string form (a detector's ``weights``).
* :func:`model_identity` — ``{"config": {...}, "weights_sha256": hex or None}``, the dict form every store
  provenance and embedding attribute uses.
* :func:`detector_identity` — :func:`model_identity` of a detector given by its checkpoint and the options it is
  built with, known *without* building the model (a resumed extraction with nothing left to detect never loads
  it). Every program that writes a store (``extract_features``, the demo) builds its detector identity here.

Example::

    >>> model_identity({"layers": 3}, None)
    {'config': {'layers': 3}, 'weights_sha256': None}
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

DETECTOR_OPTIONS = ("backbone", "min_size", "max_size", "score_threshold", "single_cell_fallback")
"""The detector options a detector identity records (None: the checkpoint's own value or make_detector's
default)."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (a weights file's identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_tag(kind: str, path: str | os.PathLike) -> str:
    """``"<kind>:<file name>:sha256=<hex of the file>"``: a weights file named in one string (e.g. a detector's
    ``config()["weights"]``, ``kind`` = ``"checkpoint"`` or ``"file"``)."""
    return f"{kind}:{Path(path).name}:sha256={sha256_file(path)}"


def model_identity(config: Mapping, weights: str | os.PathLike | None) -> dict:
    """``{"config": config, "weights_sha256": sha256 of the weights file or None}`` for provenance."""
    return {"config": dict(config), "weights_sha256": None if weights is None else sha256_file(weights)}


def detector_identity(checkpoint: str | os.PathLike, backend: str = "torchvision", **options) -> dict:
    """:func:`model_identity` of the detector ``make_detector(backend, checkpoint=checkpoint, **options)``:
    config ``{"backend": backend, <each of DETECTOR_OPTIONS>: value or None}`` and the checkpoint's SHA-256.

    ``options`` outside :data:`DETECTOR_OPTIONS` are refused (ValueError), so two programs cannot record the
    same detector differently.
    """
    unknown = set(options) - set(DETECTOR_OPTIONS)
    if unknown:
        raise ValueError(f"detector identity: unknown option(s) {sorted(unknown)}; expected {DETECTOR_OPTIONS}")
    config = {"backend": backend, **{name: options.get(name) for name in DETECTOR_OPTIONS}}
    return model_identity(config, checkpoint)
