"""Train a classifier head on a cell store's embedding and save it as a model bundle (with validation scores).

Usage::

    aecfe-train-classifier runs/cells.h5 --embedding ae --autoencoder-checkpoint runs/ae/checkpoint.pt \\
        --detector-checkpoint runs/det/last.pt --head rf --scheme five --out runs/bundle

The bundle (:mod:`aecfe.bundle`) holds the detector and autoencoder weights (or the CNN embedder), the fitted
head without pickle, the classes and label scheme, the preprocessing and the provenance; ``aecfe-predict``
applies it to new images. In-store validation scores (a held-out 20 % of each domain's images, grouped by the
image's content hash) are written beside it: ``<out>.validation.json`` / ``.md`` / ``_per_class.csv``.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from aecfe.cli import command, key_value, open_fraction, positive_int, run_program


def build_parser() -> argparse.ArgumentParser:
    from classifiers.heads import HEADS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("store", type=Path, help="cell store (HDF5) with labelled cells and the embedding")
    parser.add_argument("--embedding", required=True, help="embedding name in the store (e.g. ae, cnn, rcnn_roi)")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    parser.add_argument("--detector-checkpoint", type=Path, required=True,
                        help="the detector that made the store (checked against its provenance)")
    parser.add_argument("--autoencoder-checkpoint", type=Path,
                        help="the autoencoder that wrote the embedding (for an autoencoder embedding)")
    parser.add_argument("--cnn-weights", help="local weights file of a CNN embedding (default: the recorded ones)")
    parser.add_argument("--cnn-image-size", type=positive_int, default=None,
                        help="crop side of the CNN embedding (default: the one the store records)")
    parser.add_argument("--head", choices=sorted(HEADS), default="rf")
    parser.add_argument("--head-param", action="append", type=key_value, default=[], metavar="PARAM=VALUE",
                        help="head hyper-parameter (repeatable), e.g. n_estimators=200")
    parser.add_argument("--class-weight", choices=["balanced"], help="weight classes by n / (K * n_k)")
    parser.add_argument("--scheme", default="canonical", help="label scheme of the classes (e.g. five, six)")
    parser.add_argument("--label-dataset", default="canonical",
                        help="class map of the store's labels (canonical: they are canonical classes already)")
    parser.add_argument("--test-size", type=open_fraction, default=0.2, help="held-out fraction for validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    from aecfe.classifier_training import train_classifier, validation_markdown

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    invoked = ["aecfe-train-classifier", *(sys.argv[1:] if argv is None else argv)]
    scores = train_classifier(args.store, args.embedding, args.out, detector_checkpoint=args.detector_checkpoint,
                              head=args.head, head_params=dict(args.head_param),
                              class_weight=args.class_weight, scheme=args.scheme, label_dataset=args.label_dataset,
                              autoencoder_checkpoint=args.autoencoder_checkpoint, cnn_weights=args.cnn_weights,
                              cnn_image_size=args.cnn_image_size, seed=args.seed, test_size=args.test_size,
                              command=shlex.join(map(str, invoked)), overwrite=args.overwrite)
    print(validation_markdown(scores))
    print(f"bundle: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_program(main))
