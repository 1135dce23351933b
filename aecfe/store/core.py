"""The HDF5 cell store file (:class:`CellStore`): one file per extraction run, one row per detected cell.

The layout is documented for readers without aecfe in ``docs/store_layout.md``; in short::

    /                      attrs: format, schema_version, aecfe_version, created_utc, provenance (JSON),
                                  layout (JSON), chunk_cells, n_images, n_cells (commit marker)
    /images/<column>       one row per source image: image_path, domain, label, status, reason, n_cells,
                           content_sha1
    /cells/<column>        one row per cell: image_id, cell_index, label, box (N,4), score, mask_area,
                           crop (N,3,128,128) uint8 and roi (N,256,14,14) float16 when declared
    /embeddings/<name>     (N, D) float32; attrs rows_done, provenance (JSON), created_utc, aecfe_version

Strings are HDF5 variable-length UTF-8 (``h5py.string_dtype()``); a missing label is ``""``. A file
name that is not valid UTF-8 is stored as its raw bytes (``os.fsencode``), so names are kept losslessly;
aecfe reads every string with ``asstr(errors="surrogateescape")``, which gives back ``os.fsdecode`` of
those bytes. ``content_sha1`` is the 40-character hex SHA-1 of the image file's bytes (fixed-length
ASCII, ``""`` when the file could not be read). Nothing is pickled.

Integrity. Every dataset that HDF5 can filter (all but the variable-length string columns) carries
HDF5's fletcher32 checksum per chunk (``StoreLayout.checksum``); a damaged chunk raises
:class:`StoreError` naming the file and the dataset when read, and :func:`verify_store` reads every
chunk of a store and lists what is damaged.

Crash safety. Writes are appends in committed chunks: ``flush`` extends the datasets, writes the
rows, flushes the file (and fsyncs), and only then updates the commit marker (the root attributes
``n_images`` and ``n_cells``) and flushes again. Rows past the marker are an uncommitted tail;
readers ignore it and ``open(mode="a")`` erases it. Two HDF5 settings keep the file consistent
between flushes: file-space strategy ``"none"`` (space freed by HDF5 is never reused, so committed
bytes are never overwritten by later data) and a metadata cache that never evicts, so HDF5 writes
metadata only inside ``flush``. The default superblock (v2 here, not ``libver="latest"``) lets a
killed writer's file reopen without ``h5clear``. A process killed between HDF5 flushes loses at
most the images not yet committed; a kill inside HDF5's own flush can damage the file (HDF5 does
not order its metadata writes). ``docs/store_layout.md`` gives the tested figures.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np
import pandas as pd

from aecfe import __version__
from aecfe.errors import InputError, StoreError
from aecfe.shapes import CROP_SHAPE, ROI_SHAPE

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""2: /images/content_sha1, the status "retried", fletcher32 checksums, non-UTF-8 names as raw bytes."""
FORMAT_NAME = "aecfe.cell_store"
MISSING_LABEL = ""
IMAGE_STATUSES = ("ok", "undetected", "error")
RETRIED = "retried"
"""Status an "error" row gets when a later row of the same image supersedes it (``add_image(retry=True)``)."""
_ENCODING_ERRORS = "surrogateescape"

_STR = h5py.string_dtype()
# Columns of /images and /cells: name -> (dtype on disk, shape of one row).
_IMAGE_COLUMNS = {
    "image_path": (_STR, ()),
    "domain": (_STR, ()),
    "label": (_STR, ()),
    "status": (_STR, ()),
    "reason": (_STR, ()),
    "n_cells": (np.dtype(np.int64), ()),
    "content_sha1": (np.dtype("S40"), ()),
}
_CELL_COLUMNS = {
    "image_id": (np.dtype(np.int64), ()),
    "cell_index": (np.dtype(np.int32), ()),
    "label": (_STR, ()),
    "box": (np.dtype(np.float32), (4,)),
    "score": (np.dtype(np.float32), ()),
    "mask_area": (np.dtype(np.int64), ()),
}
_STAGE_DTYPES = {"crop": np.dtype(np.uint8), "roi": np.dtype(np.float16)}
_CELL_KEYS_REQUIRED = ("box", "score", "mask_area")
_CELL_KEYS_OPTIONAL = ("label", "cell_index")
_RESERVED_PROVENANCE_KEYS = ("shard",)
CELL_FRAME_COLUMNS = ("cell_id", "image_path", "cell_index", "domain", "label",
                      "x1", "y1", "x2", "y2", "score", "mask_area")
IMAGE_FRAME_COLUMNS = tuple(_IMAGE_COLUMNS)


@dataclasses.dataclass(frozen=True)
class StoreLayout:
    """On-disk chunking and compression, fixed when a store is created.

    Readers never need it (HDF5 filters are self-describing). The defaults were chosen with
    ``scripts/benchmark_store.py``; see ``docs/store_layout.md`` for the figures.

    - ``stage_chunk_cells``: cells per HDF5 chunk of ``crop`` and ``roi``. One cell per chunk
      means every chunk is written once, whole, and never rewritten by a later append.
    - ``compression`` / ``compression_level`` / ``shuffle``: filter of ``crop`` and ``roi``.
      gzip (deflate) is built into every HDF5 build; lzf is h5py-only.
    - ``column_chunk_rows``: rows per chunk of the small per-cell and per-image columns, which are
      stored uncompressed so that an append rewrites a partly filled chunk in place.
    - ``embedding_chunk_bytes``: target chunk size of embeddings (uncompressed, float32), so a
      chunk holds ``embedding_chunk_bytes // (4 * D)`` rows (at least 1).
    - ``checksum``: HDF5's fletcher32 checksum on every chunk of every dataset HDF5 can filter
      (all but the variable-length string columns); a damaged chunk then fails to read instead of
      giving wrong values. Cost measured by ``scripts/benchmark_store.py --checksum-compare``.

    The layout is recorded as the root attribute ``layout`` (JSON).
    """

    stage_chunk_cells: int = 1
    compression: str | None = "gzip"
    compression_level: int | None = 1
    shuffle: bool = True
    column_chunk_rows: int = 4096
    embedding_chunk_bytes: int = 1 << 18
    checksum: bool = True

    def __post_init__(self):
        if min(self.stage_chunk_cells, self.column_chunk_rows, self.embedding_chunk_bytes) < 1:
            raise ValueError(f"chunk sizes must be positive: {self}")
        if self.compression not in (None, "gzip", "lzf"):
            raise ValueError(f"compression must be None, 'gzip' or 'lzf', got {self.compression!r}")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _to_json(value, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} must be JSON-serialisable (dicts, lists, str, numbers): {err}") from err


