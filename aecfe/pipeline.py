"""Feature extraction as a resumable pipeline: images -> detector -> RoI features and crops -> embeddings.

The orchestration only: every write goes through the store boundary (:mod:`aecfe.store`: the roi stage
writer, the embedding stages). Everything lands in one HDF5 cell store, stage by stage, each stage cached:

1. **inputs** (:func:`gather_images`): class folders (``root/<domain>/<class>/<image>`` or one domain's
   ``root/<class>/<image>``), COCO files (whole fields) and plain lists of files, as
   :class:`ExtractionImage` (path, domain, canonical label or None). Images the scan rejects (empty files,
   labels the class map drops) are counted in a :class:`~aecfe.io.SkipCounter`, never silently dropped.
   :func:`shard_images` takes shard ``i`` of ``n`` of that list (round robin over the sorted list); under
   ``torchrun`` :func:`run_extraction_ranks` gives every process its shard and merges them on rank 0.
2. **roi stage** (:func:`aecfe.store.roi.write_roi_stage`): per image the detector's boxes, scores, mask
   areas, RoI features (256x14x14) and crops (3x128x128); images already in the store are skipped, so a
   re-run, or a run after ``kill -9``, continues where the last commit stopped. Unreadable images are
   stored with status ``"error"`` and images without a cell with status ``"undetected"`` (with reasons).
3. **embedding stages** (:func:`aecfe.store.embeddings.write_embedding_stage`): per embedding name, rows are computed block by
   block from the store's committed cells and committed with ``rows_done``; a re-run starts at
   :meth:`~aecfe.store.CellStore.embedding_progress`. Embeddings: the autoencoder's code
   (:func:`aecfe.store.embeddings.autoencoder_stage`), and the baselines ``rcnn_roi`` (RoI features averaged over the 14x14
   grid: 256-d, the R-CNN-RF baseline of METHODS §1.8) and ``raw_pixels`` (the crop block-averaged to
   ``side`` x ``side`` RGB in [0, 1]).
4. **report** (:func:`aecfe.store.runs.extraction_report`): images read, cells found, images skipped and why, per domain,
   from the store itself (so it is right after any number of resumed runs), plus the scan's skips; written
   as JSON next to the store (:func:`aecfe.store.runs.report_path`) and logged.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from aecfe.atomic import write_text_atomic
from aecfe.errors import InputError
from aecfe.identity import detector_identity
from aecfe.io import (ImageRecord, SkipCounter, duplicate_summary, find_duplicates, hash_images, identity_path,
                      load_coco, log_duplicates, scan_class_folders, scan_domains)
from aecfe.store import (EMBEDDING_BLOCK, EmbeddingStage, create_run_store, extraction_report, format_report,
                         merge_stores, open_existing_store, report_path, store_report, write_embedding_stage,
                         write_report, write_roi_stage)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ExtractionImage:
    """One image to extract: ``path`` (the store's resume key: :func:`gather_images` makes it the resolved
    path, :func:`aecfe.io.identity_path`), ``domain``, ``label``
    (canonical class of the image's cell(s) or None when unknown) and ``single_cell`` (the image shows one
    cell, as in a classification set, rather than a field with several). ``record``: the
    :class:`~aecfe.io.ImageRecord` the scan made, if any (see :meth:`as_record`)."""

    path: Path
    domain: str
    label: str | None = None
    single_cell: bool = True
    record: ImageRecord | None = field(default=None, compare=False, repr=False)

    def as_record(self) -> ImageRecord:
        """The :class:`~aecfe.io.ImageRecord` the roi stage reads (path, domain, canonical label)."""
        if self.record is not None:
            return self.record
        return ImageRecord(self.path, self.domain, self.label or "", self.label, "unknown")


@dataclass
class ImageList:
    """The images of a run and what the scan left out: ``images`` in a fixed order, ``skips`` (counted by
    reason), ``sources`` (one line per input, for the report)."""

    images: list[ExtractionImage] = field(default_factory=list)
    skips: SkipCounter = field(default_factory=lambda: SkipCounter("images"))
    sources: list[str] = field(default_factory=list)


def parse_named_path(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (name, path); :class:`InputError` otherwise."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise InputError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def read_file_list(list_path: str | os.PathLike, default_domain: str | None = None) -> list[ExtractionImage]:
    """Images listed in a text file, one per line: ``path`` or ``path<TAB>domain`` or
    ``path<TAB>domain<TAB>label``; blank lines and lines starting with ``#`` are ignored.

    Relative paths are relative to the list's folder. The domain defaults to ``default_domain`` or the
    list's file name without suffix; a missing or empty label is None (unlabelled). The list is read as
    UTF-8 with ``surrogateescape``, so a name that is not UTF-8 is kept byte for byte (as ``os.fsdecode``
    gives it) instead of failing.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise InputError(f"{list_path}: image list not found")
    default_domain = default_domain or list_path.stem
    images = []
    with list_path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) > 3:
                raise InputError(f"{list_path}:{number}: expected path[<TAB>domain[<TAB>label]], got {len(row)} "
                                 "tab-separated fields")
            path = Path(row[0].strip())
            path = path if path.is_absolute() else list_path.parent / path
            domain = row[1].strip() if len(row) > 1 and row[1].strip() else default_domain
            label = row[2].strip() if len(row) > 2 and row[2].strip() else None
            images.append(ExtractionImage(path, domain, label, single_cell=True))
    if not images:
        raise InputError(f"{list_path}: lists no images")
    return images


