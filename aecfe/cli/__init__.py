"""Command-line programs: each ``aecfe/cli/NAME.py`` has ``main(argv=None) -> int`` and is installed as
``aecfe-NAME`` (underscores as dashes); ``scripts/NAME.py`` and ``python -m aecfe.cli NAME`` run the same.

Every way of starting a program goes through :func:`run_program`, the one place where the package's own
errors (:class:`aecfe.errors.AecfeError`: bad input, a damaged store, a bad checkpoint) become one clear line
on stderr and exit status 2, without a traceback. Argument values are checked by the parser with the types
below (``--batch-size 0`` is a usage error, exit 2, naming the option). Every ``KEY=VALUE`` override option of
every program (``--hparam``, ``--alignment-option``, ``--maskrcnn-option``) reads its value with :func:`key_value`.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

from aecfe.errors import AecfeError

EXIT_ERROR = 2
"""Exit status of a usage error (argparse's) and of the package's own errors."""
EXIT_NOTHING_PROCESSED = 1
"""Exit status of a run that finished but could process none of its inputs."""


def program_name(main: Callable) -> str:
    """``aecfe-extract-features`` for ``aecfe.cli.extract_features.main``."""
    return "aecfe-" + main.__module__.rsplit(".", 1)[-1].replace("_", "-")


def run_program(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None,
                prog: str | None = None) -> int:
    """Run ``main(argv)`` as a command and return its exit status.

    An :class:`~aecfe.errors.AecfeError` prints ``<prog>: error: <message>`` on stderr (the message names the
    file and the problem; through logging when the program configured it, so it lands where its log goes)
    and returns 2; Ctrl-C prints ``<prog>: interrupted`` and returns 130. Anything else
    is a bug and keeps its traceback.
    """
    prog = prog or program_name(main)
    try:
        return int(main(None if argv is None else list(argv)) or 0)
    except AecfeError as err:
        _say(f"{prog}: error: {err}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def command(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Decorator: ``main(argv)`` returns :func:`run_program`'s exit status instead of raising the package's
    errors, for programs whose ``main`` is also called from Python (tests, other programs). Entry points wrap
    every program with :func:`run_program` anyway; a second wrap changes nothing."""
    @functools.wraps(main)
    def wrapped(argv: Sequence[str] | None = None) -> int:
        return run_program(main, argv)

    return wrapped


@contextlib.contextmanager
def log_to_file(path: Path, level: str = "INFO") -> Iterator[None]:
    """Console logging at ``level`` (unless the root logger has handlers already) and, while the block runs,
    every record also appended to ``path`` (its folder created); the file handler is removed afterwards."""
    form = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=level, format=form)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(form))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _say(line: str) -> None:
    """One line to the program's log when logging is configured, else to stderr."""
    if logging.getLogger().handlers:
        logging.getLogger("aecfe.cli").error("%s", line)
    else:
        print(line, file=sys.stderr)


def _number(kind: type, text: str, check: Callable[[float], bool], wanted: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value) or not check(value):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, lambda v: v >= 1, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, lambda v: v > 0, "a number > 0")


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(float, text, lambda v: v >= 0, "a number >= 0")


def probability(text: str) -> float:
    """argparse type: a number in [0, 1] (a score threshold, a probability)."""
    return _number(float, text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def open_fraction(text: str) -> float:
    """argparse type: a number in (0, 1) (a test fraction)."""
    return _number(float, text, lambda v: 0 < v < 1, "a number in (0, 1)")


def int_list(text: str) -> list[int]:
    """argparse type: comma- (or space-) separated integers, ``"0,1,2"`` -> ``[0, 1, 2]``."""
    try:
        return [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def key_value(text: str) -> tuple[str, object]:
    """argparse type of every ``KEY=VALUE`` override: ``(KEY, VALUE)`` with VALUE read as JSON when it parses
    (numbers, ``true``/``false``/``null``, ``[lists]``, ``{objects}``), else kept as the string.

    >>> key_value("bandwidths=[1, 2]"), key_value("pairing=all"), key_value("BoDA.nu=0.5")
    (('bandwidths', [1, 2]), ('pairing', 'all'), ('BoDA.nu', 0.5))
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _named_dir(text: str) -> tuple[str | None, Path]:
    name, sep, path = text.partition("=")
    return (name, Path(path)) if sep and name and path else (None, Path(text))


def named_path(text: str) -> tuple[str, Path]:
    """argparse type of ``NAME=PATH`` inputs (:func:`aecfe.pipeline.parse_named_path`): ``(NAME, PATH)``."""
    from aecfe.errors import InputError
    from aecfe.pipeline import parse_named_path

    try:
        return parse_named_path(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_image_inputs(parser: argparse.ArgumentParser) -> None:
    """The image inputs of the programs that take new images (``aecfe-predict``, ``aecfe-adapt``), repeatable and
    combinable; :func:`image_inputs` turns them into :func:`aecfe.prediction.collect_inputs`' arguments."""
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


def image_inputs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`aecfe.prediction.collect_inputs` from :func:`add_image_inputs`' options."""
    return {"class_folders": args.class_folders, "domains": args.domain, "coco": args.coco, "files": args.files,
            "folders": args.images, "fields": args.fields, "allow_outside_paths": args.allow_outside_paths}


def add_device(parser, help_suffix: str = "") -> None:
    """``--device``: cpu, cuda, cuda:N, mps; default (None) the GPU if present, else the CPU
    (:func:`aecfe.devices.resolve_device`, which the program calls with the value)."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the GPU if present, else the CPU)"
                        + help_suffix)


def add_bundle_run_options(parser: argparse.ArgumentParser) -> None:
    """The run options of the programs that apply a bundle to new images (``aecfe-predict``, ``aecfe-adapt``):
    ``--device``, ``--batch-size`` (images per detector call), ``--encode-batch``, ``--threads``,
    ``--no-progress``; :func:`start_bundle_run` applies them."""
    add_device(parser)
    parser.add_argument("--batch-size", type=positive_int, default=4, help="images per detector call")
    parser.add_argument("--encode-batch", type=positive_int, default=256, help="cells per embedder call")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")


def start_bundle_run(args: argparse.Namespace):
    """Logging and ``--threads`` set up; returns ``(bundle, image listing, device)`` of
    :func:`aecfe.bundle.load_bundle`, :func:`aecfe.prediction.collect_inputs` and
    :func:`aecfe.devices.resolve_device`."""
    from aecfe.bundle import load_bundle
    from aecfe.devices import resolve_device
    from aecfe.prediction import collect_inputs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return load_bundle(args.bundle), collect_inputs(**image_inputs(args)), resolve_device(args.device)
