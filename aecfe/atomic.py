"""Atomic file replacement: write beside the target, then rename over it, so a crash never leaves half a file.

Imports nothing heavy (the comparison's step runner uses it in a process that must stay small).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield ``<path>.tmp`` to write; when the block finishes, rename it over ``path`` (``os.replace``)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    yield temporary
    os.replace(temporary, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8) through :func:`replacing`."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