def gather_images(*, class_folders: Iterable[str | os.PathLike] = (),
                  domains: Mapping[str, str | os.PathLike] | Iterable[tuple[str, str | os.PathLike]] = (),
                  coco: Mapping[str, str | os.PathLike] | Iterable[tuple[str, str | os.PathLike]] = (),
                  files: Iterable[str | os.PathLike] = (), fields: bool = False,
                  allow_outside_paths: bool = False) -> ImageList:
    """Collect the images of a run from every kind of input, in the order given, without duplicates.

    Args:
        class_folders: folders ``root/<domain>/<class>/<image>`` (each subfolder a domain, like ``data/cls``).
        domains: ``(name, folder)`` pairs of one domain's ``folder/<class>/<image>``.
        coco: ``(name, annotations.json)`` pairs; every image is a field (``single_cell=False``), labelled
            only when its entry has an ``image_label`` (BCCD).
        files: image lists (:func:`read_file_list`).
        fields: mark class-folder and list images as fields with several cells, not single-cell crops.
        allow_outside_paths: COCO ``file_name`` may lead outside the annotation file's folder
            (:func:`aecfe.io.load_coco`).

    Labels of class folders are canonical classes (via the domain's class map, :mod:`aecfe.taxonomy`).
    Unusable entries (empty files, labels the class map drops, broken COCO entries) are skipped and
    counted. Every path becomes its resolved form (:func:`aecfe.io.identity_path`: absolute, symlinks and
    ``..`` resolved), so a folder given as ``../data`` and as ``/abs/data``, or a run started from another
    directory, names each image the same way; an image reached twice keeps its first occurrence (counted
    as ``duplicate path``).
    """
    listing = ImageList()
    single = not fields
    for root in class_folders:
        records = scan_domains(root, on_error="skip", skips=listing.skips)
        listing.images.extend(ExtractionImage(r.path, r.domain, r.canonical, single, r) for r in records)
        listing.sources.append(f"class folders {root}: {len(records)} images")
    for name, folder in _pairs(domains):
        records = scan_class_folders(folder, domain=name, on_error="skip", skips=listing.skips)
        listing.images.extend(ExtractionImage(r.path, r.domain, r.canonical, single, r) for r in records)
        listing.sources.append(f"domain {name} = {folder}: {len(records)} images")
    for name, json_path in _pairs(coco):
        entries = load_coco(json_path, on_error="skip", skips=listing.skips, allow_outside_paths=allow_outside_paths)
        listing.images.extend(ExtractionImage(e.path, name, _coco_image_label(e), single_cell=False)
                              for e in entries)
        listing.sources.append(f"COCO {name} = {json_path}: {len(entries)} images")
    for list_path in files:
        listed = read_file_list(list_path)
        listing.images.extend(ExtractionImage(i.path, i.domain, i.label, single) for i in listed)
        listing.sources.append(f"file list {list_path}: {len(listed)} images")
    seen: set[str] = set()
    unique = []
    for image in map(_with_identity_path, listing.images):
        if str(image.path) in seen:
            listing.skips.skip("duplicate path", image.path)
        else:
            seen.add(str(image.path))
            unique.append(image)
    listing.images = unique
    if not listing.images:
        raise InputError("no images to extract: give --class-folders, --domain, --coco or --files "
                         f"({listing.skips.summary()})")
    return listing


