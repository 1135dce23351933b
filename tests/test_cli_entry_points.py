"""Every command-line program: a thin scripts/ wrapper, a console script, and a working --help; the speed probes
in benchmarks/ are programs too, but not installed."""
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import aecfe.cli

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(m.name for m in pkgutil.iter_modules(aecfe.cli.__path__) if not m.name.startswith("_"))
BENCHMARKS = sorted(path.stem for path in (ROOT / "benchmarks").glob("[!_]*.py"))


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_has_script_and_help(name, capsys):
    script = ROOT / "scripts" / f"{name}.py"
    assert script.exists(), f"scripts/{name}.py is missing"
    assert f"from aecfe.cli.{name} import main" in script.read_text()
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(f"aecfe.cli.{name}").main(["--help"])
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out


def test_installed_commands_are_the_programs_and_no_speed_probe():
    """setup.py installs aecfe-NAME for every aecfe/cli/NAME.py: the method comparison is aecfe-compare, the speed
    probes (formerly aecfe-benchmark-*) live in benchmarks/, which is not a package that setup.py installs."""
    from aecfe.cli import _entry

    assert "compare" in PROGRAMS and callable(_entry.compare)
    assert not [name for name in PROGRAMS if name.startswith("benchmark")]
    assert {"autoencoder_speed", "detector_speed", "dg_speed", "extraction_speed", "store_speed"} <= set(BENCHMARKS)
    assert '"benchmarks"' not in (ROOT / "setup.py").read_text() and not (ROOT / "benchmarks" / "__init__.py").exists()


def test_every_script_runs_an_existing_program():
    """scripts/benchmark.py, the comparison's former name, is kept as an alias of aecfe-compare."""
    for script in (ROOT / "scripts").glob("*.py"):
        names = re.findall(r"^from aecfe\.cli\.(\w+) import main$", script.read_text(), flags=re.M)
        assert len(names) == 1 and names[0] in PROGRAMS, script.name
    done = _run_script("benchmark", "--help")
    assert done.returncode == 0 and "--domains-root" in done.stdout


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_program_has_help_and_runs_as_a_script(name, capsys):
    text = (ROOT / "benchmarks" / f"{name}.py").read_text()
    assert 'if __name__ == "__main__":' in text and f"python benchmarks/{name}.py" in text
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(name).main(["--help"])
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out


def test_module_entry_dispatches():
    done = subprocess.run([sys.executable, "-m", "aecfe.cli", "synthetic_data", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0 and "--n-per-domain" in done.stdout
    unknown = subprocess.run([sys.executable, "-m", "aecfe.cli", "nope"], capture_output=True, text=True, cwd=ROOT)
    assert unknown.returncode == 2 and "usage: python -m aecfe.cli" in unknown.stderr


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_package_errors_are_one_line_and_exit_2_without_traceback(tmp_path):
    """train_autoencoder and train_detector used to print full tracebacks for aecfe's own errors."""
    for name, args in (("train_autoencoder", [str(tmp_path / "missing.h5"), "--out", str(tmp_path / "ae")]),
                       ("train_detector", [str(tmp_path / "missing.json"), "--out", str(tmp_path / "det")])):
        done = _run_script(name, *args)
        assert done.returncode == 2, (name, done.stderr)
        assert "Traceback" not in done.stderr and "missing." in done.stderr and "error:" in done.stderr


def test_run_program_and_console_entry_handle_aecfe_errors(capsys, caplog):
    from aecfe.cli import _entry, run_program
    from aecfe.errors import StoreError

    def main(argv):
        raise StoreError(f"run.h5: damaged ({argv})")

    assert run_program(main, ["x"], prog="aecfe-test") == 2
    said = capsys.readouterr().err + caplog.text  # stderr, or the log when logging is configured
    assert said.count("aecfe-test: error: run.h5: damaged (['x'])") == 1
    assert callable(_entry.verify_store) and _entry.verify_store([str(ROOT / "no_such_store.h5")]) == 1
    with pytest.raises(AttributeError):
        _entry.not_a_program


@pytest.mark.parametrize("argv", [["--max-cells", "0"], ["--lr", "-1"], ["--batch-size", "0"]])
def test_train_autoencoder_parser_rejects_bad_values(argv, capsys):
    from aecfe.cli.train_autoencoder import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["store.h5", "--out", "run", *argv])
    assert stop.value.code == 2 and argv[0] in capsys.readouterr().err


def test_dependency_bounds_cover_the_apis_used():
    """classifiers/heads.py imports sklearn.utils.validation.validate_data, new in scikit-learn 1.6."""
    text = (ROOT / "setup.py").read_text()
    assert '"scikit-learn>=1.6"' in text
    from sklearn.utils.validation import validate_data  # noqa: F401  the API the bound is for
