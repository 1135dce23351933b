"""A model bundle: everything needed to classify the cells of new images, in one folder, without pickle.

Layout (every file listed with its SHA-256 in ``manifest.json``)::

    bundle/
      manifest.json     {"format": "aecfe.bundle/1", "aecfe_version", "created_utc", "files": {name: sha256}}
      bundle.json       classes, label scheme, embedder, preprocessing, head, provenance (below)
      detector.pt       Mask R-CNN weights only: {"format": "aecfe.detector.torchvision", "arch", "model"}
      autoencoder.pt    (autoencoder embedder) AE-CFE weights only: {"format", "model_config", "trainer_config",
                        "n_domains", "model"}; no optimizer
      cnn.pt            (CNN embedder) {"format": "aecfe.cnn_embedder/1", "backbone", "image_size", "model"}
      head.json + head.xgb.json | head.skops   the fitted head (:func:`classifiers.heads.save_head`)

``bundle.json``: ``classes`` (the head's output order), ``scheme`` (the label scheme the head was trained in;
the store holds canonical classes), ``embedder`` (``kind``: ``autoencoder`` / ``cnn`` / ``baseline``, the
embedding ``name`` and its settings), ``preprocessing`` (detector backend and backbone, ``min_size`` /
``max_size``, ``score_threshold``, ``single_cell_fallback``, RoI and crop shapes, the autoencoder's
``input_scaling`` or the CNN's ``image_size``), ``head`` (its class; parameters in ``head.json``) and
``provenance`` (package version, training store path and SHA-256, training command, validation scores).

Loading (:func:`load_bundle`) refuses, with an :class:`~aecfe.errors.InputError` naming the file: a missing
manifest or part, a file whose SHA-256 differs from the manifest (altered), a file the manifest does not list
(unknown content), another bundle format, or a bundle written by another package version line (another major
version; under 0.x, another minor version, as semantic versioning makes 0.y releases incompatible).

API (kept small; ``aecfe-train-classifier``, ``aecfe-predict`` and ``aecfe-adapt`` use only this)::

    embedder = embedder_from_store(store, "ae", autoencoder_checkpoint="ae/checkpoint.pt")
    save_bundle("bundle", head, detector_checkpoint="det/last.pt", embedder=embedder, scheme="five",
                detector_options=store.provenance["detector"]["config"], provenance={...})
    bundle = load_bundle("bundle")
    bundle.classes; bundle.scheme; bundle.head                  # the fitted head (predict_proba)
    bundle.detector_checkpoint; bundle.autoencoder_checkpoint   # weights-only files (to refit or adapt)
    bundle.detector(device)                                     # detectors.base.Detector
    bundle.embedding_stage(device)                              # aecfe.pipeline.EmbeddingStage
    frame = bundle.predict_store("cells.h5", device="cpu")     # encodes (resumable) and predicts every cell
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from aecfe import __version__
from aecfe.errors import InputError
from aecfe.shapes import CROP_SHAPE, ROI_SHAPE
from aecfe.identity import sha256_file

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "aecfe.bundle/1"
MANIFEST = "manifest.json"
BUNDLE_JSON = "bundle.json"
DETECTOR_FILE = "detector.pt"
AUTOENCODER_FILE = "autoencoder.pt"
CNN_FILE = "cnn.pt"
CNN_FORMAT = "aecfe.cnn_embedder/1"
EMBEDDER_KINDS = ("autoencoder", "cnn", "baseline")
PROBABILITY_PREFIX = "p_"
"""Column prefix of the per-class probabilities in :meth:`Bundle.predict_store`'s frame."""


def version_compatible(theirs: str, ours: str = __version__) -> bool:
    """Same major version (and, under 0.x, the same minor version: semantic versioning's unstable line)."""
    a, b = str(theirs).split("."), str(ours).split(".")
    return a[0] == b[0] and (a[0] != "0" or a[1:2] == b[1:2])


@dataclasses.dataclass
class EmbedderSpec:
    """How the cells' embedding is computed: ``kind`` (``autoencoder``, ``cnn``, ``baseline``), the embedding
    ``name`` in the store, ``config`` (JSON: what :meth:`Bundle.embedding_stage` needs) and ``weights`` (the
    dict saved weights-only as the embedder's file, None for a baseline)."""

    kind: str
    name: str
    config: dict
    weights: dict | None = None

    @property
    def file(self) -> str | None:
        return {"autoencoder": AUTOENCODER_FILE, "cnn": CNN_FILE}.get(self.kind)