def _as_str_array(values: Sequence[str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _as_sha1_array(values: Sequence[str]) -> np.ndarray:
    """Hex digests (or "") as the fixed-length ASCII column ``content_sha1`` (S40)."""
    return np.array([value.encode("ascii") for value in values], dtype="S40")


def _is_sha1(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def _encoded(values: np.ndarray) -> np.ndarray:
    """A column ready to write: str values become UTF-8 bytes, with ``surrogateescape`` so that a name
    decoded by ``os.fsdecode`` from bytes that are not UTF-8 is written back as those bytes."""
    values = np.asarray(values)
    if values.dtype != object:
        return values
    out = np.empty(len(values), dtype=object)
    out[:] = [v.encode("utf-8", _ENCODING_ERRORS) if isinstance(v, str) else v for v in values]
    return out


def _read_strings(dataset: h5py.Dataset, rows: slice) -> list[str]:
    """Rows of a string column as str: variable-length strings decoded as UTF-8 with ``surrogateescape``
    (lossless for raw non-UTF-8 names), the fixed-length ``content_sha1`` as ASCII."""
    if rows.stop <= rows.start:
        return []
    if dataset.dtype.kind == "S":
        return [value.decode("ascii") for value in dataset[rows]]
    return list(dataset.asstr(errors=_ENCODING_ERRORS)[rows])


class _reading:
    """Context manager turning an HDF5 read failure (a damaged chunk, a failed fletcher32 checksum)
    into a :class:`StoreError` that names the file and the dataset."""

    def __init__(self, path: Path, dataset):
        self.path, self.dataset = path, dataset

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, OSError):
            raise StoreError(f"{self.path}: cannot read dataset {self.dataset.name} (the file is damaged; "
                             f"`aecfe-verify-store {self.path}` lists every damaged chunk): {error}") from error
        return False


class CellStore:
    """Per-cell metadata, optional crops and RoI features, and named embeddings in one HDF5 file.

    Create with :meth:`create`, reopen with :meth:`open`; use as a context manager. Writers add
    whole images (:meth:`add_image`), which are buffered and committed ``chunk_cells`` cells at a
    time; readers see committed rows only.

    Example::

        with CellStore.create("run.h5", roi_shape=(256, 14, 14), crop_shape=None,
                              provenance={"detector": model_identity(cfg, "det.pt")}) as store:
            store.add_image("a.png", "lab1", "neutrophil", cells={"box": b, "score": s,
                            "mask_area": m, "roi": r})
        with CellStore.open("run.h5") as store:
            X, y, domains = store.arrays("ae_mmd")
    """

    def __init__(self, h5file: h5py.File, path: Path, writable: bool):
        """Use :meth:`create` or :meth:`open`."""
        self._file = h5file
        self.path = path
        self.writable = writable
        self.roi_shape = self._stage_shape("roi")
        self.crop_shape = self._stage_shape("crop")
        self.chunk_cells = int(h5file.attrs["chunk_cells"])
        self.layout = StoreLayout(**json.loads(h5file.attrs["layout"]))
        self._n_images = int(h5file.attrs["n_images"])
        self._n_cells = int(h5file.attrs["n_cells"])
        self._buffer: list[dict] = []
        self._buffered_cells = 0

    # ------------------------------------------------------------------ creation and opening
    @classmethod
    def create(cls, path: str | os.PathLike, *, roi_shape: tuple[int, ...] | None = ROI_SHAPE,
               crop_shape: tuple[int, ...] | None = CROP_SHAPE, provenance: Mapping,
               chunk_cells: int = 256, layout: StoreLayout = StoreLayout()) -> "CellStore":
        """Create a new, empty store for writing; :class:`StoreError` if ``path`` exists.

        ``roi_shape`` / ``crop_shape``: the per-cell shape of the RoI features (stored float16)
        and crops (uint8), or None when the run does not keep them. ``provenance``: JSON-able
        dict identifying the run, by convention ``{"detector": aecfe.identity.model_identity(...),
        "autoencoder": model_identity(...) or None, ...}``; the key ``"shard"`` (``"i/n"``) is the
        only one allowed to differ between shards that :func:`merge_stores` joins.
        ``chunk_cells``: cells buffered before a commit (a crash loses at most this many).
        """
        path = Path(path)
        if not isinstance(provenance, Mapping):
            raise InputError(f"{path}: provenance must be a dict, got {type(provenance).__name__}")
        provenance_json = _to_json(dict(provenance), f"{path}: provenance")
        if chunk_cells < 1:
            raise InputError(f"{path}: chunk_cells must be >= 1, got {chunk_cells}")
        if path.exists():
            raise StoreError(f"{path}: already exists; open it with CellStore.open(path, mode='a') "
                             "to resume, or choose a new file")
        try:
            h5file = h5py.File(path, "w-", fs_strategy="none", fs_persist=False)
        except (OSError, FileExistsError) as err:
            raise StoreError(f"{path}: cannot create the cell store: {err}") from err
        try:
            _hold_metadata_until_flush(h5file)
            attrs = h5file.attrs
            attrs["format"] = FORMAT_NAME
            attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            attrs["aecfe_version"] = __version__
            attrs["created_utc"] = _utc_now()
            attrs["provenance"] = provenance_json
            attrs["chunk_cells"] = np.int64(chunk_cells)
            attrs["layout"] = json.dumps(dataclasses.asdict(layout), sort_keys=True)
            attrs["n_images"] = np.int64(0)
            attrs["n_cells"] = np.int64(0)
            for name, (dtype, shape) in _IMAGE_COLUMNS.items():
                _create_column(h5file, f"images/{name}", dtype, shape, layout.column_chunk_rows, layout.checksum)
            for name, (dtype, shape) in _CELL_COLUMNS.items():
                _create_column(h5file, f"cells/{name}", dtype, shape, layout.column_chunk_rows, layout.checksum)
            h5file.create_group("embeddings")
            for stage, shape in (("crop", crop_shape), ("roi", roi_shape)):
                if shape is not None:
                    _create_stage(h5file, stage, tuple(int(s) for s in shape), layout)
            _sync(h5file)
        except BaseException:
            h5file.close()
            path.unlink(missing_ok=True)
            raise
        logger.info("created cell store %s (roi %s, crops %s)", path, roi_shape, crop_shape)
        return cls(h5file, path, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "CellStore":
        """Open an existing store read-only (``"r"``) or to append (``"a"``).

        Checks that it is an aecfe cell store of schema version :data:`SCHEMA_VERSION`
        (:class:`StoreError` naming the file and both versions otherwise). With ``"a"`` the
        uncommitted tail left by a crashed writer is truncated.
        """
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not path.is_file():
            raise StoreError(f"{path}: no such cell store file")
        try:
            h5file = h5py.File(path, "r" if mode == "r" else "r+")
        except OSError as err:
            if "unable to lock file" in str(err):
                raise StoreError(f"{path}: locked by another process that has it open (a writer excludes "
                                 f"everyone, readers exclude writers): {err}") from err
            raise StoreError(f"{path}: not a readable HDF5 file (truncated or not HDF5?): {err}") from err
        try:
            _check_format(h5file, path)
            if mode == "a":
                _hold_metadata_until_flush(h5file)
                _drop_uncommitted_tail(h5file, path)
            else:
                _check_lengths(h5file, path)
        except OSError as err:
            h5file.close()
            raise StoreError(f"{path}: damaged cell store (`aecfe-verify-store {path}` lists what): {err}") from err
        except BaseException:
            h5file.close()
            raise
        return cls(h5file, path, writable=mode == "a")

    def _stage_shape(self, stage: str) -> tuple[int, ...] | None:
        dataset = self._file["cells"].get(stage)
        return None if dataset is None else tuple(dataset.shape[1:])

    # ------------------------------------------------------------------ context and lifetime
    def __enter__(self) -> "CellStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Commit buffered images (when writable) and close the file. Idempotent."""
        if not self._file.id.valid:
            return
        try:
            if self.writable:
                self.flush()
        finally:
            self._file.close()

    def __len__(self) -> int:
        """Committed cells."""
        return self._n_cells

    def __repr__(self) -> str:
        return (f"CellStore({str(self.path)!r}, images={self._n_images}, cells={self._n_cells}, "
                f"roi={self.roi_shape}, crops={self.crop_shape}, embeddings={self.embedding_names()})")

    @property
    def provenance(self) -> dict:
        """The run's provenance dict as given to :meth:`create`."""
        return json.loads(self._file.attrs["provenance"])

    @property
    def n_images(self) -> int:
        """Committed images (any status)."""
        return self._n_images

    # ------------------------------------------------------------------ writing cells
    def add_image(self, image_path: str | os.PathLike, domain: str, label: str | None = None, *,
                  status: str = "ok", reason: str = "", cells: Mapping | None = None,
                  content_sha1: str = "", retry: bool = False) -> None:
        """Buffer one processed image and its cells; commits automatically every ``chunk_cells``.

        ``status``: "ok" (then ``cells`` holds n >= 1 cells), "undetected" or "error" (then
        ``cells`` is None and ``reason`` says why). ``cells``: ``box`` (n,4) xyxy pixels,
        ``score`` (n,), ``mask_area`` (n,) pixel counts, ``crop`` (n,*crop_shape) uint8 and ``roi``
        (n,*roi_shape) floating when the store declares them; optional ``label`` (n labels, str
        or None, default the image label) and ``cell_index`` (n,) (default 0..n-1).
        ``content_sha1``: hex SHA-1 of the image file's bytes (:func:`aecfe.io.sha1_file`), "" if
        unknown. ``retry``: the image may already be in the store with status "error"; that row
        then becomes status :data:`RETRIED` in the same commit as this one.
        Raises :class:`InputError` naming the image for wrong shapes, dtypes or a repeated path.
        """
        self._require_writable()
        path_text = os.fsdecode(image_path)
        entry = self._validate_image(path_text, domain, label, status, reason, cells, content_sha1, retry)
        self._buffer.append(entry)
        self._buffered_cells += entry["n"]
        self._rows[path_text] = (self._n_images + len(self._buffer) - 1, status)
        if self._buffered_cells >= self.chunk_cells or len(self._buffer) >= self.chunk_cells:
            self.flush()

    def _validate_image(self, path: str, domain, label, status, reason, cells, content_sha1="",
                        retry=False) -> dict:
        if not path:
            raise InputError("image path must be a non-empty string")
        supersedes = None
        if path in self._rows:
            row, found = self._rows[path]
            if not (retry and found == "error"):
                raise InputError(f"{path}: already in the store {self.path} with status {found!r} (skip "
                                 "processed_images(), or retry an error row with retry=True)")
            supersedes = row
        if not isinstance(content_sha1, str) or not (content_sha1 == "" or _is_sha1(content_sha1)):
            raise InputError(f"{path}: content_sha1 must be 40 lower-case hex digits or '', got {content_sha1!r}")
        if not isinstance(domain, str) or not domain:
            raise InputError(f"{path}: domain must be a non-empty string, got {domain!r}")
        if label is not None and not isinstance(label, str):
            raise InputError(f"{path}: label must be a string or None, got {label!r}")
        if status not in IMAGE_STATUSES:
            raise InputError(f"{path}: status must be one of {IMAGE_STATUSES}, got {status!r}")
        if not isinstance(reason, str):
            raise InputError(f"{path}: reason must be a string, got {reason!r}")
        label = label or MISSING_LABEL
        entry = {"image_path": path, "domain": domain, "label": label, "status": status,
                 "reason": reason, "content_sha1": content_sha1, "n": 0, "cells": None,
                 "supersedes": supersedes}
        if status != "ok":
            if cells is not None:
                raise InputError(f"{path}: status {status!r} images carry no cells; pass cells=None")
            return entry
        if cells is None:
            raise InputError(f"{path}: status 'ok' needs cells; an image without cells is 'undetected'")
        entry["cells"] = self._validate_cells(path, label, cells)
        entry["n"] = len(entry["cells"]["score"])
        return entry

    def _validate_cells(self, path: str, image_label: str, cells: Mapping) -> dict:
        stages = {name: shape for name, shape in (("crop", self.crop_shape), ("roi", self.roi_shape))
                  if shape is not None}
        allowed = set(_CELL_KEYS_REQUIRED) | set(_CELL_KEYS_OPTIONAL) | set(stages)
        missing = [key for key in (*_CELL_KEYS_REQUIRED, *stages) if key not in cells]
        unknown = sorted(set(cells) - allowed)
        if missing or unknown:
            raise InputError(f"{path}: cells missing {missing} / unknown keys {unknown}; this store "
                             f"expects {sorted(allowed)} (stages declared: {sorted(stages) or 'none'})")
        score = np.asarray(cells["score"])
        if score.ndim != 1 or score.shape[0] == 0:
            raise InputError(f"{path}: cells['score'] must have shape (n,) with n >= 1, got {score.shape}")
        n = score.shape[0]
        out = {"score": _numeric(path, "score", score, (n,), np.float32),
               "box": _numeric(path, "box", cells["box"], (n, 4), np.float32),
               "mask_area": _numeric(path, "mask_area", cells["mask_area"], (n,), np.int64)}
        box = out["box"]
        if np.any(box[:, 2] < box[:, 0]) or np.any(box[:, 3] < box[:, 1]):
            raise InputError(f"{path}: cells['box'] must be xyxy with x2 >= x1 and y2 >= y1")
        if np.any(out["mask_area"] < 0):
            raise InputError(f"{path}: cells['mask_area'] must be >= 0")
        out["cell_index"] = (np.arange(n, dtype=np.int32) if "cell_index" not in cells
                             else _numeric(path, "cell_index", cells["cell_index"], (n,), np.int32))
        labels = cells.get("label")
        if labels is None:
            labels = [image_label] * n
        elif len(labels) != n or not all(v is None or isinstance(v, str) for v in labels):
            raise InputError(f"{path}: cells['label'] must hold {n} strings or None")
        out["label"] = [v or MISSING_LABEL for v in labels]
        for stage, shape in stages.items():
            array = np.asarray(cells[stage])
            if array.shape != (n, *shape):
                raise InputError(f"{path}: cells[{stage!r}] has shape {array.shape}, expected "
                                 f"{(n, *shape)} (n={n} cells, store declares {stage}_shape={shape})")
            if stage == "crop":
                if array.dtype != np.uint8:
                    raise InputError(f"{path}: cells['crop'] must be uint8, got {array.dtype}")
            else:
                if not np.issubdtype(array.dtype, np.floating):
                    raise InputError(f"{path}: cells['roi'] must be floating point, got {array.dtype}")
                with np.errstate(over="ignore"):
                    array = array.astype(np.float16)
                if not np.isfinite(array).all():
                    raise InputError(f"{path}: cells['roi'] has NaN/inf or values beyond float16 range")
            out[stage] = array
        return out

    def flush(self) -> None:
        """Commit the buffered images and cells as one chunk (no-op when the buffer is empty)."""
        self._require_writable()
        if not self._buffer:
            return
        entries, self._buffer, self._buffered_cells = self._buffer, [], 0
        images = {name: _as_str_array([e[name] for e in entries])
                  for name in ("image_path", "domain", "label", "status", "reason")}
        images["n_cells"] = np.array([e["n"] for e in entries], dtype=np.int64)
        images["content_sha1"] = _as_sha1_array([e["content_sha1"] for e in entries])
        buffered = {self._n_images + i: e for i, e in enumerate(entries)}
        superseded = sorted(e["supersedes"] for e in entries if e["supersedes"] is not None)
        for row in superseded:
            if row in buffered:
                buffered[row]["status"] = RETRIED
                images["status"][row - self._n_images] = RETRIED
            else:
                self._file["images/status"][row] = RETRIED.encode()
        with_cells = [(self._n_images + i, e["cells"]) for i, e in enumerate(entries) if e["n"]]
        cells = {}
        if with_cells:
            cells["image_id"] = np.concatenate([np.full(len(c["score"]), i, np.int64) for i, c in with_cells])
            cells["label"] = _as_str_array([v for _, c in with_cells for v in c["label"]])
            for key in ("cell_index", "box", "score", "mask_area", "crop", "roi"):
                if key in with_cells[0][1]:
                    cells[key] = np.concatenate([c[key] for _, c in with_cells])
        self._append_committed(images, cells)

    def _append_committed(self, images: Mapping[str, np.ndarray], cells: Mapping[str, np.ndarray]) -> None:
        """Append whole images and their cells, then move the commit marker (see module docstring)."""
        n_new_images, n_new_cells = len(images["image_path"]), int(images["n_cells"].sum())
        for group, columns, start, count in (("images", images, self._n_images, n_new_images),
                                             ("cells", cells, self._n_cells, n_new_cells)):
            for name, dataset in self._file[group].items():
                if count:
                    dataset.resize(start + count, axis=0)
                    dataset[start:start + count] = _encoded(columns[name])
        _sync(self._file)
        self._n_images += n_new_images
        self._n_cells += n_new_cells
        _commit(self._file, self._n_images, self._n_cells)

    @functools.cached_property
    def _rows(self) -> dict[str, tuple[int, str]]:
        """Image path -> (row in /images, status) of its current row, committed or buffered (rows with
        status :data:`RETRIED` are superseded and left out); read from the file on first use."""
        rows = slice(0, self._n_images)
        paths = self._strings("images/image_path", rows)
        statuses = self._strings("images/status", rows)
        return {path: (row, status) for row, (path, status) in enumerate(zip(paths, statuses))
                if status != RETRIED}

    def processed_images(self, *, include_errors: bool = True) -> set[str]:
        """Paths of every image in the store (committed or buffered): a re-run skips them. Images whose
        current row has status "error" are left out when ``include_errors`` is False (to retry them)."""
        return {path for path, (_, status) in self._rows.items() if include_errors or status != "error"}

    def error_images(self) -> set[str]:
        """Paths of the images whose current row has status "error" (what ``--retry-errors`` retries)."""
        return {path for path, (_, status) in self._rows.items() if status == "error"}

    # ------------------------------------------------------------------ embeddings
    def write_embedding(self, name: str, start: int, rows: np.ndarray, *, attrs: Mapping | None = None) -> None:
        """Write embedding rows ``start:start+len(rows)`` of embedding ``name`` and commit them.

        ``rows``: (k, D) finite floats, stored float32. Blocks must extend the committed prefix
        (``start <= embedding_progress(name)``), so an interrupted run resumes from
        :meth:`embedding_progress`. ``attrs``: JSON-able provenance of this embedding (e.g. the
        autoencoder's :func:`model_identity`); a resumed write must pass the same attrs.
        Buffered images are committed first.
        """
        self._require_writable()
        self.flush()
        if not isinstance(name, str) or not name or "/" in name:
            raise InputError(f"{self.path}: embedding name must be a non-empty string without '/', got {name!r}")
        rows = np.asarray(rows)
        if rows.ndim != 2 or not np.issubdtype(rows.dtype, np.number):
            raise InputError(f"{self.path}: embedding {name!r} rows must be a numeric (k, D) array, "
                             f"got {rows.dtype} {rows.shape}")
        rows = rows.astype(np.float32)
        if not np.isfinite(rows).all():
            raise InputError(f"{self.path}: embedding {name!r} rows {start}.. contain NaN or inf")
        attrs_json = None if attrs is None else _to_json(dict(attrs), f"{self.path}: embedding {name!r} attrs")
        group = self._file["embeddings"]
        if name not in group:
            if self._n_cells == 0:
                raise StoreError(f"{self.path}: no cells to embed yet")
            chunk_rows = max(1, min(self.layout.embedding_chunk_bytes // (4 * rows.shape[1]), self._n_cells))
            dataset = group.create_dataset(name, shape=(self._n_cells, rows.shape[1]), dtype=np.float32,
                                           maxshape=(None, rows.shape[1]), chunks=(chunk_rows, rows.shape[1]),
                                           fletcher32=self.layout.checksum)
            dataset.attrs["rows_done"] = np.int64(0)
            dataset.attrs["provenance"] = attrs_json or "{}"
            dataset.attrs["created_utc"] = _utc_now()
            dataset.attrs["aecfe_version"] = __version__
        dataset = group[name]
        done = int(dataset.attrs["rows_done"])
        if rows.shape[1] != dataset.shape[1]:
            raise InputError(f"{self.path}: embedding {name!r} has D={dataset.shape[1]}, rows have D={rows.shape[1]}")
        if attrs_json is not None and json.loads(attrs_json) != json.loads(dataset.attrs["provenance"]):
            raise StoreError(f"{self.path}: embedding {name!r} was started with other attrs "
                             f"{dataset.attrs['provenance']}; write it under a new name")
        stop = start + rows.shape[0]
        if not 0 <= start <= done or stop > self._n_cells:
            raise InputError(f"{self.path}: embedding {name!r} block {start}:{stop} must start at or before "
                             f"the {done} rows written and end within the {self._n_cells} cells")
        if dataset.shape[0] < self._n_cells:
            dataset.resize(self._n_cells, axis=0)
        dataset[start:stop] = rows
        _sync(self._file)
        dataset.attrs.modify("rows_done", np.int64(max(done, stop)))
        _sync(self._file)

    def embedding_progress(self, name: str) -> int:
        """Committed rows of embedding ``name`` (0 when it does not exist yet)."""
        dataset = self._file["embeddings"].get(name)
        return 0 if dataset is None else int(dataset.attrs["rows_done"])

    def embedding_names(self) -> list[str]:
        """Names of the embeddings in the store (complete or not), sorted."""
        return sorted(self._file["embeddings"])

    def embedding_attrs(self, name: str) -> dict:
        """The ``attrs`` given when embedding ``name`` was written."""
        return json.loads(self._embedding_dataset(name).attrs["provenance"])

    def embedding(self, name: str, index: slice | np.ndarray | int | None = None) -> np.ndarray:
        """Embedding ``name`` as float32 (N, D), or the rows selected by ``index``.

        :class:`StoreError` when it is missing or not written for every cell yet.
        """
        dataset = self._embedding_dataset(name)
        done = int(dataset.attrs["rows_done"])
        if done < self._n_cells:
            raise StoreError(f"{self.path}: embedding {name!r} is incomplete ({done} of {self._n_cells} "
                             "rows); resume it from embedding_progress()")
        with _reading(self.path, dataset):
            return _read_rows(dataset, index, self._n_cells)

    def _embedding_dataset(self, name: str) -> h5py.Dataset:
        dataset = self._file["embeddings"].get(name)
        if dataset is None:
            raise StoreError(f"{self.path}: no embedding {name!r}; present: {self.embedding_names()}")
        return dataset

    # ------------------------------------------------------------------ readers
    def images(self, *, include_retried: bool = False) -> pd.DataFrame:
        """One row per committed image: image_path, domain, label (<NA> if missing), status, reason, n_cells,
        content_sha1 ("" when unknown). The index is the row in /images (the cells' ``image_id``). Rows of
        status :data:`RETRIED` (superseded by a later row of the same image) only with ``include_retried``."""
        rows = slice(0, self._n_images)
        frame = {name: _string_series(self._strings(f"images/{name}", rows), missing_as_na=name == "label")
                 for name in ("image_path", "domain", "label", "status", "reason", "content_sha1")}
        frame["n_cells"] = pd.Series(self._numbers("images/n_cells", rows), dtype=np.int64)
        images = pd.DataFrame(frame, columns=list(IMAGE_FRAME_COLUMNS))
        return images if include_retried else images[images["status"] != RETRIED]

    def cell_groups(self) -> np.ndarray:
        """(N,) str, per committed cell: the ``content_sha1`` of its image, or ``"path:<image_path>"``
        when the hash is unknown. Cells of one image, and of byte-identical copies of it under other names
        or in other domains, share a group: pass it as ``groups`` to :func:`aecfe.evaluation.evaluate_cross_domain`
        so that no copy lands on both sides of a split."""
        images = self.images(include_retried=True)
        keys = np.where(images["content_sha1"].fillna("") != "", images["content_sha1"].fillna(""),
                        "path:" + images["image_path"].astype(str)).astype(object)
        return keys[self._numbers("cells/image_id", slice(0, self._n_cells))]

    def cells(self) -> pd.DataFrame:
        """One row per committed cell, columns :data:`CELL_FRAME_COLUMNS`; cell_id is the row number
        shared by every per-cell array (roi, crops, embeddings); missing labels are <NA>."""
        rows = slice(0, self._n_cells)
        image_id = self._numbers("cells/image_id", rows)
        paths = np.asarray(self._strings("images/image_path", slice(0, self._n_images)), dtype=object)
        domains = np.asarray(self._strings("images/domain", slice(0, self._n_images)), dtype=object)
        box = self._numbers("cells/box", rows)
        frame = {
            "cell_id": np.arange(self._n_cells, dtype=np.int64),
            "image_path": _string_series(paths[image_id]),
            "cell_index": self._numbers("cells/cell_index", rows),
            "domain": _string_series(domains[image_id]),
            "label": _string_series(self._strings("cells/label", rows), missing_as_na=True),
            **{axis: box[:, i] for i, axis in enumerate(("x1", "y1", "x2", "y2"))},
            "score": self._numbers("cells/score", rows),
            "mask_area": self._numbers("cells/mask_area", rows),
        }
        return pd.DataFrame(frame, columns=list(CELL_FRAME_COLUMNS))

    def roi(self, index: slice | np.ndarray | int | None = None) -> np.ndarray:
        """RoI features as float32 (N, *roi_shape) (stored float16), or the rows selected by ``index``."""
        dataset = self._stage_dataset("roi")
        with _reading(self.path, dataset):
            return _read_rows(dataset, index, self._n_cells).astype(np.float32)

    def crops(self, index: slice | np.ndarray | int | None = None) -> np.ndarray:
        """Crops as uint8 (N, *crop_shape), or the rows selected by ``index``."""
        dataset = self._stage_dataset("crop")
        with _reading(self.path, dataset):
            return _read_rows(dataset, index, self._n_cells)

    def _stage_dataset(self, stage: str) -> h5py.Dataset:
        dataset = self._file["cells"].get(stage)
        if dataset is None:
            raise StoreError(f"{self.path}: this store has no {stage} stage (created with {stage}_shape=None)")
        return dataset

    def arrays(self, embedding_name: str, *, labelled_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, y, domains)`` for classifier heads: X float32 (N, D); y and domains str arrays (N,),
        y is ``""`` (:data:`MISSING_LABEL`) for unlabelled cells unless ``labelled_only`` drops them."""
        X = self.embedding(embedding_name)
        cells = self.cells()
        y = cells["label"].fillna(MISSING_LABEL).to_numpy(dtype=str)
        domains = cells["domain"].to_numpy(dtype=str)
        if labelled_only:
            keep = y != MISSING_LABEL
            X, y, domains = X[keep], y[keep], domains[keep]
        return X, y, domains

    def _strings(self, name: str, rows: slice) -> list[str]:
        """Rows of the string column ``name`` (e.g. ``"images/domain"``) as str; see :func:`_read_strings`."""
        dataset = self._file[name]
        with _reading(self.path, dataset):
            return _read_strings(dataset, rows)

    def _numbers(self, name: str, rows: slice) -> np.ndarray:
        """Rows of the numeric column ``name``; a damaged chunk raises :class:`StoreError` naming it."""
        dataset = self._file[name]
        with _reading(self.path, dataset):
            return dataset[rows]

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only; use CellStore.open(path, mode='a') to write")
        if not self._file.id.valid:
            raise StoreError(f"{self.path}: store is closed")


# ---------------------------------------------------------------------- merging shards
def merge_stores(shard_paths: Iterable[str | os.PathLike], out_path: str | os.PathLike, *,
                 domains: Iterable[str] | None = None) -> Path:
    """Join the per-shard stores of one extraction run into a new store at ``out_path``.

    ``domains``: keep only the images (with their cells and embedding rows) of these domains, e.g. the source
    labs of a leave-one-lab-out fold taken from a store of every lab (one store given); the provenance records
    them under ``"domains_kept"``. An unknown domain name is an :class:`InputError`.

    Shards must share schema, stages (roi/crop shapes) and provenance apart from the key
    ``"shard"``; the merged provenance lists them under ``"merged_from"``. Images keep shard order;
    an image path already taken from an earlier shard is skipped with its cells (logged).
    Embeddings are joined when every shard holds them complete with the same D and attrs;
    an embedding present in only some shards, or incomplete, raises :class:`StoreError`.
    """
    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise InputError("merge_stores needs at least one shard")
    shards = [CellStore.open(p) for p in shard_paths]
    try:
        reference = shards[0]
        common = _provenance_without_shard(reference)
        for shard in shards[1:]:
            if (shard.roi_shape, shard.crop_shape) != (reference.roi_shape, reference.crop_shape):
                raise StoreError(f"{shard.path}: stages roi={shard.roi_shape} crop={shard.crop_shape} differ "
                                 f"from {reference.path} roi={reference.roi_shape} crop={reference.crop_shape}")
            if _provenance_without_shard(shard) != common:
                raise StoreError(f"{shard.path}: provenance differs from {reference.path}; shards of one "
                                 "run may differ only in 'shard'")
        names = _mergeable_embeddings(shards)
        provenance = dict(common, merged_from=[{"file": s.path.name, "shard": s.provenance.get("shard")}
                                               for s in shards])
        if domains is not None:
            domains = sorted(set(domains))
            present = set().union(*(set(s.images()["domain"]) for s in shards))
            if not domains or set(domains) - present:
                raise InputError(f"domains {domains} to keep: not all in {sorted(present)}")
            provenance["domains_kept"] = domains
        with CellStore.create(out_path, roi_shape=reference.roi_shape, crop_shape=reference.crop_shape,
                              provenance=provenance, chunk_cells=reference.chunk_cells,
                              layout=reference.layout) as merged:
            kept_cells = [_copy_images_and_cells(shard, merged, domains) for shard in shards]
            for name in names:
                _copy_embedding(name, shards, kept_cells, merged)
    finally:
        for shard in shards:
            shard.close()
    return Path(out_path)


def _provenance_without_shard(store: CellStore) -> dict:
    return {k: v for k, v in store.provenance.items() if k not in _RESERVED_PROVENANCE_KEYS}


def _mergeable_embeddings(shards: Sequence[CellStore]) -> list[str]:
    names = sorted(set().union(*(s.embedding_names() for s in shards)))
    for name in names:
        for shard in shards:
            if name not in shard.embedding_names() or shard.embedding_progress(name) < len(shard):
                raise StoreError(f"{shard.path}: embedding {name!r} is missing or incomplete "
                                 f"({shard.embedding_progress(name)} of {len(shard)} rows); finish it in "
                                 "every shard or merge before embedding")
            first = shards[0]._embedding_dataset(name)
            this = shard._embedding_dataset(name)
            if this.shape[1] != first.shape[1] or shard.embedding_attrs(name) != shards[0].embedding_attrs(name):
                raise StoreError(f"{shard.path}: embedding {name!r} differs (D or attrs) from {shards[0].path}")
    return names


def _copy_images_and_cells(shard: CellStore, merged: CellStore, domains: Sequence[str] | None = None) -> np.ndarray:
    """Append ``shard``'s images not yet in ``merged`` (of ``domains`` only, when given), in chunks; returns the
    kept-cell mask (N_shard,)."""
    all_rows = slice(0, shard.n_images)
    images = {name: np.asarray(shard._strings(f"images/{name}", all_rows), dtype=object)
              for name in ("image_path", "domain", "label", "status", "reason", "content_sha1")}
    images["content_sha1"] = _as_sha1_array(images["content_sha1"])
    images["n_cells"] = shard._numbers("images/n_cells", all_rows)
    seen = merged.processed_images()
    keep_image = np.array([p not in seen for p in images["image_path"]], dtype=bool)
    if not keep_image.all():
        logger.warning("%s: skipping %d images already merged from earlier shards",
                       shard.path, int((~keep_image).sum()))
    if domains is not None:
        keep_image &= np.isin(images["domain"].astype(str), list(domains))
    first_cell = np.concatenate([[0], np.cumsum(images["n_cells"])])
    keep_cell = np.repeat(keep_image, images["n_cells"])
    merged_image_id = merged.n_images + np.cumsum(keep_image) - 1  # for kept images
    start = 0
    while start < shard.n_images:
        stop = start + 1
        while stop < shard.n_images and first_cell[stop] - first_cell[start] < merged.chunk_cells:
            stop += 1
        block = np.flatnonzero(keep_image[start:stop]) + start
        rows = slice(int(first_cell[start]), int(first_cell[stop]))
        cell_keep = keep_cell[rows]
        cells = {}
        for name in shard._file["cells"]:
            values = (shard._strings(f"cells/{name}", rows) if name == "label"
                      else shard._numbers(f"cells/{name}", rows))
            cells[name] = np.asarray(values, dtype=object if name == "label" else None)[cell_keep]
        cells["image_id"] = merged_image_id[cells["image_id"]]
        first_row = merged.n_images
        merged._append_committed({k: v[block] for k, v in images.items()}, cells)
        for row, index in enumerate(block, start=first_row):
            if images["status"][index] != RETRIED:
                merged._rows[images["image_path"][index]] = (row, images["status"][index])
        start = stop
    return keep_cell


def _copy_embedding(name: str, shards: Sequence[CellStore], kept_cells: Sequence[np.ndarray],
                    merged: CellStore) -> None:
    attrs = shards[0].embedding_attrs(name)
    block = 16 * merged.chunk_cells
    start = 0
    for shard, keep in zip(shards, kept_cells):
        dataset = shard._embedding_dataset(name)
        for block_start in range(0, len(shard), block):
            rows = slice(block_start, min(block_start + block, len(shard)))
            with _reading(shard.path, dataset):
                values = dataset[rows][keep[rows]]
            if len(values):
                merged.write_embedding(name, start, values, attrs=attrs)
                start += len(values)


# ---------------------------------------------------------------------- verifying
@dataclasses.dataclass
class VerifyReport:
    """What :func:`verify_store` found: ``problems`` (one line each: the dataset, the rows, what is wrong),
    ``chunks_read`` and ``bytes_read`` (decoded), ``unchecked`` (datasets without a checksum, whose silent
    bit flips cannot be detected: the variable-length string columns, or every dataset of a store created
    with ``StoreLayout(checksum=False)``)."""

    path: str
    problems: list[str] = dataclasses.field(default_factory=list)
    chunks_read: int = 0
    bytes_read: int = 0
    unchecked: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "problems": list(self.problems), "chunks_read": self.chunks_read,
                "bytes_read": self.bytes_read, "unchecked": list(self.unchecked)}


def verify_store(path: str | os.PathLike) -> VerifyReport:
    """Read every chunk of every dataset of a cell store and check its bookkeeping; list what is damaged.

    Checks: the file opens as an aecfe cell store of this schema version; every chunk of /images, /cells
    and /embeddings decodes (HDF5 verifies the fletcher32 checksum of each chunk as it reads it); every
    column holds the committed rows; ``image_id`` points at committed images in order and the cells per
    image add up to ``n_cells``; statuses are known; ``content_sha1`` is hex; embeddings' ``rows_done``
    is within the cells. Never raises for a damaged store: the problems are in the report.
    """
    path = Path(path)
    report = VerifyReport(str(path))
    try:
        h5file = h5py.File(path, "r")
    except OSError as err:
        report.problems.append(f"file: cannot be opened as HDF5: {err}")
        return report
    with h5file:
        try:
            _check_format(h5file, path)
            lengths = _committed_lengths(h5file)
        except (StoreError, OSError, KeyError, ValueError) as err:
            report.problems.append(f"root attributes: {err}")
            return report
        for group in ("images", "cells", "embeddings"):
            if group not in h5file:
                report.problems.append(f"/{group}: missing")
                continue
            for name in h5file[group]:
                _verify_dataset(h5file, f"{group}/{name}", report)
        if not report.problems:
            _verify_bookkeeping(h5file, lengths, report)
    return report


def _verify_dataset(h5file: h5py.File, name: str, report: VerifyReport) -> None:
    """Decode every chunk of dataset ``name``; a chunk that fails is one problem line (its rows)."""
    try:
        dataset = h5file[name]
        chunks = list(dataset.iter_chunks()) if dataset.shape[0] else []
    except (OSError, KeyError, ValueError, TypeError) as err:
        report.problems.append(f"/{name}: cannot be opened: {err}")
        return
    if not dataset.fletcher32:
        report.unchecked.append(f"/{name}")
    for selection in chunks:
        rows = selection[0]
        try:
            values = (_read_strings(dataset, rows) if dataset.dtype.kind == "O" else dataset[selection])
            report.bytes_read += sum(len(v) for v in values) if dataset.dtype.kind == "O" else values.nbytes
        except (OSError, ValueError, UnicodeError) as err:
            report.problems.append(f"/{name} rows {rows.start}:{rows.stop}: {err}")
        report.chunks_read += 1


def _verify_bookkeeping(h5file: h5py.File, lengths: Mapping[str, int], report: VerifyReport) -> None:
    """Cross-checks between the columns of a store whose chunks all decode."""
    n_images, n_cells = lengths["images"], lengths["cells"]
    for group, committed in lengths.items():
        for name, dataset in h5file[group].items():
            if dataset.shape[0] < committed:
                report.problems.append(f"/{group}/{name}: {dataset.shape[0]} rows, {committed} committed")
    if report.problems:
        return
    image_id = h5file["cells/image_id"][:n_cells]
    n_cells_per_image = h5file["images/n_cells"][:n_images]
    if len(image_id) and (image_id.min() < 0 or image_id.max() >= n_images or np.any(np.diff(image_id) < 0)):
        report.problems.append(f"/cells/image_id: values outside 0..{n_images - 1} or out of order")
    elif not np.array_equal(np.bincount(image_id, minlength=n_images), n_cells_per_image):
        report.problems.append("/images/n_cells: does not match the cells per image in /cells/image_id")
    statuses = set(_read_strings(h5file["images/status"], slice(0, n_images)))
    unknown = statuses - set(IMAGE_STATUSES) - {RETRIED}
    if unknown:
        report.problems.append(f"/images/status: unknown values {sorted(unknown)}")
    hashes = _read_strings(h5file["images/content_sha1"], slice(0, n_images))
    bad = [row for row, value in enumerate(hashes) if value and not _is_sha1(value)]
    if bad:
        report.problems.append(f"/images/content_sha1: {len(bad)} rows are not hex SHA-1 (first row {bad[0]})")
    for name, dataset in h5file["embeddings"].items():
        done = int(dataset.attrs.get("rows_done", -1))
        if not 0 <= done <= min(n_cells, dataset.shape[0]):
            report.problems.append(f"/embeddings/{name}: rows_done {done} outside 0..{n_cells}")


# ---------------------------------------------------------------------- HDF5 helpers
def _hold_metadata_until_flush(h5file: h5py.File) -> None:
    """Stop the HDF5 metadata cache from evicting (and so writing) entries between flushes.

    Adaptive resizing must be off for evictions to be disabled; the cache then grows with the
    metadata touched in this session (chunk-index nodes, string heaps).
    """
    config = h5file.id.get_mdc_config()
    config.incr_mode = 0  # H5C_incr__off
    config.flash_incr_mode = 0  # H5C_flash_incr__off
    config.decr_mode = 0  # H5C_decr__off
    config.evictions_enabled = False
    h5file.id.set_mdc_config(config)


def _sync(h5file: h5py.File) -> None:
    """Write everything HDF5 holds in memory to the file and fsync it."""
    h5file.flush()
    os.fsync(h5file.id.get_vfd_handle())


def _commit(h5file: h5py.File, n_images: int, n_cells: int) -> None:
    """Move the commit marker to ``n_images`` / ``n_cells``, then :func:`_sync`."""
    h5file.attrs.modify("n_images", np.int64(n_images))
    h5file.attrs.modify("n_cells", np.int64(n_cells))
    _sync(h5file)


def _create_column(h5file: h5py.File, name: str, dtype, row_shape: tuple, chunk_rows: int,
                   checksum: bool = True) -> None:
    """A resizable, chunked column; fletcher32 when ``checksum`` and HDF5 allows a filter (HDF5 refuses
    filters on variable-length strings: "not suitable for filters")."""
    filterable = np.dtype(dtype).kind != "O"
    h5file.create_dataset(name, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                          chunks=(chunk_rows, *row_shape), fletcher32=checksum and filterable)


def _create_stage(h5file: h5py.File, stage: str, shape: tuple[int, ...], layout: StoreLayout) -> None:
    filters = {}
    if layout.compression is not None:
        filters = {"compression": layout.compression, "shuffle": layout.shuffle,
                   "compression_opts": layout.compression_level if layout.compression == "gzip" else None}
    h5file.create_dataset(f"cells/{stage}", shape=(0, *shape), maxshape=(None, *shape),
                          dtype=_STAGE_DTYPES[stage], chunks=(layout.stage_chunk_cells, *shape),
                          fletcher32=layout.checksum, **filters)


def _check_format(h5file: h5py.File, path: Path) -> None:
    attrs = h5file.attrs
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path}: not an aecfe cell store (root attribute 'format' is "
                         f"{attrs.get('format')!r}, expected {FORMAT_NAME!r})")
    found = int(attrs.get("schema_version", -1))
    if found != SCHEMA_VERSION:
        raise StoreError(f"{path}: cell store schema version {found} (written by aecfe "
                         f"{attrs.get('aecfe_version')}), but aecfe {__version__} reads schema version "
                         f"{SCHEMA_VERSION}; use the matching aecfe version or re-run the extraction")


def _committed_lengths(h5file: h5py.File) -> dict[str, int]:
    return {"images": int(h5file.attrs["n_images"]), "cells": int(h5file.attrs["n_cells"])}


def _check_lengths(h5file: h5py.File, path: Path) -> None:
    for group, committed in _committed_lengths(h5file).items():
        for name, dataset in h5file[group].items():
            if dataset.shape[0] < committed:
                raise StoreError(f"{path}: {group}/{name} has {dataset.shape[0]} rows but {committed} are "
                                 "committed; the file is damaged")


def _drop_uncommitted_tail(h5file: h5py.File, path: Path) -> None:
    """Truncate every per-row dataset to the commit marker, erasing what a crashed writer left past it.

    A writer killed inside a flush can leave chunk bytes past the marker (even past the dataset's
    extent) that reference variable-length strings whose heap entries never reached the disk;
    overwriting such a row would make HDF5 free a non-existent heap object ("bad heap index").
    So each dataset is grown over every chunk it owns, then shrunk to the marker: HDF5 deletes the
    chunks past the new extent and fills the rest of the last chunk with the fill value.
    Idempotent, so a crash during recovery is recovered by the next open.
    """
    _check_lengths(h5file, path)
    lengths = _committed_lengths(h5file)
    for group, committed in lengths.items():
        for dataset in h5file[group].values():
            if dataset.shape[0] > committed:
                logger.warning("%s: dropping %d uncommitted rows of %s left by an interrupted write",
                               path, dataset.shape[0] - committed, dataset.name)
            rows = dataset.chunks[0]
            chunk_ends = [rows * -(-committed // rows)]
            dataset.id.chunk_iter(lambda info: chunk_ends.append(info.chunk_offset[0] + rows))
            end = max(dataset.shape[0], *chunk_ends)
            if end > committed:
                dataset.resize(end, axis=0)
                dataset.resize(committed, axis=0)
    for dataset in h5file["embeddings"].values():
        if dataset.shape[0] > lengths["cells"]:
            dataset.resize(lengths["cells"], axis=0)
            dataset.attrs.modify("rows_done", np.int64(min(int(dataset.attrs["rows_done"]), lengths["cells"])))
    _sync(h5file)


def _numeric(path: str, key: str, values, shape: tuple[int, ...], dtype) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != shape:
        raise InputError(f"{path}: cells[{key!r}] has shape {array.shape}, expected {shape}")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: cells[{key!r}] must be numeric, got {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(f"{path}: cells[{key!r}] contains NaN or inf")
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise InputError(f"{path}: cells[{key!r}] must hold whole numbers")
    return array.astype(dtype)


def _string_series(values, missing_as_na: bool = False) -> pd.Series:
    """Nullable string column; with ``missing_as_na`` the on-disk missing label ``""`` becomes <NA>."""
    series = pd.Series(np.asarray(values, dtype=object), dtype="string")
    return series.mask(series == MISSING_LABEL) if missing_as_na else series


def _read_rows(dataset: h5py.Dataset, index, n: int) -> np.ndarray:
    """Rows of ``dataset`` among the first ``n`` (committed) selected by None, an int, a slice,
    integer indices (any order, repeats allowed) or a boolean mask of length n."""
    if index is None:
        return dataset[:n]
    if isinstance(index, (int, np.integer)):
        if not -n <= index < n:
            raise IndexError(f"cell {index} out of range for {n} cells")
        return dataset[int(index) % n]
    if isinstance(index, slice):
        start, stop, step = index.indices(n)
        if step < 0:
            return _read_rows(dataset, np.arange(start, stop, step), n)
        return dataset[start:stop:step]
    index = np.asarray(index)
    if index.dtype == bool:
        if index.shape != (n,):
            raise IndexError(f"boolean index must have shape ({n},), got {index.shape}")
        index = np.flatnonzero(index)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise IndexError(f"index must be 1-D integers or a boolean mask, got {index.dtype} {index.shape}")
    if index.size == 0:
        return np.empty((0, *dataset.shape[1:]), dtype=dataset.dtype)
    if index.min() < -n or index.max() >= n:
        raise IndexError(f"cell index out of range for {n} cells")
    unique, inverse = np.unique(index % n, return_inverse=True)
    return dataset[unique][inverse]
