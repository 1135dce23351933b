"""Every command-line program: a thin scripts/ wrapper, a console script, and a working --help."""
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import aecfe.cli

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(m.name for m in pkgutil.iter_modules(aecfe.cli.__path__) if not m.name.startswith("_"))


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_has_script_and_help(name, capsys):
    script = ROOT / "scripts" / f"{name}.py"
    assert script.exists(), f"scripts/{name}.py is missing"
    assert f"from aecfe.cli.{name} import main" in script.read_text()
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(f"aecfe.cli.{name}").main(["--help"])
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out


def test_module_entry_dispatches():
    done = subprocess.run([sys.executable, "-m", "aecfe.cli", "synthetic_data", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0 and "--n-per-domain" in done.stdout
    unknown = subprocess.run([sys.executable, "-m", "aecfe.cli", "nope"], capture_output=True, text=True, cwd=ROOT)
    assert unknown.returncode == 2 and "usage: python -m aecfe.cli" in unknown.stderr
