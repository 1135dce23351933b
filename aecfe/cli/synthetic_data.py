"""Write the synthetic labs to disk: single-cell class folders per lab and COCO fields for detector training.

Usage::

    python -m aecfe.cli synthetic_data --out data/ --n-per-domain 60 --fields-per-domain 20

Writes ``<out>/cls/<lab>/<class>/<image>.png`` and ``<out>/coco/<lab>/`` (``images/`` + ``annotations.json``) for the
labs of :func:`aecfe.synthetic.default_domains`, deterministic per ``--seed``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aecfe.synthetic import default_domains, write_class_folders, write_coco


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-per-domain", type=int, default=60, help="single-cell images per lab")
    parser.add_argument("--fields-per-domain", type=int, default=20, help="COCO fields per lab (0: none)")
    parser.add_argument("--field-size", type=int, default=256, help="side of the fields")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    domains = default_domains()
    write_class_folders(args.out / "cls", domains, args.n_per_domain, seed=args.seed)
    for domain in domains if args.fields_per_domain > 0 else ():
        write_coco(args.out / "coco", domain, args.fields_per_domain, seed=args.seed,
                   size=(args.field_size, args.field_size))
    logging.getLogger(__name__).info("synthetic labs written under %s", args.out)
    return 0
