"""Console-script targets: ``aecfe-NAME = aecfe.cli._entry:NAME`` (setup.py) runs ``aecfe.cli.NAME.main``
through :func:`aecfe.cli.run_program`, so every installed program handles the package's errors the same way."""
from __future__ import annotations

import importlib
import pkgutil

import aecfe.cli


def __getattr__(name: str):
    """The console-script function of program ``name`` (a module of :mod:`aecfe.cli`)."""
    programs = {m.name for m in pkgutil.iter_modules(aecfe.cli.__path__) if not m.name.startswith("_")}
    if name not in programs:
        raise AttributeError(f"no aecfe program {name!r}")

    def entry(argv=None) -> int:
        main = importlib.import_module(f"aecfe.cli.{name}").main
        return aecfe.cli.run_program(main, argv)

    entry.__name__ = name
    return entry
