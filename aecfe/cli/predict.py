"""Classify the cells of new images with a model bundle: per-cell CSV, differential counts, overlays, gallery.

Usage::

    aecfe-predict runs/bundle --images new_lab=smears/ --fields --out runs/predict_new_lab
    aecfe-predict runs/bundle --class-folders labelled/ --out runs/check      # labelled: scored too
    aecfe-predict runs/bundle --files list.txt --coco lab=fields.json --uncertain-below 0.6 --out runs/p

Inputs (repeatable, combinable): ``--images [NAME=]DIR`` (every image under DIR, unlabelled; subfolders count
as their own folder), ``--class-folders DIR`` (``DIR/<domain>/<class>/<image>``), ``--domain NAME=DIR``
(``DIR/<class>/<image>``), ``--coco NAME=JSON`` (fields), ``--files LIST``. Images are single-cell crops unless
``--fields``. Unlabelled images are the normal case; labelled ones are also scored, and a true class the bundle
does not know is reported, never mapped onto another.

Outputs in ``--out`` (see :mod:`aecfe.prediction`): ``cells.csv``, ``counts_per_image.csv``,
``counts_per_domain.csv``, ``counts_overall.csv``, ``counts.md``, ``overlays/*.png``, ``gallery.png``,
``report.json`` and the resumable cell store ``cells.h5`` (a re-run continues where it stopped).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from aecfe.cli import (EXIT_NOTHING_PROCESSED, add_bundle_run_options, add_image_inputs, command, nonnegative_int,
                       positive_int, probability, run_program, start_bundle_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bundle", type=Path, help="model bundle folder (aecfe-train-classifier)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (holds the resumable cell store)")
    add_image_inputs(parser)
    parser.add_argument("--uncertain-below", type=probability, default=0.5,
                        help="flag cells whose predicted class has a lower probability")
    add_bundle_run_options(parser)
    parser.add_argument("--max-overlays", type=nonnegative_int, default=20, help="field overlays to draw")
    parser.add_argument("--gallery-per-class", type=positive_int, default=8, help="crops per class in gallery.png")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    from aecfe.prediction import predict_images

    args = build_parser().parse_args(argv)
    bundle, listing, device = start_bundle_run(args)
    result = predict_images(bundle, listing, args.out, device=device,
                            uncertain_below=args.uncertain_below, batch_size=args.batch_size,
                            encode_batch=args.encode_batch, max_overlays=args.max_overlays,
                            gallery_per_class=args.gallery_per_class, progress=not args.no_progress)
    print((args.out / "counts.md").read_text(encoding="utf-8"))
    images = result.report["images"]
    print(f"{result.report['cells']} cells from {images['with_cells']} of {images['read']} images "
          f"({images['without_cells']} without a cell: {images['without_cells_by_reason'] or 'none'}); "
          f"{result.report['uncertain_cells']} uncertain; outputs in {args.out}")
    if result.report["true_classes_unknown_to_bundle"]:
        print(f"true classes the bundle does not know (not scored): {result.report['true_classes_unknown_to_bundle']}")
    if result.report["scores"]:
        print(f"against the true labels: accuracy {result.report['scores']['accuracy']:.3f}, "
              f"F1-macro {result.report['scores']['f1_macro']:.3f}")
    return EXIT_NOTHING_PROCESSED if result.report["cells"] == 0 else 0


if __name__ == "__main__":
    raise SystemExit(run_program(main))
