"""The store boundary: the one package that writes and reads the HDF5 cell store.

* :mod:`aecfe.store.core` — the file itself: :class:`CellStore` (images, cells, stages, embeddings; crash-safe
  commits), :func:`merge_stores`, :func:`verify_store`. Layout: ``docs/store_layout.md``.
* writers: :mod:`aecfe.store.roi` (the roi stage: detections -> image and cell rows) and
  :mod:`aecfe.store.embeddings` (every embedding — baselines, autoencoder codes, CNN codes — through one
  resumable writer with one attribute schema).
* a run's store: :mod:`aecfe.store.runs` (create with the run's provenance, reopen to resume, the run report).
* readers: :mod:`aecfe.store.training_cells` (cells as autoencoder training data, in memory or streamed) and
  :mod:`aecfe.store.readers` (labelled features for the evaluation).

Everything is re-exported here (``from aecfe.store import CellStore``). The training reader imports torch, so
its names load on first use.
"""
from aecfe.identity import model_identity, sha256_file
from aecfe.store.core import (CELL_FRAME_COLUMNS, FORMAT_NAME, IMAGE_FRAME_COLUMNS, IMAGE_STATUSES, MISSING_LABEL,
                              RETRIED, SCHEMA_VERSION, CellStore, StoreLayout, VerifyReport, merge_stores,
                              verify_store)
from aecfe.store.embeddings import (BASELINE_EMBEDDINGS, EMBEDDING_BLOCK, EMBEDDING_KINDS, RAW_PIXEL_SIDE,
                                    EmbeddingStage, autoencoder_stage, baseline_stage, block_average, cnn_stage,
                                    embedding_attrs, roi_mean_features, write_embedding, write_embedding_stage)
from aecfe.store.readers import STAGES, load_features, read_features
from aecfe.store.roi import FALLBACK_REASON, RoiStageReport, write_roi_stage
from aecfe.store.runs import (create_run_store, extraction_report, format_report, open_existing_store,
                              open_or_create_store, report_path, store_report, write_report)

_TRAINING = ("BYTES_PER_CELL", "JoinedCells", "StoreCells", "domain_ids", "load_joined_training_cells",
             "load_training_cells")


def __getattr__(name: str):
    if name in _TRAINING:
        from aecfe.store import training_cells

        return getattr(training_cells, name)
    raise AttributeError(f"module 'aecfe.store' has no attribute {name!r}")


__all__ = ["BASELINE_EMBEDDINGS", "CELL_FRAME_COLUMNS", "EMBEDDING_BLOCK", "EMBEDDING_KINDS", "FALLBACK_REASON",
           "FORMAT_NAME", "IMAGE_FRAME_COLUMNS", "IMAGE_STATUSES", "MISSING_LABEL", "RAW_PIXEL_SIDE", "RETRIED",
           "SCHEMA_VERSION", "STAGES", "CellStore", "EmbeddingStage", "RoiStageReport", "StoreLayout",
           "VerifyReport", "autoencoder_stage", "baseline_stage", "block_average", "cnn_stage", "create_run_store",
           "embedding_attrs", "extraction_report", "format_report", "load_features", "merge_stores", "model_identity",
           "open_existing_store", "open_or_create_store", "read_features", "report_path", "roi_mean_features",
           "sha256_file", "store_report", "verify_store", "write_embedding", "write_embedding_stage", "write_report",
           "write_roi_stage", *_TRAINING]
