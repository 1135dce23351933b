"""aecfe.comparison.steps: measured child processes, records, resume, failures."""
import subprocess
import sys

import pytest

from aecfe.comparison.steps import Step, StepFailed, StepRecord, run_steps


def python_step(name, code, after=()):
    return Step(name, ("{python}", "-c", code), kind="test", method=name.split(".")[0], after=tuple(after))


def test_steps_run_once_and_resume(tmp_path):
    marker = tmp_path / "runs.txt"
    append = f"open({str(marker)!r}, 'a').write('x')"
    steps = [python_step("a", append), python_step("b", append, after=["a"])]
    records = run_steps(steps, tmp_path / "state", progress=False)
    assert list(records) == ["a", "b"] and marker.read_text() == "xx"
    assert records["a"].returncode == 0 and records["a"].wall_s > 0
    again = run_steps(steps, tmp_path / "state", progress=False)
    assert marker.read_text() == "xx"  # nothing re-run
    assert again["b"].wall_s == records["b"].wall_s


def test_peak_memory_is_the_childs(tmp_path):
    """Run from a small interpreter, as aecfe-compare does (a forked child starts at its parent's size)."""
    big = python_step("big", "import numpy as np; a = np.ones(200 * 2**20 // 8); print(a.sum())")
    small = python_step("small", "print(1)")
    runner = (f"from aecfe.comparison.steps import Step, run_steps; "
              f"run_steps([{big!r}, {small!r}], {str(tmp_path)!r}, progress=False)")
    subprocess.run([sys.executable, "-c", runner], check=True)
    records = {name: StepRecord.load(tmp_path / f"{name}.json") for name in ("big", "small")}
    assert records["big"].peak_rss_mb > records["small"].peak_rss_mb + 150
    assert (tmp_path / "big.log").read_text().strip().startswith("26214400")


def test_failure_skips_dependents_or_raises(tmp_path):
    steps = [python_step("bad", "raise SystemExit(3)"), python_step("after_bad", "pass", after=["bad"]),
             python_step("free", "pass")]
    records = run_steps(steps, tmp_path / "keep", progress=False)
    assert list(records) == ["free"]
    with pytest.raises(StepFailed, match=r"step bad failed \(exit 3\).*bad\.log"):
        run_steps(steps, tmp_path / "strict", keep_going=False, progress=False)


def test_repeated_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="repeat"):
        run_steps([python_step("a", "pass"), python_step("a", "pass")], tmp_path, progress=False)