def embedder_from_store(store, embedding: str, *, autoencoder_checkpoint: str | os.PathLike | None = None,
                        cnn_weights: str | None = None, cnn_image_size: int | None = None) -> EmbedderSpec:
    """The embedder that wrote ``embedding`` into ``store`` (an open :class:`~aecfe.store.CellStore`).

    An autoencoder embedding needs its trainer checkpoint (its SHA-256 must be the one the embedding records);
    a CNN embedding is rebuilt from the recorded backbone and weights (``cnn_weights`` overrides a local file's
    path); ``rcnn_roi`` / ``raw_pixels`` need nothing. :class:`InputError` when the embedder cannot be rebuilt.
    """
    attrs = store.embedding_attrs(embedding)
    model = attrs.get("model") or {}
    if attrs.get("kind") == "autoencoder":
        if autoencoder_checkpoint is None:
            raise InputError(f"{store.path}: embedding {embedding!r} is an autoencoder's; give its checkpoint "
                             "(--autoencoder-checkpoint)")
        from extractors.trainer import read_checkpoint

        recorded = model.get("weights_sha256")
        if recorded and sha256_file(autoencoder_checkpoint) != recorded:
            raise InputError(f"{autoencoder_checkpoint}: not the checkpoint that wrote embedding {embedding!r} "
                             f"of {store.path} (sha256 {recorded[:12]}...)")
        state = read_checkpoint(autoencoder_checkpoint)
        weights = {key: state[key] for key in ("format", "model_config", "trainer_config", "n_domains", "model")}
        return EmbedderSpec("autoencoder", embedding, {"model_config": state["model_config"]}, weights)
    if attrs.get("kind") == "cnn":
        from classifiers.dg.backbones import build_featurizer

        config = model.get("config", {})
        backbone = config["backbone"]
        weights_source = cnn_weights or config.get("weights")
        if weights_source is None:
            raise InputError(f"{store.path}: embedding {embedding!r} came from a randomly initialised "
                             f"{backbone}; a bundle cannot rebuild it (embed with --weights)")
        image_size = int(config.get("image_size") or cnn_image_size or 128)
        if cnn_image_size is not None and int(cnn_image_size) != image_size:
            raise InputError(f"{store.path}: embedding {embedding!r} was computed at {image_size} px crops; "
                             f"a CNN at {cnn_image_size} px does not reproduce embedding {embedding!r}")
        featurizer = build_featurizer(backbone, weights_source, freeze_bn=True)
        weights = {"format": CNN_FORMAT, "backbone": backbone, "image_size": image_size,
                   "model": featurizer.state_dict()}
        return EmbedderSpec("cnn", embedding, {"backbone": backbone, "image_size": image_size}, weights)
    from aecfe.store.embeddings import BASELINE_EMBEDDINGS

    if embedding in BASELINE_EMBEDDINGS:
        return EmbedderSpec("baseline", embedding, {})
    raise InputError(f"{store.path}: embedding {embedding!r} records no autoencoder or CNN, and is not a "
                     f"baseline {BASELINE_EMBEDDINGS}: a bundle cannot recompute it")


