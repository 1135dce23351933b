"""The import layers of aecfe/__init__.py and the README: every import (top-level or inside a function) of a
package module points to its own layer or a lower one, and nothing but a program imports ``aecfe.cli``.

Run as a script (``python tests/test_layers.py``) it prints every import that breaks the rule.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("aecfe", "detectors", "extractors", "classifiers")

BASE, MODELS, STORE, APPLICATION, PROGRAMS = 1, 2, 3, 4, 5
LAYER_NAMES = {BASE: "base", MODELS: "models", STORE: "store", APPLICATION: "application", PROGRAMS: "programs"}
LAYERS = {
    "aecfe": BASE,  # the package root (its __version__)
    "aecfe.errors": BASE, "aecfe.atomic": BASE, "aecfe.shapes": BASE, "aecfe.checkpoints": BASE,
    "aecfe.io": BASE, "aecfe.taxonomy": BASE, "aecfe.metrics": BASE, "aecfe.synthetic": BASE,
    "aecfe.torchvision_compat": BASE, "aecfe.splits": BASE, "aecfe.distributed": BASE, "aecfe.identity": BASE,
    "aecfe.devices": BASE, "aecfe.measure": BASE,
    "detectors": MODELS, "extractors": MODELS, "classifiers": MODELS,
    "aecfe.store": STORE,
    "aecfe.pipeline": APPLICATION, "aecfe.evaluation": APPLICATION, "aecfe.reporting": APPLICATION,
    "aecfe.autoencoding": APPLICATION, "aecfe.comparison": APPLICATION, "aecfe.plots": APPLICATION,
    "aecfe.demo": APPLICATION, "aecfe.dg_baselines": APPLICATION, "aecfe.bundle": APPLICATION,
    "aecfe.classifier_training": APPLICATION, "aecfe.prediction": APPLICATION, "aecfe.cell_figures": APPLICATION,
    "aecfe.export": APPLICATION, "aecfe.adaptation": APPLICATION, "aecfe.few_shot": APPLICATION,
    "aecfe.cli": PROGRAMS,
}


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (its longest listed prefix), None for a module outside our packages."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative imports resolved; ``from a import b`` gives
    ``a.b`` when ``a.b`` is a module of ours, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.append((node.lineno, candidate if _is_module(candidate) else base))
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations() -> list[str]:
    """Every import from a lower layer to a higher one, and every import of ``aecfe.cli`` outside it."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            importer = module_name(path)
            own = layer_of(importer)
            assert own is not None, f"{importer} has no layer: add it to LAYERS (and to the module maps)"
            for line, target in imported_modules(path):
                layer = layer_of(target)
                if layer is None:
                    continue
                where = f"{path.relative_to(ROOT)}:{line}: {importer} ({LAYER_NAMES[own]}) imports {target}"
                if layer > own:
                    found.append(f"{where} ({LAYER_NAMES[layer]})")
                elif layer == PROGRAMS and own != PROGRAMS:
                    found.append(f"{where} (a program)")
    return found


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    assert violations() == []


def test_nothing_outside_the_programs_imports_aecfe_cli():
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if module_name(path).startswith("aecfe.cli"):
                continue
            assert not [t for _, t in imported_modules(path) if t == "aecfe.cli" or t.startswith("aecfe.cli.")], path


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch):
    """The rule has teeth: a lazy import of the store from a model module and a relative one are found."""
    fake = tmp_path / "extractors"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from aecfe.store import CellStore\n")
    (tmp_path / "aecfe").mkdir()
    (tmp_path / "aecfe" / "__init__.py").write_text("")
    (tmp_path / "aecfe" / "store").mkdir()
    (tmp_path / "aecfe" / "store" / "__init__.py").write_text("")
    (tmp_path / "aecfe" / "errors.py").write_text("from .store import x\nimport aecfe.cli.demo\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("aecfe", "extractors"))
    found = violations()
    assert any("extractors.bad (models) imports aecfe.store (store)" in v for v in found)
    assert any("aecfe.errors (base) imports aecfe.store (store)" in v for v in found)
    assert any("imports aecfe.cli.demo (programs)" in v for v in found)


if __name__ == "__main__":
    print("\n".join(violations()) or "no import runs from a lower layer to a higher one")


def test_the_module_maps_name_every_layered_module():
    """aecfe/__init__.py's docstring and the README's table state the same layers as LAYERS."""
    import aecfe

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, layer in LAYERS.items():
        if name == "aecfe":
            continue
        assert f":mod:`{name}`" in aecfe.__doc__, name
        short = name.removeprefix("aecfe.")
        assert f"`{short}`" in readme or f"`{name}`" in readme, name
    for layer, title in LAYER_NAMES.items():
        assert f"{layer}. **{title}**" in aecfe.__doc__ and f"| {layer} {title} |" in readme
