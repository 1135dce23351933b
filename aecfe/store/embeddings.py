"""Embedding stages: every writer of ``/embeddings/<name>`` — the baselines, the autoencoder's codes and the CNN
codes — as an :class:`EmbeddingStage` committed block by block by the one resumable writer
:func:`write_embedding_stage`.

One attribute schema for every embedding (:func:`embedding_attrs`), stored as the dataset's ``provenance``::

    {"kind": "baseline" | "autoencoder" | "cnn",     # which stage wrote it
     "features": "<what one row is, one line>",
     "model": {"config": {...}, "weights_sha256": "<hex>" | None} | None,   # aecfe.identity.model_identity
     ...}                                              # kind-specific details, e.g. the autoencoder's
                                                       # "trainer" config and "domain_ids" of training

A resumed write must bring the same attrs (:meth:`~aecfe.store.CellStore.write_embedding` refuses others), so an
embedding is never continued with another model.

Stages: ``rcnn_roi`` (RoI features averaged over the 14x14 grid: 256-d, the R-CNN-RF baseline of METHODS §1.8),
``raw_pixels`` (the crop block-averaged to ``side`` x ``side`` RGB in [0, 1]) — :func:`baseline_stage`; the
AE-CFE code z (:func:`autoencoder_stage`); a torchvision CNN's pooled features of the crop (:func:`cnn_stage`,
the ResNet-RF baseline).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from tqdm import tqdm

from aecfe.errors import InputError
from aecfe.identity import model_identity
from aecfe.store.core import CellStore

EMBEDDING_BLOCK = 1024
"""Cells read, embedded and committed at a time by :func:`write_embedding_stage`."""
BASELINE_EMBEDDINGS = ("rcnn_roi", "raw_pixels")
RAW_PIXEL_SIDE = 8
EMBEDDING_KINDS = ("baseline", "autoencoder", "cnn")
"""Values of an embedding's ``kind`` attribute."""


def embedding_attrs(kind: str, features: str, model: Mapping | None = None, **details) -> dict:
    """The attrs of one embedding in the one schema (module docstring): ``{"kind", "features", "model",
    **details}``; ``model`` is a :func:`aecfe.identity.model_identity` dict or None (a model-free baseline)."""
    if kind not in EMBEDDING_KINDS:
        raise InputError(f"unknown embedding kind {kind!r}; expected one of {EMBEDDING_KINDS}")
    return {"kind": kind, "features": str(features), "model": None if model is None else dict(model), **details}


@dataclass(frozen=True)
class EmbeddingStage:
    """One named embedding: ``compute(store, rows: slice) -> (k, D) array`` for the cells ``rows``, and the
    ``attrs`` recorded with it (its identity, :func:`embedding_attrs`: a resumed run must bring the same)."""

    name: str
    compute: Callable[[CellStore, slice], np.ndarray]
    attrs: Mapping


def roi_mean_features(roi: np.ndarray) -> np.ndarray:
    """RoI features (N, C, H, W) -> (N, C) float32: the mean over the H x W grid (R-CNN-RF baseline)."""
    roi = np.asarray(roi)
    if roi.ndim != 4:
        raise ValueError(f"RoI features must be (N, C, H, W), got shape {roi.shape}")
    return roi.mean(axis=(2, 3), dtype=np.float32)