# ---------------------------------------------------------------------------------------------- writing
def save_bundle(out: str | os.PathLike, head, *, detector_checkpoint: str | os.PathLike, embedder: EmbedderSpec,
                scheme: str = "canonical", detector_options: Mapping | None = None,
                provenance: Mapping | None = None, overwrite: bool = False) -> Path:
    """Write a bundle folder ``out`` (see the module docstring); returns its path.

    Args:
        head: a fitted :class:`classifiers.heads.EmbeddingHead` on ``embedder``'s embedding.
        detector_checkpoint: a torchvision detector checkpoint (:mod:`detectors.training`); only its
            architecture and weights are kept.
        embedder: from :func:`embedder_from_store`.
        scheme: the label scheme of the head's classes.
        detector_options: the extraction's detector options (a store's ``provenance["detector"]["config"]``:
            ``min_size``, ``max_size``, ``score_threshold``, ``single_cell_fallback``; None = the checkpoint's).
        provenance: JSON-able facts to keep (training store and its hash, command, validation scores).
        overwrite: replace an existing folder ``out``; otherwise an existing one is an error.

    The folder is written beside ``out`` under a temporary name and renamed when complete.
    """
    import torch

    from aecfe.checkpoints import save_atomic
    from classifiers.heads import save_head
    from detectors.torchvision_backend import CHECKPOINT_FORMAT, load_checkpoint

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists already; choose another folder or overwrite it")
    if embedder.kind not in EMBEDDER_KINDS:
        raise InputError(f"unknown embedder kind {embedder.kind!r}; expected one of {EMBEDDER_KINDS}")
    detector = load_checkpoint(detector_checkpoint)
    options = {key: value for key, value in dict(detector_options or {}).items() if value is not None}
    if options.get("backend", "torchvision") != "torchvision":
        raise InputError(f"{detector_checkpoint}: bundles hold torchvision detectors only, not {options['backend']}")
    arch = detector["arch"]
    preprocessing = {"detector_backend": "torchvision", "backbone": arch["backbone"],
                     "min_size": int(options.get("min_size") or arch["min_size"]),
                     "max_size": int(options.get("max_size") or arch["max_size"]),
                     "score_threshold": float(options.get("score_threshold", 0.5)),
                     "single_cell_fallback": options.get("single_cell_fallback") or "none",
                     "roi_shape": list(ROI_SHAPE), "crop_shape": list(CROP_SHAPE)}
    if embedder.kind == "autoencoder":
        preprocessing["input_scaling"] = embedder.config["model_config"].get("input_scaling", "minmax")
    if embedder.kind == "cnn":
        preprocessing["image_size"] = embedder.config["image_size"]
    classes = [str(c) for c in head.classes_]
    description = {"format": BUNDLE_FORMAT, "classes": classes, "scheme": scheme,
                   "embedder": {"kind": embedder.kind, "name": embedder.name, "file": embedder.file,
                                **embedder.config},
                   "preprocessing": preprocessing,
                   "head": {"name": type(head).__name__, "file": "head.json"},
                   "provenance": {"aecfe_version": __version__, **dict(provenance or {})}}
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_atomic({"format": CHECKPOINT_FORMAT, "arch": arch, "model": detector["model"]}, staging / DETECTOR_FILE)
    if embedder.weights is not None:
        torch.save(embedder.weights, staging / embedder.file)
    save_head(head, staging)
    (staging / BUNDLE_JSON).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    files = {path.name: sha256_file(path) for path in sorted(staging.iterdir())}
    manifest = {"format": BUNDLE_FORMAT, "aecfe_version": __version__,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "files": files}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    logger.info("wrote bundle %s (%s, %d classes, embedder %s %r)", out, description["head"]["name"],
                len(classes), embedder.kind, embedder.name)
    return out


