"""Resumable, measured steps: each step is a command line run in its own child process.

A step's record ``<state_dir>/<name>.json`` is written only when its command exits 0; a step with a record is
skipped on the next run (``resume``). The record holds the command, the wall time and the peak resident memory
of the child and its descendants (:func:`aecfe.measure.run_measured`), so the cost table compares methods run one
at a time on the same machine. Linux starts a forked child's peak at its parent's resident size, so the process
that runs the steps must stay small (``aecfe-compare`` imports no torch, pandas or scikit-learn before it runs
them): its size is the floor of every figure. The child's output goes to
``<state_dir>/<name>.log``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from aecfe.atomic import write_text_atomic
from aecfe.errors import AecfeError
from aecfe.measure import run_measured

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of the comparison.

    Attributes:
        name: unique, file-name safe (``"ae_mmd.train"``). command: argv; ``"{python}"`` stands for this
            interpreter. kind: what the cost table calls it (``"extraction"``, ``"training"``,
            ``"evaluation"``, ...). method: the method the cost is charged to. after: names of steps that must
            have finished first.
    """

    name: str
    command: tuple[str, ...]
    kind: str
    method: str
    after: tuple[str, ...] = ()


@dataclasses.dataclass
class StepRecord:
    """What a finished step cost: ``wall_s`` seconds and ``peak_rss_mb`` (MiB) of its process tree."""

    name: str
    kind: str
    method: str
    command: list[str]
    wall_s: float
    peak_rss_mb: float
    returncode: int

    @classmethod
    def load(cls, path: Path) -> "StepRecord":
        return cls(**json.loads(path.read_text(encoding="utf-8")))


class StepFailed(AecfeError):
    """A step's command exited non-zero (the message names the step and its log)."""


def run_steps(steps: Sequence[Step], state_dir: str | Path, *, keep_going: bool = True,
              progress: bool = True) -> dict[str, StepRecord]:
    """Run every step not finished before, in order; returns the records of all finished steps.

    A failing step is logged (with its log file) and, with ``keep_going``, the steps after it that do not
    depend on it still run; without it :class:`StepFailed` is raised. Steps whose ``after`` did not finish are
    skipped with a warning.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"step names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
    records = {path.stem: StepRecord.load(path) for path in state_dir.glob("*.json")}
    todo = [step for step in steps if step.name not in records]
    logger.info("%d steps, %d finished earlier, %d to run", len(steps), len(steps) - len(todo), len(todo))
    bar = tqdm(todo, desc="comparison", unit="step", disable=not progress)
    for step in bar:
        missing = [name for name in step.after if name not in records]
        if missing:
            logger.warning("skipping %s: %s did not finish", step.name, ", ".join(missing))
            continue
        bar.set_postfix_str(step.name)
        command = [sys.executable if part == "{python}" else part for part in step.command]
        log_path = state_dir / f"{step.name}.log"
        logger.info("running %s: %s", step.name, " ".join(command))
        returncode, wall, peak = run_measured(command, log_path)
        if returncode != 0:
            message = f"step {step.name} failed (exit {returncode}); see {log_path}"
            if not keep_going:
                raise StepFailed(message)
            logger.error(message)
            continue
        record = StepRecord(step.name, step.kind, step.method, command, round(wall, 3), round(peak, 1), returncode)
        write_text_atomic(state_dir / f"{step.name}.json", json.dumps(dataclasses.asdict(record), indent=1))
        records[step.name] = record
        logger.info("finished %s in %.1f s, peak %.0f MiB", step.name, wall, peak)
    return {name: records[name] for name in names if name in records}
