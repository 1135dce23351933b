"""Class maps: built-in datasets and schemes, matching rules, errors, user class-map files."""
import doctest
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from aecfe import taxonomy
from aecfe.errors import InputError
from aecfe.taxonomy import (CANONICAL_CLASSES, available_datasets, available_schemes, get_scheme,
                            load_class_map_file, load_taxonomy, normalize_label, register_class_map,
                            resolve_dataset)

EXAMPLE_FILE = Path(__file__).parent / "data" / "example_class_map.yaml"

AECFE13 = ("basophil", "eosinophil", "erythroblast", "myeloblast", "promyelocyte", "myelocyte",
           "metamyelocyte", "neutrophil_banded", "neutrophil_segmented", "monocyte",
           "lymphocyte_typical", "lymphocyte_atypical", "smudge_cell")


@pytest.fixture
def isolated_registry(monkeypatch):
    """Lets a test register class maps without leaking them into other tests."""
    registry = taxonomy._REGISTRY
    registry.ensure_loaded()
    for name in ("class_maps", "names", "taxonomies"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    return registry


def test_builtin_datasets_and_schemes():
    assert set(available_datasets()) >= {"matek19", "int20", "acevedo20", "zheng_jtsc", "bccd",
                                         "lisc", "raabin_wbc", "canonical"}
    assert available_schemes() == ("canonical", "five", "six", "aecfe13")
    assert get_scheme("canonical").classes == CANONICAL_CLASSES
    assert get_scheme("aecfe13").classes == AECFE13
    assert get_scheme("five").classes == ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
    assert set(get_scheme("six").classes) == set(get_scheme("five").classes) | {"erythroblast"}


@pytest.mark.parametrize("alias, name", [
    ("pbc_barcelona", "acevedo20"), ("PBC", "acevedo20"), ("Acevedo-20", "acevedo20"),
    ("bccd_crops", "bccd"), ("Raabin-WBC", "raabin_wbc"), ("zheng", "zheng_jtsc"),
    ("synthetic", "canonical"), ("Matek 2019", "matek19"),
])
def test_dataset_aliases(alias, name):
    assert resolve_dataset(alias) == name


def test_unknown_dataset_and_scheme_are_named():
    with pytest.raises(InputError, match="no_such_lab.*available: acevedo20"):
        load_taxonomy("no_such_lab")
    assert resolve_dataset("no_such_lab", missing_ok=True) is None
    with pytest.raises(InputError, match="'seven'.*canonical, five, six, aecfe13"):
        load_taxonomy("matek19", "seven")


def test_normalize_label_ignores_case_and_separators():
    assert normalize_label("  Neutrophil   banded ") == "neutrophil_banded"
    assert normalize_label("NEUTROPHIL-BANDED") == normalize_label("neutrophil__banded")
    assert normalize_label("neutrophil / BNE") == "neutrophil/bne"
    assert normalize_label(3) == "3"
    with pytest.raises(InputError):
        normalize_label(None)
    with pytest.raises(InputError):
        normalize_label(True)


@pytest.mark.parametrize("code, target", [
    ("BAS", "basophil"), ("EBO", "erythroblast"), ("EOS", "eosinophil"), ("KSC", "smudge_cell"),
    ("LYA", "lymphocyte_atypical"), ("LYT", "lymphocyte_typical"), ("MMZ", "metamyelocyte"),
    ("MOB", "monocyte"), ("MON", "monocyte"), ("MYB", "myelocyte"), ("MYO", "myeloblast"),
    ("NGB", "neutrophil_banded"), ("NGS", "neutrophil_segmented"), ("PMO", "promyelocyte"),
    ("PMB", None),
])
def test_matek_aecfe13_follows_reference_code(code, target):
    assert load_taxonomy("matek19", "aecfe13").map([code])[0] == target


@pytest.mark.parametrize("code, target", [
    ("01-NORMO", "erythroblast"), ("05-MONO", "monocyte"), ("08-LYMPH-neo", "lymphocyte_atypical"),
    ("12-LYMPH-reaktiv", "lymphocyte_atypical"), ("09-BASO", "basophil"), ("10-EOS", "eosinophil"),
    ("11-STAB", "neutrophil_banded"), ("13-MYBL", "myeloblast"), ("14-LYMPH-typ", "lymphocyte_typical"),
    ("15-SEG", "neutrophil_segmented"), ("17-Kernschatten", "smudge_cell"), ("18-PMYEL", "promyelocyte"),
    ("19-MYEL", "myelocyte"), ("20-Meta", "metamyelocyte"), ("04-LGL", None), ("16-PLZ", None),
    ("21-Haarzelle", None), ("22-Atyp-PMYEL", None),
])
def test_int20_aecfe13_follows_reference_code(code, target):
    assert load_taxonomy("int20", "aecfe13").map([code])[0] == target


def test_acevedo_aecfe13_uses_file_codes_and_refuses_mixed_folders():
    tax = load_taxonomy("pbc_barcelona", "aecfe13")
    labels = ["basophil/BA", "eosinophil", "erythroblast/ERB", "ig/PMY", "ig/MY", "immature_granulocyte/MMY",
              "lymphocyte/LY", "monocyte/MO", "neutrophil/BNE", "neutrophil/SNE",
              "ig/IG", "neutrophil/NEUTROPHIL", "platelet/PLATELET"]
    assert tax.map(labels).tolist() == [
        "basophil", "eosinophil", "erythroblast", "promyelocyte", "myelocyte", "metamyelocyte",
        "lymphocyte_typical", "monocyte", "neutrophil_banded", "neutrophil_segmented", None, None, None]
    with pytest.raises(InputError, match="(?s)'neutrophil'.*'ig'.*label_from=\"folder/prefix\""):
        tax.map(["neutrophil", "ig", "basophil"])


def test_map_lists_every_unknown_label_with_counts():
    tax = load_taxonomy("bccd", "canonical")
    with pytest.raises(InputError) as info:
        tax.map(["Neutrophil", "Platelet", "RBC", "Platelet", "NEUTROPHIL, EOSINOPHIL"])
    message = str(info.value)
    assert "'bccd'" in message and "'Platelet' (x2)" in message and "'RBC'" in message
    assert "'NEUTROPHIL, EOSINOPHIL'" in message and "3 unknown" in message


def test_matching_is_case_and_separator_tolerant():
    assert load_taxonomy("int20", "five").map(["08_lymph_NEO", " 15 seg ", "11-stab"]).tolist() == [
        "lymphocyte", "neutrophil", "neutrophil"]
    assert load_taxonomy("raabin", "canonical").map(["basophil", "EOSINOPHIL"]).tolist() == [
        "basophil", "eosinophil"]
    assert load_taxonomy("lisc").map(["baso", "EOSI", "Lymp", "mono", "neut"]).tolist() == [
        "basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def test_drops_keep_mask_and_index():
    tax = load_taxonomy("matek19", "five")
    labels = ["NGS", "LYA", "EBO", "MOB", "BAS"]
    assert tax.map(labels).tolist() == ["neutrophil", "lymphocyte", None, None, "basophil"]
    assert tax.keep_mask(labels).tolist() == [True, True, False, False, True]
    assert tax.to_index(labels).tolist() == [0, 1, -1, -1, 4]
    assert load_taxonomy("matek19", "six").map(["EBO"])[0] == "erythroblast"
    assert load_taxonomy("lisc").map(["mixt"])[0] is None
    assert tax.map([]).shape == (0,)


def test_zheng_numeric_labels():
    tax = load_taxonomy("zheng_jtsc", "five")
    assert tax.map([1, "2", 3, "4", 5]).tolist() == ["neutrophil", "lymphocyte", "monocyte", "eosinophil",
                                                     "basophil"]


def test_canonical_conversions_are_complete():
    for scheme in available_schemes():
        tax = load_taxonomy("canonical", scheme)
        mapped = tax.map(CANONICAL_CLASSES)
        assert all(m is None or m in tax.classes for m in mapped)
        for cls in set(tax.classes) & set(CANONICAL_CLASSES):  # a shared class maps to itself
            assert tax.map([cls])[0] == cls


def test_every_builtin_label_maps_into_its_scheme():
    for dataset in available_datasets():
        for scheme in available_schemes():
            tax = load_taxonomy(dataset, scheme)
            index = tax.to_index(tax.labels)
            assert np.all((index >= -1) & (index < len(tax.classes))), tax.name


def test_approximate_conversions_are_flagged(caplog):
    taxonomy._REGISTRY.taxonomies.pop(("raabin_wbc", "aecfe13"), None)
    with caplog.at_level(logging.WARNING, logger="aecfe.taxonomy"):
        tax = load_taxonomy("raabin_wbc", "aecfe13")
    assert tax.map(["Neutrophil", "Lymphocyte", "Monocyte"]).tolist() == [
        "neutrophil_segmented", "lymphocyte_typical", "monocyte"]
    assert set(tax.approximate_labels) == {"Neutrophil", "Lymphocyte"}
    assert "approximate" in caplog.text and "raabin_wbc/aecfe13" in caplog.text
    assert load_taxonomy("matek19", "aecfe13").approximate_labels == ()


def test_module_docstring_examples():
    assert doctest.testmod(taxonomy).failed == 0


def test_example_class_map_file_registers(isolated_registry):
    class_map = register_class_map(EXAMPLE_FILE)
    assert class_map.name == "example_lab" and "example_lab" in available_datasets()
    tax13 = load_taxonomy("Example-Lab-2024", "aecfe13")
    assert tax13.map(["band neutrophil", "smudge", "NRBC", "unclear"]).tolist() == [
        "neutrophil_banded", "smudge_cell", "erythroblast", None]
    assert load_taxonomy("example_lab", "five").map(["Band neutrophil", "Smudge"]).tolist() == [
        "neutrophil", None]
    with pytest.raises(InputError, match="already registered"):
        register_class_map(EXAMPLE_FILE)
    register_class_map(EXAMPLE_FILE, replace=True)


def test_json_class_map_and_name_clash(tmp_path, isolated_registry):
    path = tmp_path / "lab.json"
    path.write_text(json.dumps({"dataset": "json_lab", "aliases": ["pbc"], "labels": {"N": "neutrophil"}}))
    with pytest.raises(InputError, match="'pbc' already belongs to class map 'acevedo20'"):
        register_class_map(path)
    path.write_text(json.dumps({"dataset": "json_lab", "labels": {"N": "neutrophil", "X": None}}))
    register_class_map(path)
    assert load_taxonomy("json_lab").map(["n", "x"]).tolist() == ["neutrophil", None]


@pytest.mark.parametrize("text, message", [
    ("dataset: lab\nlabels: {Neu: neutrophill}\n", "'neutrophill'"),
    ("dataset: lab\nlabels: {yes: neutrophil}\n", "quote it"),
    ("dataset: lab\nlabel: {Neu: neutrophil}\n", r"unknown key\(s\) \['label'\]"),
    ("dataset: lab\nlabels: {Neu Band: neutrophil, neu-band: lymphocyte}\n", "match each other"),
    ("dataset: lab\nlabels: {Neu: neutrophil}\nschemes: {aecfe13: {labels: {Neu: neutrophil}}}\n",
     "'neutrophil', which is neither"),
    ("dataset: lab\nlabels: {Neu: neutrophil}\nschemes: {nine: {labels: {Neu: neutrophil}}}\n",
     "schemes.nine"),
    ("labels: {Neu: neutrophil}\n", "`dataset`"),
    ("dataset: lab\nlabels: [Neu]\n", "non-empty mapping"),
    ("dataset: lab\nlabels: {Neu: neutrophil\n", "not valid YAML"),
])
def test_bad_class_map_files_are_explained(tmp_path, text, message):
    path = tmp_path / "bad_map.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_class_map_file(path)
    assert "bad_map.yaml" in str(info.value)


def test_class_map_file_suffix_and_existence(tmp_path):
    with pytest.raises(InputError, match=r"\.yaml, \.yml or \.json"):
        load_class_map_file(tmp_path / "map.txt")
    with pytest.raises(InputError, match="cannot read"):
        load_class_map_file(tmp_path / "absent.yaml")
