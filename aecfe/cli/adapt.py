"""Adapt a model bundle to a new lab: extract its cells, continue training the autoencoder with them (unlabelled),
re-encode, refit the head, write a new bundle.

Usage::

    aecfe-adapt runs/bundle --images new_lab=smears/ --out runs/adapt_new_lab             # no label of the new lab
    aecfe-adapt runs/bundle --images new_lab=smears/ --labels my_cells.csv --out runs/adapt   # + k labelled cells
    aecfe-adapt runs/bundle --domain lab_c=cls/lab_c --shots 0,5,10,20 --out runs/adapt_c    # measure (labelled lab)

The bundle must have an autoencoder embedder; its training store (``--source-store``, default the path in its
provenance) gives the source cells and labels. ``--labels FILE``: CSV with header ``image,class[,cell_index]``
naming labelled cells of the new lab (skips are counted and reported). ``--shots K,...``: for measuring on a
labelled lab, the k labelled cells per class of the shared selection (``aecfe.splits.few_shot_selection``) enter
the head, the rest of the lab is scored (``few_shot.md``). Outputs in ``--out`` (see :mod:`aecfe.adaptation`):
``cells.h5``, ``autoencoder/``, ``bundle/`` (or ``bundle_k<k>/``), ``adaptation.json``, ``few_shot.csv`` / ``.md``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from aecfe.cli import (add_bundle_run_options, add_image_inputs, command, int_list, key_value, nonnegative_int,
                       positive_float, run_program, start_bundle_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bundle", type=Path, help="model bundle folder with an autoencoder (aecfe-train-classifier)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (holds the new lab's cell store)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing bundle folders in --out")
    add_image_inputs(parser)
    parser.add_argument("--source-store", type=Path,
                        help="the bundle's training store (default: the path its provenance records)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=Path, metavar="CSV", help="labelled new-lab cells: image,class[,cell_index]")
    labels.add_argument("--shots", type=int_list, default=[], metavar="K,...",
                        help="measure: k labelled cells per class of the (labelled) new lab, one bundle per k")
    parser.add_argument("--shot-seeds", type=int_list, default=[0], metavar="S,...",
                        help="seeds of the shots' selection (each k scored per seed; bundles: the first seed's)")
    parser.add_argument("--epochs", type=nonnegative_int, default=10, help="further autoencoder epochs")
    parser.add_argument("--train-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="autoencoder trainer setting replacing the bundle's, e.g. lr=0.0001, batch_size=64")
    add_bundle_run_options(parser)
    parser.add_argument("--max-memory-gb", type=positive_float, default=2.0,
                        help="hold the training cells in memory up to this size, else stream them")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    from aecfe.adaptation import adapt_bundle

    args = build_parser().parse_args(argv)
    invoked = ["aecfe-adapt", *(sys.argv[1:] if argv is None else argv)]
    bundle, listing, device = start_bundle_run(args)
    report = adapt_bundle(bundle, listing, args.out, source_store=args.source_store, labels_file=args.labels,
                          shots=args.shots, seeds=args.shot_seeds, epochs=args.epochs,
                          trainer_options=dict(args.train_option), device=device,
                          batch_size=args.batch_size, encode_batch=args.encode_batch,
                          max_memory_gb=args.max_memory_gb, command=shlex.join(map(str, invoked)),
                          overwrite=args.overwrite, progress=not args.no_progress)
    if (args.out / "few_shot.md").exists():
        print((args.out / "few_shot.md").read_text(encoding="utf-8"))
    print(f"{report['new_lab_cells']} new-lab cells; labelled cells skipped: {report['labels_skipped'] or 'none'}; "
          f"wall time {json.dumps(report['wall_s'])}")
    print("bundles: " + ", ".join(report["bundles"].values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program(main))