def block_average(images: np.ndarray, side: int) -> np.ndarray:
    """``(N, 3, S, S)`` uint8 -> ``(N, 3 * side * side)`` float32 in [0, 1], mean over ``S/side`` blocks."""
    n, channels, height, width = images.shape
    if height % side or width % side:
        raise ValueError(f"crop side {height}x{width} is not a multiple of {side}")
    blocks = images.reshape(n, channels, side, height // side, side, width // side)
    return (blocks.mean(axis=(3, 5), dtype=np.float32) / 255.0).reshape(n, -1)


def baseline_stage(name: str, pixel_side: int = RAW_PIXEL_SIDE) -> EmbeddingStage:
    """``"rcnn_roi"`` (needs the roi stage) or ``"raw_pixels"`` (needs crops) as an :class:`EmbeddingStage`."""
    if name == "rcnn_roi":
        return EmbeddingStage(name, lambda store, rows: roi_mean_features(store.roi(rows)),
                              embedding_attrs("baseline", "RoI features averaged over the 14x14 grid "
                                                          "(R-CNN-RF baseline)"))
    if name == "raw_pixels":
        return EmbeddingStage(name, lambda store, rows: block_average(store.crops(rows), pixel_side),
                              embedding_attrs("baseline", f"crop block-averaged to {pixel_side}x{pixel_side} RGB "
                                                          "in [0, 1]"))
    raise InputError(f"unknown baseline embedding {name!r}; choose from {BASELINE_EMBEDDINGS}")


def autoencoder_stage(checkpoint: str | os.PathLike, name: str | None = None, batch_size: int = 256,
                      device: str = "cpu", extra_attrs: Mapping | None = None) -> EmbeddingStage:
    """The AE-CFE code z of every cell (from its RoI features) with the autoencoder of a trainer checkpoint.

    ``name`` defaults to ``ae_<alignment>`` (e.g. ``ae_mmd``) from the checkpoint's trainer config.
    The attrs: kind ``autoencoder``, the model's identity (config and the checkpoint's sha256), its ``trainer``
    config, plus ``extra_attrs`` (e.g. the ``domain_ids`` of training).
    """
    import torch

    from extractors.trainer import encode_dataset, load_autoencoder, read_checkpoint

    state = read_checkpoint(checkpoint)
    model = load_autoencoder(checkpoint).to(torch.device(device))
    name = name or f"ae_{state['trainer_config'].get('alignment', 'none')}"
    attrs = embedding_attrs("autoencoder", f"AE-CFE code z ({model.config.bottleneck}-d) of the RoI features",
                            model_identity(model.config.to_dict(), checkpoint), trainer=state["trainer_config"],
                            **(extra_attrs or {}))

    def encode(store: CellStore, rows: slice) -> np.ndarray:
        return encode_dataset(model, store.roi(rows), batch_size)

    return EmbeddingStage(name, encode, attrs)


def cnn_stage(backbone: str = "mobilenet_v2", weights: Any = None, image_size: int = 128, batch_size: int = 64,
              name: str = "cnn", device: str = "cpu") -> EmbeddingStage:
    """The CNN embedding of the store's crops (:func:`extractors.cnn_features.cnn_features` of
    :func:`classifiers.dg.backbones.build_featurizer`) as an :class:`EmbeddingStage` (resumable). Its model
    identity records the backbone, the weights' name and the image size, and the sha256 of a local weights file.
    ``device``: where the CNN runs (not part of the identity)."""
    from classifiers.dg.backbones import build_featurizer, weights_name
    from extractors.cnn_features import cnn_features

    import torch

    featurizer = build_featurizer(backbone, weights, freeze_bn=True).to(torch.device(device))
    local = weights is not None and Path(str(weights)).is_file()
    model = model_identity({"backbone": backbone, "weights": weights_name(weights), "image_size": image_size},
                           weights if local else None)
    attrs = embedding_attrs("cnn", f"{backbone} global-pooled last conv map of the crop at {image_size} px", model)

    def compute(store: CellStore, rows: slice) -> np.ndarray:
        return cnn_features(featurizer, store.crops(rows), image_size, batch_size)

    return EmbeddingStage(name, compute, attrs)


def write_embedding_stage(store: CellStore, stage: EmbeddingStage, block: int = EMBEDDING_BLOCK,
                          progress: bool = True) -> int:
    """Compute and commit ``stage`` for the store's cells not embedded yet; returns the rows written now.

    Resumes at ``store.embedding_progress(stage.name)``; each block of ``block`` cells is committed on its
    own, so a crash loses at most the block being written.
    """
    store.flush()
    total, start = len(store), store.embedding_progress(stage.name)
    if start >= total:
        return 0
    with tqdm(total=total, initial=start, desc=f"embedding {stage.name}", unit="cell", disable=not progress) as bar:
        for first in range(start, total, block):
            rows = slice(first, min(first + block, total))
            store.write_embedding(stage.name, first, stage.compute(store, rows), attrs=stage.attrs)
            bar.update(rows.stop - rows.start)
    return total - start


def write_embedding(store_path: str | os.PathLike, stage: EmbeddingStage, block: int = EMBEDDING_BLOCK,
                    progress: bool = True) -> int:
    """:func:`write_embedding_stage` into the store at ``store_path`` (opened for appending, then closed)."""
    with CellStore.open(store_path, "a") as store:
        return write_embedding_stage(store, stage, block, progress)