def _with_identity_path(image: ExtractionImage) -> ExtractionImage:
    """``image`` with its path (and its scan record's path) replaced by :func:`aecfe.io.identity_path`."""
    path = identity_path(image.path)
    record = image.record if image.record is None else dataclasses.replace(image.record, path=path)
    return dataclasses.replace(image, path=path, record=record)


def duplicate_report(listing: ImageList) -> dict:
    """Hash every image of ``listing`` (SHA-1 of the bytes; no detector, no store) and summarise the groups of
    byte-identical images (:func:`aecfe.io.duplicate_summary`: groups, images, extra copies, groups and images
    across domains, examples); files that cannot be read are counted under ``unreadable``. Logged."""
    unreadable = SkipCounter("images")
    hashes = hash_images([image.path for image in listing.images], unreadable)
    groups = find_duplicates((image.path, image.domain, hashes.get(str(image.path), ""))
                             for image in listing.images)
    log_duplicates(groups)
    return {"images": len(listing.images), "hashed": len(hashes), "unreadable": dict(unreadable.skipped),
            "sources": list(listing.sources), "scan_skipped": dict(sorted(listing.skips.skipped.items())),
            "duplicates": duplicate_summary(groups, max_examples=20)}


def _coco_image_label(entry) -> str | None:
    label = entry.attributes.get("image_label")
    return label if isinstance(label, str) and label else None


