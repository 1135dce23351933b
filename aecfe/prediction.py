"""Apply a model bundle to new images: per-cell classes and differential counts (the job behind ``aecfe-predict``).

:func:`predict_images` runs the bundle's detector and embedder over the images into a cell store (resumable:
:func:`aecfe.pipeline.run_extraction`), predicts every cell with the bundle's head
(:meth:`aecfe.bundle.Bundle.predict_store`) and writes into ``out``:

* ``cells.csv``: one row per cell: image, domain, cell_index, box (x1, y1, x2, y2), detector score,
  ``fallback`` (the centred box of a single-cell image without a detection), ``p_<class>`` per class,
  ``predicted``, ``probability``, ``uncertain`` (probability < ``uncertain_below``), ``label`` (the image's
  canonical label as read, empty when unlabelled) and ``true`` (that label in the bundle's scheme; empty when
  unlabelled, dropped by the scheme or unknown to the bundle);
* ``counts_per_image.csv``, ``counts_per_domain.csv``, ``counts_overall.csv`` and ``counts.md``: the
  differential count, number ``n_<class>`` and percent ``pct_<class>`` of cells per class (percent of the
  cells of that image / domain / all), uncertain cells counted under their predicted class and in
  ``n_uncertain``; for labelled inputs the true count ``true_n_<class>`` beside it;
* ``overlays/*.png``: the fields (not single-cell crops) with their boxes, classes and probabilities;
  ``gallery.png``: crops per predicted class;
* ``report.json``: images read, images without a cell (counted by reason), true classes the bundle does not
  know (reported, never mapped to a known class; their cells are predicted but not scored) and, when the
  inputs are labelled, accuracy and F1-macro over the cells whose true class the bundle knows.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from aecfe.bundle import PROBABILITY_PREFIX, Bundle
from aecfe.errors import InputError
from aecfe.io import IMAGE_EXTENSIONS, identity_path
from aecfe.pipeline import ExtractionImage, ImageList, gather_images, run_extraction
from aecfe.taxonomy import CANONICAL, load_taxonomy
from aecfe.store.roi import FALLBACK_REASON

logger = logging.getLogger(__name__)

STORE_NAME = "cells.h5"


def folder_images(folder: str | os.PathLike, name: str | None = None, *, fields: bool = False) -> list[ExtractionImage]:
    """Every image under ``folder`` (recursively, sorted), unlabelled; the domain is ``name`` (default the
    folder's name), plus ``/<subfolder>`` for images in subfolders, so counts come per folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    name = name or folder.resolve().name
    images = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith("."):
            sub = path.parent.relative_to(folder).as_posix()
            domain = name if sub == "." else f"{name}/{sub}"
            images.append(ExtractionImage(identity_path(path), domain, None, single_cell=not fields))
    if not images:
        raise InputError(f"{folder}: holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images


def collect_inputs(*, class_folders: Iterable = (), domains: Iterable = (), coco: Iterable = (), files: Iterable = (),
                   folders: Iterable[tuple[str | None, str | os.PathLike]] = (), fields: bool = False,
                   allow_outside_paths: bool = False) -> ImageList:
    """The images of a prediction run: :func:`aecfe.pipeline.gather_images`' inputs plus plain image ``folders``
    (``(name or None, folder)``, :func:`folder_images`); an image reached twice is kept once (counted)."""
    class_folders, domains, coco, files, folders = map(list, (class_folders, domains, coco, files, folders))
    listing = ImageList()
    if class_folders or domains or coco or files:
        listing = gather_images(class_folders=class_folders, domains=domains, coco=coco, files=files, fields=fields,
                                allow_outside_paths=allow_outside_paths)
    seen = {str(image.path) for image in listing.images}
    for name, folder in folders:
        found = folder_images(folder, name, fields=fields)
        listing.sources.append(f"image folder {folder}: {len(found)} images")
        for image in found:
            if str(image.path) in seen:
                listing.skips.skip("duplicate path", image.path)
            else:
                seen.add(str(image.path))
                listing.images.append(image)
    if not listing.images:
        raise InputError("no images to predict: give --images, --class-folders, --domain, --coco or --files")
    return listing


@dataclasses.dataclass
class PredictionResult:
    """Where :func:`predict_images` wrote its outputs, and its report."""

    out: Path
    cells: pd.DataFrame
    report: dict


def predict_images(bundle: Bundle, listing: ImageList, out: str | os.PathLike, *, device: str = "cpu",
                   uncertain_below: float = 0.5, batch_size: int = 4, encode_batch: int = 256,
                   max_overlays: int = 20, gallery_per_class: int = 8, progress: bool = True) -> PredictionResult:
    """Extract, encode and predict ``listing``'s images into ``out`` (module docstring); resumable."""
    from aecfe.cell_figures import draw_gallery, draw_overlays
    from aecfe.store import CellStore

    if not 0 <= uncertain_below <= 1:
        raise InputError(f"uncertain_below must be a probability in [0, 1], got {uncertain_below}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / STORE_NAME
    extraction = run_extraction(listing, store_path, detector_factory=lambda: bundle.detector(device),
                                detector_identity=bundle.detector_identity(), batch_size=batch_size,
                                embeddings=[bundle.embedding_stage(device, encode_batch)], progress=progress)
    frame = bundle.predict_store(store_path, device=device, progress=progress, batch_size=encode_batch)
    with CellStore.open(store_path) as store:
        images = store.images()
    cells = cell_table(frame, images, bundle, uncertain_below)
    truth = true_labels(cells, bundle)
    cells["true"] = truth.labels
    report = {"bundle": str(bundle.path), "store": str(store_path), "device": device,
              "uncertain_below": uncertain_below, "images": image_summary(images, listing),
              "cells": int(len(cells)), "uncertain_cells": int(cells["uncertain"].sum()),
              "true_classes_unknown_to_bundle": truth.unknown, "true_labels_dropped_by_scheme": truth.dropped,
              "scores": truth.scores(cells["predicted"].to_numpy(), bundle.classes),
              "extraction_totals": extraction["totals"]}
    if truth.unknown:
        logger.warning("true classes the bundle (classes %s) does not know, not scored: %s", bundle.classes,
                       truth.unknown)
    cells.to_csv(out / "cells.csv", index=False)
    tables = differential_counts(cells, images, bundle.classes)
    for level, table in tables.items():
        table.to_csv(out / f"counts_{level}.csv", index=False)
    markdown = counts_markdown(tables, bundle.classes)
    if truth.unknown:
        markdown += ("\nTrue classes the bundle does not know (cells predicted, not scored): "
                     + ", ".join(f"{label} {n}" for label, n in truth.unknown.items()) + "\n")
    (out / "counts.md").write_text(markdown, encoding="utf-8")
    with CellStore.open(store_path) as store:
        fields = {str(image.path) for image in listing.images if not image.single_cell}
        report["overlays"] = [str(p) for p in draw_overlays(cells, images[images["image_path"].isin(fields)],
                                                            out / "overlays", bundle.classes, max_overlays)]
        report["gallery"] = str(draw_gallery(store, cells, out / "gallery.png", bundle.classes, gallery_per_class))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return PredictionResult(out, cells, report)


def cell_table(frame: pd.DataFrame, images: pd.DataFrame, bundle: Bundle, uncertain_below: float) -> pd.DataFrame:
    """The per-cell CSV's columns from :meth:`Bundle.predict_store`'s frame and the store's images frame."""
    notes = dict(zip(images["image_path"], images["reason"]))
    table = pd.DataFrame({"image": frame["image_path"], "domain": frame["domain"], "cell_index": frame["cell_index"],
                          "x1": frame["x1"], "y1": frame["y1"], "x2": frame["x2"], "y2": frame["y2"],
                          "score": frame["score"],
                          "fallback": frame["image_path"].map(notes).eq(FALLBACK_REASON).to_numpy(bool)})
    for name in bundle.classes:
        table[PROBABILITY_PREFIX + name] = frame[PROBABILITY_PREFIX + name].to_numpy()
    table["predicted"] = frame["predicted"].to_numpy()
    table["probability"] = frame["probability"].to_numpy()
    table["uncertain"] = table["probability"].to_numpy() < uncertain_below
    table["label"] = frame["label"].to_numpy()
    return table


@dataclasses.dataclass
class Truth:
    """True labels of the cells in the bundle's scheme (None: unlabelled, dropped or unknown to the bundle),
    with ``unknown`` ({label: cells} the bundle cannot predict) and ``dropped`` ({label: cells} the scheme drops)."""

    labels: np.ndarray
    unknown: dict
    dropped: dict

    def scores(self, predicted: np.ndarray, classes: Sequence[str]) -> dict | None:
        """:func:`aecfe.metrics.classification_scores` over the cells with a known true class (None if none)."""
        from aecfe.metrics import classification_scores

        known = np.asarray([label is not None for label in self.labels], dtype=bool)
        if not known.any():
            return None
        return classification_scores(self.labels[known].astype(str), np.asarray(predicted)[known].astype(str),
                                     classes)


def true_labels(cells: pd.DataFrame, bundle: Bundle) -> Truth:
    """Map the cells' canonical labels into the bundle's scheme; never onto a class the bundle lacks."""
    canonical = cells["label"].to_numpy(dtype=object)
    labelled = np.asarray([isinstance(v, str) and v != "" for v in canonical], dtype=bool)
    labels = np.full(len(cells), None, dtype=object)
    unknown: dict = {}
    dropped: dict = {}
    if labelled.any():
        mapped = load_taxonomy(CANONICAL, bundle.scheme).map(canonical[labelled])
        for row, original, label in zip(np.flatnonzero(labelled), canonical[labelled], mapped):
            if label is None:
                dropped[original] = dropped.get(original, 0) + 1
            elif label not in bundle.classes:
                unknown[label] = unknown.get(label, 0) + 1
            else:
                labels[row] = label
    return Truth(labels, dict(sorted(unknown.items())), dict(sorted(dropped.items())))


def image_summary(images: pd.DataFrame, listing: ImageList) -> dict:
    """Images read, with cells, and without (by status and reason), plus the input scan's skips."""
    empty = images[images["status"] != "ok"]
    reasons = (empty["status"] + ": " + empty["reason"]).value_counts()
    return {"read": int(len(images)), "with_cells": int((images["status"] == "ok").sum()),
            "without_cells": int(len(empty)), "without_cells_by_reason": {str(k): int(v) for k, v in reasons.items()},
            "scan_skipped": dict(sorted(listing.skips.skipped.items()))}


def differential_counts(cells: pd.DataFrame, images: pd.DataFrame, classes: Sequence[str]) -> dict[str, pd.DataFrame]:
    """``{"per_image", "per_domain", "overall"}`` tables: ``cells``, ``n_<class>``, ``pct_<class>`` (percent of
    the row's cells), ``n_uncertain`` and, when some cell has a true class, ``true_n_<class>``. Images without a
    cell appear in ``per_image`` with 0 cells and their status."""
    def count(group: pd.DataFrame) -> dict:
        row = {"cells": int(len(group))}
        for name in classes:
            row[f"n_{name}"] = int((group["predicted"] == name).sum())
        for name in classes:
            row[f"pct_{name}"] = round(100.0 * row[f"n_{name}"] / len(group), 2) if len(group) else 0.0
        row["n_uncertain"] = int(group["uncertain"].sum())
        if cells["true"].notna().any():
            for name in classes:
                row[f"true_n_{name}"] = int((group["true"] == name).sum())
        return row

    per_image = []
    by_image = dict(tuple(cells.groupby("image", sort=False)))
    for _, image in images.sort_values(["domain", "image_path"]).iterrows():
        group = by_image.get(image["image_path"], cells.iloc[:0])
        per_image.append({"image": image["image_path"], "domain": image["domain"], "status": image["status"],
                          **count(group)})
    per_domain = [{"domain": domain, "images": int((images["domain"] == domain).sum()),
                   **count(cells[cells["domain"] == domain])} for domain in sorted(images["domain"].unique())]
    overall = [{"domain": "all", "images": int(len(images)), **count(cells)}]
    return {"per_image": pd.DataFrame(per_image), "per_domain": pd.DataFrame(per_domain),
            "overall": pd.DataFrame(overall)}


def counts_markdown(tables: Mapping[str, pd.DataFrame], classes: Sequence[str]) -> str:
    """The per-domain and overall differential counts as Markdown: ``n (pct %)`` per class."""
    def cell_text(row, name):
        text = f"{row[f'n_{name}']} ({row[f'pct_{name}']:.1f} %)"
        return text + (f" / {row[f'true_n_{name}']}" if f"true_n_{name}" in row else "")

    rows = pd.concat([tables["per_domain"], tables["overall"]], ignore_index=True)
    shown = pd.DataFrame({"domain": rows["domain"], "images": rows["images"], "cells": rows["cells"],
                          **{name: [cell_text(r, name) for _, r in rows.iterrows()] for name in classes},
                          "uncertain": rows["n_uncertain"]})
    note = " (predicted n (percent) / true n)" if any(c.startswith("true_n_") for c in rows.columns) else ""
    return f"Differential count per domain{note}:\n\n{shown.to_markdown(index=False)}\n"
