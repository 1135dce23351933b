"""Write the ResNet-RF baseline's CNN features of every crop of a cell store as an embedding (resumable).

Usage::

    python -m aecfe.cli embed_cnn cells.h5 --backbone mobilenet_v2 --weights mobilenet_v2-b0353104.pth

``--weights``: a torchvision weight name (``DEFAULT``, needs internet or a filled ``TORCH_HOME``) or a local
state-dict file; without it the network is randomly initialised (seeded by ``--seed``).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from aecfe.cli import add_device
from aecfe.devices import resolve_device
from aecfe.errors import AecfeError
from aecfe.store import cnn_stage, write_embedding


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("store", type=Path, help="cell store with crops")
    parser.add_argument("--backbone", default="mobilenet_v2", help="classifiers.dg.backbones name")
    parser.add_argument("--weights", help="weight name or local state-dict file (default: random init)")
    parser.add_argument("--image-size", type=int, default=128, help="crops are resized to this side")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--name", default="cnn", help="embedding name")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random initialisation")
    add_device(parser)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    try:
        stage = cnn_stage(args.backbone, args.weights, args.image_size, args.batch_size, args.name,
                          device=resolve_device(args.device))
        written = write_embedding(args.store, stage, progress=not args.no_progress)
    except AecfeError as error:
        logging.getLogger(__name__).error("%s", error)
        return 2
    logging.getLogger(__name__).info("%s: %d cells embedded as %r", args.store, written, args.name)
    return 0