def _pairs(values) -> list[tuple[str, Path]]:
    items = values.items() if isinstance(values, Mapping) else values
    return [(str(name), Path(path)) for name, path in items]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 <= i < n) -> (i, n); None -> None; :class:`InputError` otherwise."""
    if text is None:
        return None
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or not 0 <= i < n:
        raise InputError(f"--shard must be i/n with 0 <= i < n (shard i of n, counted from 0), got {text!r}")
    return i, n


def shard_images(images: Sequence[ExtractionImage], shard: tuple[int, int] | None) -> list[ExtractionImage]:
    """Shard ``i`` of ``n``: every n-th image of the list sorted by (domain, path), starting at the i-th.

    The n shards partition the list (each image in exactly one), do not depend on the order the inputs
    were given in, and spread every domain evenly over the shards. None: the whole list, unchanged.
    """
    if shard is None:
        return list(images)
    i, n = shard
    ordered = sorted(images, key=lambda image: (image.domain, str(image.path)))
    return ordered[i::n]


def detector_factory(checkpoint: str | os.PathLike | None, backend: str = "torchvision", *, device: str = "cpu",
                     **options) -> tuple[Callable[[], object] | None, dict | None]:
    """(a function building the detector, its identity for the store's provenance); (None, None) without a
    checkpoint.

    ``options``: the detector options of :data:`aecfe.identity.DETECTOR_OPTIONS` (None: the checkpoint's own
    value or ``make_detector``'s default). The identity (:func:`aecfe.identity.detector_identity`) is known
    without building the model, so a re-run with nothing left to detect never loads it. ``device``: where the
    detector runs (not part of the identity: a store resumed on another device continues).
    """
    if checkpoint is None:
        return None, None
    if not Path(checkpoint).is_file():
        raise InputError(f"{checkpoint}: detector checkpoint not found")
    identity = detector_identity(checkpoint, backend, **options)

    def build():
        from detectors.base import make_detector

        # unset sizes stay unset: make_detector keeps the ones the checkpoint was trained with
        given = {key: value for key, value in options.items() if value is not None}
        try:
            return make_detector(backend, checkpoint=str(checkpoint), device=device, **given)
        except ValueError as err:  # make_detector's checks of its options (InputError is one too)
            raise InputError(f"{checkpoint}: cannot build the detector: {err}") from err

    return build, identity


def merge_shards(shards: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                 domains: Sequence[str] | None = None) -> dict:
    """Merge shard stores into ``out`` (:func:`aecfe.store.merge_stores`, only ``domains``' images when given) and
    write the merged store's report (the scan's skips taken from the first shard report found: every shard saw the
    same scan)."""
    merge_stores(shards, out, domains=domains)
    scan_skipped = {}
    for path in (report_path(shard) for shard in shards):
        if path.is_file():
            scan_skipped = json.loads(path.read_text(encoding="utf-8")).get("scan_skipped", {})
            break
    report = store_report(out, merged_from=[str(s) for s in shards])
    report["scan_skipped"] = scan_skipped
    write_report(report, out)
    return report


def write_duplicate_report(listing: ImageList, out: str | os.PathLike | None = None) -> dict:
    """:func:`duplicate_report` of ``listing``, written as JSON to ``out`` when given (atomically)."""
    report = duplicate_report(listing)
    if out is not None:
        write_text_atomic(out, json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def format_duplicates(report: Mapping) -> str:
    """One line summarising a :func:`duplicate_report`."""
    found = report["duplicates"]
    return (f"{report['hashed']} of {report['images']} images hashed: {found['groups']} groups of byte-identical "
            f"images ({found['images']} images, {found['extra_copies']} extra copies); "
            f"{found['cross_domain_groups']} groups ({found['cross_domain_images']} images) across domains")


# ---------------------------------------------------------------------------------------------- the whole run
def _positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")


def run_extraction(listing: ImageList, store_path: str | os.PathLike, *,
                   detector_factory: Callable[[], object] | None, detector_identity: Mapping | None,
                   embeddings: Sequence[EmbeddingStage] = (), shard: tuple[int, int] | None = None,
                   keep_roi: bool = True, keep_crops: bool = True, batch_size: int = 4, chunk_cells: int = 256,
                   embedding_block: int = EMBEDDING_BLOCK, progress: bool = True,
                   roi_stage_options: Mapping | None = None, retry_errors: bool = False) -> dict:
    """Run (or resume) every stage of an extraction into ``store_path`` and write its report; returns it.

    Args:
        listing: the run's images (:func:`gather_images`); this run takes shard ``shard`` of them.
        detector_factory: builds the detector (``detectors.base.Detector``) when some image still needs the
            roi stage; not called when every image is in the store already. None: no roi stage (the store
            must hold every image).
        detector_identity: JSON-able identity of the detector (config, weights sha256), stored as the
            store's provenance ``"detector"``; a resumed store must carry the same.
        embeddings: embedding stages to complete after the roi stage, in order.
        keep_roi / keep_crops: store the RoI features / crops (needed by ``rcnn_roi``, the autoencoder and
            its training / by ``raw_pixels`` and autoencoder training).
        batch_size: images per detector call; chunk_cells: cells per store commit; embedding_block: cells
            per embedding commit (each >= 1).
        roi_stage_options: further keyword arguments of :func:`aecfe.store.roi.write_roi_stage`.
        retry_errors: images the store holds with status "error" go through the roi stage again (their
            error rows become status "retried"); by default they count as done.

    Validate before creating: a new store is created only after the options are checked and the detector is
    built, so a run that fails to start leaves no file behind (and an empty store left by an older failed
    start is replaced, :func:`open_existing_store`).
    """
    _positive(batch_size=batch_size, chunk_cells=chunk_cells, embedding_block=embedding_block)
    started = time.perf_counter()
    images = shard_images(listing.images, shard)
    provenance = {"detector": detector_identity, "autoencoder": None}
    if shard is not None:
        provenance["shard"] = f"{shard[0]}/{shard[1]}"
    timings = {}
    detector = None
    store = open_existing_store(store_path, provenance)
    if store is None:
        if images:
            detector = _build_detector(detector_factory, store_path, len(images))
        store = create_run_store(store_path, provenance, keep_roi=keep_roi, keep_crops=keep_crops,
                                 chunk_cells=chunk_cells)
    with store:
        done = store.processed_images(include_errors=not retry_errors)
        todo = [image for image in images if str(image.path) not in done]
        logger.info("%s: %d of %d images of this run already in the store, %d to detect%s", store_path,
                    len(images) - len(todo), len(images), len(todo),
                    " (errors retried)" if retry_errors else "")
        roi_report = None
        if todo:
            detector = detector or _build_detector(detector_factory, store_path, len(todo))
            for single_cell in (True, False):
                group = [image for image in todo if image.single_cell == single_cell]
                if group:
                    stage_report = write_roi_stage(detector, [image.as_record() for image in group], store,
                                                   single_cell=single_cell, batch_size=batch_size,
                                                   progress=progress, retry_errors=retry_errors,
                                                   **(roi_stage_options or {}))
                    roi_report = _merge_roi_reports(roi_report, stage_report.to_dict())
            store.flush()
        timings["roi_stage_seconds"] = round(time.perf_counter() - started, 3)
        for stage in embeddings:
            stage_start = time.perf_counter()
            write_embedding_stage(store, stage, embedding_block, progress=progress)
            timings[f"embedding_{stage.name}_seconds"] = round(time.perf_counter() - stage_start, 3)
        report = extraction_report(store, listing.skips, inputs=listing.sources,
                                   shard=provenance.get("shard"), images_in_run=len(images),
                                   images_detected_now=len(todo), roi_stage=roi_report, timings=timings)
    write_report(report, store_path)
    return report


def rank_shard(store_path: str | os.PathLike, rank: int, world_size: int) -> tuple[tuple[int, int], Path]:
    """The shard of process ``rank`` of ``world_size`` under ``torchrun`` and its store: ``((rank, world_size),
    <dir>/<stem>.rank<rank>of<world_size><suffix>)`` beside ``store_path`` (e.g. ``cells.rank1of4.h5``)."""
    if not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is not a rank of a world of {world_size} processes")
    path = Path(store_path)
    return (rank, world_size), path.with_name(f"{path.stem}.rank{rank}of{world_size}{path.suffix}")


def run_extraction_ranks(listing: ImageList, store_path: str | os.PathLike, *, shard: tuple[int, int] | None = None,
                         rank: int | None = None, world_size: int | None = None,
                         barrier: Callable[[], None] | None = None, **options) -> dict:
    """:func:`run_extraction`, or under ``torchrun`` (world size > 1) one shard per process, then one merge.

    Under ``torchrun --nproc-per-node N`` every process (rank r of N; :func:`aecfe.distributed.init_distributed`)
    extracts shard r/N (:func:`shard_images`) into its own store (:func:`rank_shard`: ``<stem>.rank<r>of<N>.h5``,
    resumable like any store), waits for the others (a gloo barrier, so it works beside NCCL), and rank 0 merges the
    shard stores into ``store_path`` (:func:`merge_shards`; a merged store left by an earlier run is rebuilt from
    the shard stores). Returns rank 0's merged report, another rank's shard report. ``shard`` (``--shard``) is
    for runs without torchrun. ``rank`` / ``world_size`` / ``barrier``: the process group's (for tests).
    """
    if rank is None or world_size is None:
        from aecfe.distributed import init_distributed

        rank, world_size = init_distributed()
        if world_size > 1:
            import torch.distributed as dist

            try:
                return run_extraction_ranks(listing, store_path, shard=shard, rank=rank, world_size=world_size,
                                            **options)
            finally:
                dist.destroy_process_group()
    if world_size <= 1:
        return run_extraction(listing, store_path, shard=shard, **options)
    if shard is not None:
        raise InputError("--shard and torchrun both split the images: under torchrun every process takes its shard")
    if barrier is None:
        import torch.distributed as dist

        group = dist.new_group(backend="gloo")
        barrier = lambda: dist.barrier(group=group)  # noqa: E731
    part, part_path = rank_shard(store_path, rank, world_size)
    report = run_extraction(listing, part_path, shard=part, **options)
    barrier()
    if rank != 0:
        return report
    parts = [rank_shard(store_path, r, world_size)[1] for r in range(world_size)]
    store_path = Path(store_path)
    if store_path.exists():
        store_path.unlink()
    logger.info("rank 0: merging %d shard stores into %s", len(parts), store_path)
    return merge_shards(parts, store_path)


def _build_detector(factory: Callable[[], object] | None, store_path, n_images: int):
    """The detector from ``factory``; :class:`InputError` when there is none but images need it."""
    if factory is None:
        raise InputError(f"{store_path}: {n_images} images still need the roi stage, and no detector was given "
                         "(--detector-checkpoint)")
    return factory()


def _merge_roi_reports(total: dict | None, part: dict) -> dict:
    """Sum two :meth:`RoiStageReport.to_dict` results (single-cell and field images of one run)."""
    if total is None:
        return part
    merged = {key: total[key] + part[key] for key in total if key not in ("errors", "seconds")}
    merged["errors"] = {k: total["errors"].get(k, 0) + part["errors"].get(k, 0)
                        for k in set(total["errors"]) | set(part["errors"])}
    merged["seconds"] = round(total["seconds"] + part["seconds"], 3)
    return merged


def nothing_processed(report: Mapping) -> bool:
    """True when the run had images but the store holds none of them read successfully (every one an error)."""
    totals = report["totals"]
    return report.get("images_in_run", totals["images"]) > 0 and totals["ok"] + totals["undetected"] == 0
