"""aecfe.measure: the one child-process measurement helper (comparison steps and benchmarks/)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from aecfe.measure import Measurement, in_fresh_process, peak_rss_mb, run_measured


def test_run_measured_returns_status_wall_and_the_childs_peak(tmp_path):
    log = tmp_path / "child.log"
    done = run_measured([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); "
                         "b = bytearray(120 * 2**20); sys.exit(3)"], log)
    assert isinstance(done, Measurement) and done.returncode == 3 and done.wall_s > 0
    assert done.peak_rss_mb > 120  # the child's 120 MiB, not this process's figure
    assert log.read_text().split() == ["out", "err"]


def test_in_fresh_process_runs_the_function_elsewhere_and_returns_its_json():
    assert in_fresh_process(os.getpid) != os.getpid()
    assert in_fresh_process(json.loads, '{"a": [1, 2]}') == {"a": [1, 2]}
    assert peak_rss_mb() > 0


def test_in_fresh_process_failure_names_the_function_and_shows_the_child_output():
    with pytest.raises(RuntimeError, match=r"(?s)json\.loads\('not json',\) failed \(exit 1\).*JSONDecodeError"):
        in_fresh_process(json.loads, "not json")


def test_a_program_run_as_a_script_can_measure_its_own_functions(tmp_path):
    """``python benchmarks/NAME.py``: the function's module is ``__main__``; the child imports the file by name."""
    program = tmp_path / "probe_program.py"
    program.write_text(textwrap.dedent("""
        from aecfe.measure import in_fresh_process

        def double(x):
            return {"value": 2 * x, "name": __name__}

        if __name__ == "__main__":
            print(in_fresh_process(double, 21))
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'value': 42, 'name': 'probe_program'}"
