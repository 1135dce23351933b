"""Extract cell features into an HDF5 cell store: images -> detector -> RoI features + crops -> embeddings.

Usage::

    aecfe-extract-features --class-folders data/cls --detector-checkpoint det.pt \\
        --autoencoder-checkpoint ae.pt --baselines rcnn_roi --out runs/cells.h5
    aecfe-extract-features --domain lab1=imgs/lab1 --coco lab2=lab2/annotations.json --files more.txt ...
    aecfe-extract-features ... --shard 0/4 --out runs/shard0.h5      # one of 4 shards (0/4 .. 3/4)
    aecfe-extract-features --merge runs/shard*.h5 --out runs/cells.h5
    aecfe-extract-features --class-folders data/cls --report-duplicates [--out dups.json]   # no detector

Inputs (repeatable, combinable): ``--class-folders DIR`` (``DIR/<domain>/<class>/<image>``), ``--domain
NAME=DIR`` (``DIR/<class>/<image>``), ``--coco NAME=JSON`` (whole fields, unlabelled), ``--files LIST``
(one image per line, optionally ``<TAB>domain<TAB>label``). Class-folder and list images are single-cell
crops unless ``--fields``.

Every stage is cached in the store (:func:`aecfe.pipeline.run_extraction`): a re-run, or a run after a crash or
``kill -9``, skips the images already in it and continues each embedding at its committed row count. The run
report (images read, cells found, images skipped and why, per domain) goes to ``<out>.report.json`` and the log.
``--merge`` joins shard stores (:func:`aecfe.pipeline.merge_shards`) and reports on the result.

An image is its resolved path (the same folder given as ``../data`` or ``/abs/data``, or a run from another
directory, is not detected twice), and its row records the SHA-1 of the file's bytes: byte-identical copies
under other names or in other domains are counted in the report (``duplicates``). ``--report-duplicates``
hashes the inputs and reports those groups without a detector or a store. Images recorded as errors count as
done unless ``--retry-errors``. The store is created only once the inputs, options and models are loaded.
Exit status: 0 done; 1 the run had images but none could be read (every one an error); 2 a usage error or
one of aecfe's errors (one line on stderr naming the file and the problem).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aecfe.cli import EXIT_NOTHING_PROCESSED, command, named_path, positive_int, probability, run_program
from aecfe.pipeline import (detector_factory, format_duplicates, gather_images, merge_shards,
                            nothing_processed, parse_shard, run_extraction, write_duplicate_report)
from aecfe.store import BASELINE_EMBEDDINGS, RAW_PIXEL_SIDE, autoencoder_stage, baseline_stage, format_report

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from detectors.torchvision_backend import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, help="the cell store (HDF5) to write or resume (required except "
                                                 "with --report-duplicates, where it is the JSON report)")
    inputs = parser.add_argument_group("inputs (repeatable)")
    inputs.add_argument("--class-folders", type=Path, action="append", default=[], metavar="DIR",
                        help="DIR/<domain>/<class>/<image>")
    inputs.add_argument("--domain", type=named_path, action="append", default=[], metavar="NAME=DIR",
                        help="one domain's DIR/<class>/<image>")
    inputs.add_argument("--coco", type=named_path, action="append", default=[], metavar="NAME=JSON",
                        help="COCO annotations of one domain's fields")
    inputs.add_argument("--files", type=Path, action="append", default=[], metavar="LIST",
                        help="text file: one image path per line [<TAB>domain[<TAB>label]]")
    inputs.add_argument("--fields", action="store_true",
                        help="class-folder and list images are fields with several cells, not single-cell crops")
    inputs.add_argument("--shard", help="process shard i/n of the sorted image list (i counted from 0)")
    inputs.add_argument("--allow-outside-paths", action="store_true",
                        help="accept COCO file_name entries that lead outside the annotation file's folder")
    inputs.add_argument("--retry-errors", action="store_true",
                        help="run the images the store records as errors again (default: they count as done)")
    inputs.add_argument("--report-duplicates", action="store_true",
                        help="only hash the inputs and report byte-identical images (no detector, no store)")
    detector = parser.add_argument_group("detector")
    detector.add_argument("--detector-checkpoint", type=Path, help="trained detector (detectors.training)")
    detector.add_argument("--detector-backend", default="torchvision")
    detector.add_argument("--backbone", default=None, choices=BACKBONES,
                          help="detector backbone (default: the checkpoint's)")
    detector.add_argument("--min-size", type=positive_int, default=None, help="detector input resize: shorter side")
    detector.add_argument("--max-size", type=positive_int, default=None, help="detector input resize: longer side cap")
    detector.add_argument("--score-threshold", type=probability, default=None,
                          help="drop detections below this score (0..1)")
    detector.add_argument("--fallback", choices=["none", "center"], default=None,
                          help="single-cell images without a detection: record as undetected (none) or use a "
                               "centred box (center)")
    detector.add_argument("--batch-size", type=positive_int, default=4, help="images per detector call")
    stages = parser.add_argument_group("stored stages and embeddings")
    stages.add_argument("--no-roi", action="store_true", help="do not store RoI features (256x14x14 float16)")
    stages.add_argument("--no-crops", action="store_true", help="do not store crops (3x128x128 uint8)")
    stages.add_argument("--autoencoder-checkpoint", type=Path, help="trained autoencoder: writes its embedding")
    stages.add_argument("--embedding-name", help="name of the autoencoder embedding (default ae_<alignment>)")
    stages.add_argument("--encode-batch", type=positive_int, default=256)
    stages.add_argument("--baselines", nargs="*", choices=BASELINE_EMBEDDINGS, default=[],
                        help="baseline embeddings: rcnn_roi = RoI features averaged over 14x14 (256-d), "
                             f"raw_pixels = crop averaged to {RAW_PIXEL_SIDE}x{RAW_PIXEL_SIDE} RGB")
    stages.add_argument("--chunk-cells", type=positive_int, default=256, help="cells per store commit")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="SHARD",
                        help="instead of extracting: merge these shard stores into --out")
    parser.add_argument("--threads", type=positive_int, help="torch threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def detector_factory_and_identity(args) -> tuple:
    """(a function building the detector, its identity) from the arguments (:func:`aecfe.pipeline.detector_factory`)."""
    return detector_factory(args.detector_checkpoint, args.detector_backend, backbone=args.backbone,
                            min_size=args.min_size, max_size=args.max_size, score_threshold=args.score_threshold,
                            single_cell_fallback=args.fallback)


@command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and not args.report_duplicates:
        parser.error("--out is required (the cell store to write or resume)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    inputs = dict(class_folders=args.class_folders, domains=args.domain, coco=args.coco, files=args.files,
                  fields=args.fields, allow_outside_paths=args.allow_outside_paths)
    if args.report_duplicates:  # hash the inputs: no detector, no store
        print(format_duplicates(write_duplicate_report(gather_images(**inputs), args.out)))
        return 0
    if args.merge:
        merge_shards(args.merge, args.out)
        return 0
    listing = gather_images(**inputs)
    factory, identity = detector_factory_and_identity(args)
    embeddings = [baseline_stage(name) for name in args.baselines]
    if args.autoencoder_checkpoint:
        embeddings.append(autoencoder_stage(args.autoencoder_checkpoint, args.embedding_name, args.encode_batch))
    report = run_extraction(listing, args.out, detector_factory=factory, detector_identity=identity,
                            embeddings=embeddings, shard=parse_shard(args.shard), keep_roi=not args.no_roi,
                            keep_crops=not args.no_crops, batch_size=args.batch_size, chunk_cells=args.chunk_cells,
                            progress=not args.no_progress, retry_errors=args.retry_errors)
    if nothing_processed(report):
        logger.error("%s: none of the %d images could be read or detected (%s); see %s.report.json", args.out,
                     report["images_in_run"], format_report(report).splitlines()[0], args.out)
        return EXIT_NOTHING_PROCESSED
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program(main))
