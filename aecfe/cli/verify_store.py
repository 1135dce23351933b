"""Check cell stores for damage: read every chunk of every dataset and cross-check the bookkeeping.

Usage::

    aecfe-verify-store runs/cells.h5 [more.h5 ...] [--json report.json]

Each chunk is decoded as a reader would (HDF5 verifies each chunk's fletcher32 checksum as it reads it), so
flipped bytes in a checksummed dataset are found; the per-image and per-cell bookkeeping (image ids, cells
per image, statuses, content hashes, embedding progress) is cross-checked. One line per problem names the
file, the dataset and the rows. Datasets HDF5 cannot checksum (the variable-length string columns) are
listed as unchecked: damage there shows only when it breaks decoding. Exit status: 0 every store is
intact, 1 some store is damaged, 2 a usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aecfe.cli import command
from aecfe.store import verify_store


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", type=Path, help="HDF5 cell stores to check")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="print only the damaged stores' problems")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reports = [verify_store(path) for path in args.stores]
    for report in reports:
        for problem in report.problems:
            print(f"{report.path}: {problem}")
        if not args.quiet:
            verdict = "ok" if report.ok else f"DAMAGED ({len(report.problems)} problems)"
            print(f"{report.path}: {verdict}: {report.chunks_read} chunks read ({report.bytes_read / 1e6:.1f} MB "
                  f"decoded); without checksum: {', '.join(report.unchecked) or 'none'}",
                  file=sys.stdout if report.ok else sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n", encoding="utf-8")
    return 0 if all(report.ok for report in reports) else 1