# ---------------------------------------------------------------------------------------------- reading
def verify_bundle(path: str | os.PathLike) -> dict:
    """Check a bundle folder against its manifest; returns the manifest. :class:`InputError` naming the file
    for a missing manifest or part, an altered file, an unlisted file, another format or version line."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise InputError(f"{path}: bundle folder not found")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{manifest_path}: cannot read the bundle manifest ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT or not isinstance(
            manifest.get("files"), dict):
        raise InputError(f"{manifest_path}: not a bundle manifest of format {BUNDLE_FORMAT}")
    if not version_compatible(manifest.get("aecfe_version", "?")):
        raise InputError(f"{manifest_path}: bundle written by aecfe {manifest.get('aecfe_version')}, this is aecfe "
                         f"{__version__} (another version line); retrain it with this version")
    for name, digest in manifest["files"].items():
        part = path / name
        if not part.is_file():
            raise InputError(f"{part}: part of the bundle is missing")
        if sha256_file(part) != digest:
            raise InputError(f"{part}: altered (its SHA-256 differs from {manifest_path})")
    unknown = sorted(p.name for p in path.iterdir() if p.name != MANIFEST and p.name not in manifest["files"])
    if unknown:
        raise InputError(f"{path}: unknown content not in {MANIFEST}: {unknown}")
    return manifest


def load_bundle(path: str | os.PathLike) -> "Bundle":
    """The verified bundle at ``path`` (:func:`verify_bundle`), with its head loaded."""
    from classifiers.heads import load_head

    path = Path(path)
    verify_bundle(path)
    description = json.loads((path / BUNDLE_JSON).read_text(encoding="utf-8"))
    if description.get("format") != BUNDLE_FORMAT or description["embedder"]["kind"] not in EMBEDDER_KINDS:
        raise InputError(f"{path / BUNDLE_JSON}: not a bundle description of format {BUNDLE_FORMAT}")
    head = load_head(path)
    if [str(c) for c in head.classes_] != description["classes"]:
        raise InputError(f"{path}: the head's classes {list(head.classes_)} differ from {BUNDLE_JSON}'s")
    return Bundle(path, description, head)


@dataclasses.dataclass
class Bundle:
    """A loaded bundle: ``path``, ``description`` (``bundle.json``) and the fitted ``head``."""

    path: Path
    description: dict
    head: Any

    @property
    def classes(self) -> list[str]:
        return list(self.description["classes"])

    @property
    def scheme(self) -> str:
        return self.description["scheme"]

    @property
    def embedding_name(self) -> str:
        return self.description["embedder"]["name"]

    @property
    def preprocessing(self) -> dict:
        return dict(self.description["preprocessing"])

    @property
    def detector_checkpoint(self) -> Path:
        """``detector.pt``: a detector checkpoint :func:`save_bundle` and ``make_detector`` accept."""
        return self.path / DETECTOR_FILE

    @property
    def autoencoder_checkpoint(self) -> Path | None:
        """``autoencoder.pt`` (weights only: a new trainer's model loads its ``model``; the optimizer starts
        fresh), or None when the embedder is not an autoencoder."""
        return self.path / AUTOENCODER_FILE if self.description["embedder"]["kind"] == "autoencoder" else None

    def detector_identity(self) -> dict:
        """The detector's identity for a store's provenance (options and the weights file's SHA-256)."""
        from aecfe.identity import model_identity

        pre = self.preprocessing
        config = {"backend": "torchvision", "backbone": pre["backbone"], "min_size": pre["min_size"],
                  "max_size": pre["max_size"], "score_threshold": pre["score_threshold"],
                  "single_cell_fallback": pre["single_cell_fallback"]}
        return model_identity(config, self.path / DETECTOR_FILE)

    def detector(self, device: str = "cpu"):
        """The bundle's :class:`detectors.base.Detector` with its recorded preprocessing, on ``device``."""
        from detectors.base import make_detector

        pre = self.preprocessing
        return make_detector("torchvision", checkpoint=str(self.path / DETECTOR_FILE), min_size=pre["min_size"],
                             max_size=pre["max_size"], score_threshold=pre["score_threshold"],
                             single_cell_fallback=pre["single_cell_fallback"], device=device)

    def embedding_stage(self, device: str = "cpu", batch_size: int = 256):
        """The :class:`aecfe.pipeline.EmbeddingStage` writing the bundle's embedding into a store."""
        from aecfe.store.embeddings import autoencoder_stage, baseline_stage

        embedder = self.description["embedder"]
        if embedder["kind"] == "autoencoder":
            return autoencoder_stage(self.path / AUTOENCODER_FILE, embedder["name"], batch_size, device=device)
        if embedder["kind"] == "baseline":
            return baseline_stage(embedder["name"])
        return self._cnn_stage(device, batch_size)

    def _cnn_stage(self, device: str, batch_size: int):
        import torch

        from aecfe.checkpoints import read_checkpoint
        from aecfe.store.embeddings import EmbeddingStage
        from classifiers.dg.backbones import build_featurizer
        from extractors.cnn_features import cnn_features

        state = read_checkpoint(self.path / CNN_FILE, CNN_FORMAT, "CNN embedder")
        featurizer = build_featurizer(state["backbone"], None, freeze_bn=True)
        featurizer.load_state_dict(state["model"])
        featurizer.to(torch.device(device))
        size = int(state["image_size"])
        attrs = {"features": f"{state['backbone']} of bundle {self.path.name}", "backbone": state["backbone"],
                 "weights": f"bundle:{sha256_file(self.path / CNN_FILE)}"}
        return EmbeddingStage(self.embedding_name, lambda store, rows: cnn_features(
            featurizer, store.crops(rows), size, batch_size), attrs)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) of embeddings ``X`` (N, D), columns in the order of :attr:`classes`."""
        return self.head.predict_proba(np.asarray(X, dtype=np.float32))

    def predict_store(self, store_path: str | os.PathLike, *, device: str = "cpu", progress: bool = True,
                      batch_size: int = 256) -> pd.DataFrame:
        """Write the bundle's embedding into the store (resumable) and predict every cell.

        Returns the store's cells frame (:meth:`aecfe.store.CellStore.cells`) plus ``p_<class>`` columns (one
        per class, rows summing to 1), ``predicted`` and ``probability`` (the predicted class's).
        """
        from aecfe.store.embeddings import write_embedding_stage
        from aecfe.store import CellStore

        with CellStore.open(store_path, "a") as store:
            if len(store):
                write_embedding_stage(store, self.embedding_stage(device, batch_size), progress=progress)
            cells = store.cells()
            X = store.embedding(self.embedding_name) if len(store) else np.zeros((0, self.head.n_features_in_))
        proba = self.predict_proba(X) if len(X) else np.zeros((0, len(self.classes)))
        for k, name in enumerate(self.classes):
            cells[PROBABILITY_PREFIX + name] = proba[:, k]
        cells["predicted"] = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)] if len(proba) else []
        cells["probability"] = proba.max(axis=1) if len(proba) else []
        return cells
