"""What a workload costs, measured in a child process: wall seconds and peak resident memory.

One helper for every measurement of the package: the comparison's steps (:mod:`aecfe.comparison.steps`, a command
line per step) and the speed probes in ``benchmarks/`` (a Python function per workload, :func:`in_fresh_process`)
both run their workload in a child process through :func:`run_measured`, so that allocator settings, thread
counts and peak memory belong to that workload alone.

Peak memory is the maximum resident set size (``ru_maxrss``, KiB on Linux, reported in MiB) of the child and of
its waited-for descendants, read from ``os.wait4``. Linux starts a forked child's peak at its parent's resident
size, so the measuring process should stay small: this module imports nothing heavy (no torch, numpy or pandas)
and nothing of this package.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence


class Measurement(NamedTuple):
    """A finished child process: its exit status, ``wall_s`` seconds from start to exit, ``peak_rss_mb`` MiB."""

    returncode: int
    wall_s: float
    peak_rss_mb: float


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (``getrusage(RUSAGE_SELF).ru_maxrss`` / 1024)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_measured(command: Sequence[str], log_path: str | Path, env: dict[str, str] | None = None) -> Measurement:
    """Run ``command`` (argv) with stdout and stderr to ``log_path``, stdin closed; wait for it and measure it."""
    with open(log_path, "w", encoding="utf-8") as log:
        start = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(process.returncode, wall, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


_CHILD = """\
import importlib, json, sys
module, name, arguments, result = sys.argv[1:5]
value = getattr(importlib.import_module(module), name)(*json.loads(arguments))
with open(result, "w", encoding="utf-8") as out:
    json.dump(value, out)
"""


def _importable_name(function: Callable) -> str:
    """The module name under which a child process can import ``function``: a program run as a script
    (``python benchmarks/NAME.py``, module ``__main__``) is imported by its file's stem, its folder being on
    the child's path (``sys.path[0]`` of the parent)."""
    name = function.__module__
    if name == "__main__":
        return Path(sys.modules["__main__"].__file__).stem
    return name


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a new Python process; its JSON-able return value.

    ``function`` must be a module-level function and ``args`` JSON-able (they travel as JSON). The child gets the
    parent's ``sys.path`` as ``PYTHONPATH``. Raises :class:`RuntimeError` with the end of the child's output when
    it fails.
    """
    module = _importable_name(function)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    with tempfile.TemporaryDirectory(prefix="aecfe-measure-") as folder:
        log, result = Path(folder) / "child.log", Path(folder) / "result.json"
        done = run_measured([sys.executable, "-c", _CHILD, module, function.__name__, json.dumps(args), str(result)],
                            log, env=env)
        if done.returncode:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"measured process {module}.{function.__name__}{tuple(args)} failed "
                               f"(exit {done.returncode}):\n{tail}")
        return json.loads(result.read_text(encoding="utf-8"))
