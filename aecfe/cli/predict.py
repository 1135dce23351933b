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
import logging
from pathlib import Path

from aecfe.cli import (EXIT_NOTHING_PROCESSED, command, named_path, nonnegative_int, positive_int, probability,
                       run_program)


def _named_dir(text: str) -> tuple[str | None, Path]:
    name, sep, path = text.partition("=")
    return (name, Path(path)) if sep and name and path else (None, Path(text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bundle", type=Path, help="model bundle folder (aecfe-train-classifier)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (holds the resumable cell store)")
    inputs = parser.add_argument_group("inputs (repeatable)")
    inputs.add_argument("--images", type=_named_dir, action="append", default=[], metavar="[NAME=]DIR",
                        help="every image under DIR, unlabelled")
    inputs.add_argument("--class-folders", type=Path, action="append", default=[], metavar="DIR",
                        help="DIR/<domain>/<class>/<image>")
    inputs.add_argument("--domain", type=named_path, action="append", default=[], metavar="NAME=DIR",
                        help="one domain's DIR/<class>/<image>")
    inputs.add_argument("--coco", type=named_path, action="append", default=[], metavar="NAME=JSON")
    inputs.add_argument("--files", type=Path, action="append", default=[], metavar="LIST",
                        help="text file: one image path per line [<TAB>domain[<TAB>label]]")
    inputs.add_argument("--fields", action="store_true", help="images are fields with several cells, not crops")
    inputs.add_argument("--allow-outside-paths", action="store_true",
                        help="accept COCO file_name entries outside the annotation file's folder")
    parser.add_argument("--uncertain-below", type=probability, default=0.5,
                        help="flag cells whose predicted class has a lower probability")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default: the GPU if present, else the CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="images per detector call")
    parser.add_argument("--encode-batch", type=positive_int, default=256, help="cells per embedder call")
    parser.add_argument("--max-overlays", type=nonnegative_int, default=20, help="field overlays to draw")
    parser.add_argument("--gallery-per-class", type=positive_int, default=8, help="crops per class in gallery.png")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    from aecfe.bundle import load_bundle
    from aecfe.devices import resolve_device
    from aecfe.prediction import collect_inputs, predict_images

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    listing = collect_inputs(class_folders=args.class_folders, domains=args.domain, coco=args.coco,
                             files=args.files, folders=args.images, fields=args.fields,
                             allow_outside_paths=args.allow_outside_paths)
    result = predict_images(bundle, listing, args.out, device=resolve_device(args.device),
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
