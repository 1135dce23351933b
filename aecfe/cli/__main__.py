"""``python -m aecfe.cli NAME [ARGS...]`` runs ``aecfe.cli.NAME.main(ARGS)`` (the same as ``scripts/NAME.py``)."""
import importlib
import pkgutil
import sys

import aecfe.cli


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = sorted(m.name for m in pkgutil.iter_modules(aecfe.cli.__path__) if not m.name.startswith("_"))
    if not argv or argv[0] not in names:
        print(f"usage: python -m aecfe.cli {{{','.join(names)}}} [ARGS...]", file=sys.stderr)
        return 2
    return aecfe.cli.run_program(importlib.import_module(f"aecfe.cli.{argv[0]}").main, argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
