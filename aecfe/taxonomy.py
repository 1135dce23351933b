"""Class taxonomies: each dataset's published labels -> the canonical classes -> a label scheme.

Every dataset has a *class map* (original label -> canonical class); every *scheme* (an output
class space: ``canonical``, ``five``, ``six``, ``aecfe13``) says how each canonical class converts
into it. A :class:`Taxonomy` is the composition for one (dataset, scheme) pair::

    >>> tax = load_taxonomy("matek19", "five")
    >>> tax.map(["NGS", "LYA", "EBO"])          # EBO (erythroblast) has no place in "five"
    array(['neutrophil', 'lymphocyte', None], dtype=object)
    >>> tax.keep_mask(["NGS", "LYA", "EBO"]).tolist()
    [True, True, False]
    >>> tax.to_index(["NGS", "EBO"]).tolist()   # index into tax.classes, -1 = dropped
    [0, -1]

Label matching ignores case, surrounding blanks and the difference between runs of spaces,
underscores and hyphens ("Neutrophil banded" == "neutrophil_banded" == "NEUTROPHIL-BANDED").
A label the map does not know raises :class:`~aecfe.errors.InputError` naming the dataset and
every unknown label; a label mapped to ``drop`` becomes ``None`` (left out under that scheme).

All maps are data, not code: ``aecfe/taxonomies/schemes.yaml`` holds the schemes and the
canonical -> scheme conversions, and one YAML file per dataset holds its class map. Built in:
matek19, int20, acevedo20 (alias pbc_barcelona), zheng_jtsc, bccd (alias bccd_crops), lisc,
raabin_wbc and canonical (alias synthetic: canonical names map to themselves).

Class-map file format (YAML or JSON; add one with :func:`register_class_map`)
---------------------------------------------------------------------------------
::

    dataset: my_lab                 # required; the name load_taxonomy() takes
    aliases: [my_lab_2024]          # optional; other names (e.g. domain folder names)
    description: Lab X, Wright stain, 2024.   # optional free text
    labels:                         # required; original label -> canonical class or drop
      Neutrophil: neutrophil
      Lymphocyte: lymphocyte
      Smudge: other
      Unclear: drop                 # `drop` (or null): never used under any scheme
    schemes:                        # optional; per-scheme labels that bypass the canonical class
      aecfe13:
        labels:                     # original label -> class of that scheme, or drop
          Neutrophil band: neutrophil_banded
        exclusive: false            # true: only these labels are valid under this scheme
        hint: free text appended to unknown-label errors under this scheme

Quote labels YAML would read as numbers or booleans ("1", "yes", "NO"). Under a scheme other
than ``canonical`` a label converts through its canonical class (``schemes.yaml``), unless the
file's ``schemes`` section lists it. Conversions ``schemes.yaml`` marks as *approximate* (e.g.
canonical neutrophil -> aecfe13 neutrophil_segmented) are logged as a warning when a taxonomy
uses them and listed in :attr:`Taxonomy.approximate_labels`.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import yaml

from aecfe.errors import InputError

logger = logging.getLogger(__name__)

CANONICAL = "canonical"
CANONICAL_CLASSES: tuple[str, ...] = (
    "neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil",
    "erythroblast", "immature_granulocyte", "platelet", "blast", "other",
)
DROP = "drop"
"""The target a class-map file writes for a label left out (``map`` returns ``None`` for it)."""

_PACKAGE_DIR = "taxonomies"
_SCHEMES_FILE = "schemes.yaml"
_CLASS_MAP_KEYS = {"dataset", "aliases", "description", "labels", "schemes"}
_OVERRIDE_KEYS = {"labels", "exclusive", "hint"}
_SCHEME_KEYS = {"description", "classes", "from_canonical", "approximate"}
_SEPARATOR_RUNS = re.compile(r"[\s_\-]+")
_SLASH = re.compile(r"\s*/\s*")


def normalize_label(label: str | int) -> str:
    """The matching key of a label: lower case, blanks/underscores/hyphens -> one "_", trimmed.

    Integers (e.g. Zheng's numeric class labels) are matched through their decimal text.
    """
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (str, int, np.integer)):
        raise InputError(f"label {label!r} is a {type(label).__name__}, expected a string")
    text = _SLASH.sub("/", str(label).strip().lower())
    return _SEPARATOR_RUNS.sub("_", text).strip("_")


@dataclass(frozen=True)
class Scheme:
    """An output class space: ``classes`` in index order and the canonical -> class conversion."""

    name: str
    classes: tuple[str, ...]
    from_canonical: Mapping[str, str | None]
    approximate: frozenset[str] = frozenset()
    description: str = ""


@dataclass(frozen=True)
class SchemeOverride:
    """A dataset's own labels for one scheme (``labels``: original label -> scheme class or None)."""

    labels: Mapping[str, str | None]
    exclusive: bool = False
    hint: str = ""


@dataclass(frozen=True)
class ClassMap:
    """One dataset's class map as read from its file (labels: original -> canonical or None)."""

    name: str
    labels: Mapping[str, str | None]
    aliases: tuple[str, ...] = ()
    description: str = ""
    schemes: Mapping[str, SchemeOverride] = field(default_factory=dict)
    source: str = ""


class Taxonomy:
    """Maps one dataset's original labels to the classes of one scheme.

    Attributes:
        dataset: the class map's name (e.g. ``"acevedo20"``).
        scheme: the scheme's name (e.g. ``"five"``).
        classes: the scheme's classes in index order.
        labels: the original labels this taxonomy knows, as written in the class-map files.
        approximate_labels: original labels whose class comes from an approximate conversion.
    """

    def __init__(self, dataset: str, scheme: str, classes: Iterable[str],
                 targets: Mapping[str, str | None], *, approximate_labels: Iterable[str] = (),
                 hint: str = ""):
        """``targets``: original label -> class of ``classes`` or None (dropped)."""
        self.dataset = dataset
        self.scheme = scheme
        self.classes = tuple(classes)
        self._index = {name: i for i, name in enumerate(self.classes)}
        self._lookup: dict[str, str | None] = {}
        display: dict[str, str] = {}
        for label, target in targets.items():
            if target is not None and target not in self._index:
                raise InputError(f"taxonomy {dataset}/{scheme}: label {label!r} maps to {target!r}, "
                                 f"which is not a class of scheme {scheme!r} {self.classes}")
            key = normalize_label(label)
            if key in self._lookup and self._lookup[key] != target:
                raise InputError(f"taxonomy {dataset}/{scheme}: labels {display[key]!r} and {label!r} "
                                 f"match each other but map to {self._lookup[key]!r} and {target!r}")
            self._lookup[key] = target
            display.setdefault(key, str(label))
        self.labels = tuple(display.values())
        self.approximate_labels = tuple(approximate_labels)
        self.hint = hint

    @property
    def name(self) -> str:
        """``"<dataset>/<scheme>"``."""
        return f"{self.dataset}/{self.scheme}"

    def __repr__(self) -> str:
        return f"Taxonomy({self.name!r}, {len(self.labels)} labels -> {len(self.classes)} classes)"

    def __contains__(self, label: object) -> bool:
        try:
            return normalize_label(label) in self._lookup  # type: ignore[arg-type]
        except InputError:
            return False

    def map(self, labels: Iterable[str | int]) -> np.ndarray:
        """Original labels (N,) -> object array (N,) of class names, ``None`` where dropped.

        Raises InputError listing every unknown label (with counts) and the dataset.
        """
        labels = list(labels)
        key_of = {label: normalize_label(label) for label in set(labels)}  # once per distinct label
        keys = [key_of[label] for label in labels]
        unknown = Counter(str(label) for label, key in zip(labels, keys) if key not in self._lookup)
        if unknown:
            listed = ", ".join(f"{label!r} (x{n})" if n > 1 else repr(label)
                               for label, n in unknown.items())
            message = (f"dataset {self.dataset!r}, scheme {self.scheme!r}: {len(unknown)} unknown "
                       f"label(s): {listed}. Known labels: {', '.join(self.labels)}.")
            if self.hint:
                message += f" Hint: {self.hint}."
            raise InputError(message + " Add them with aecfe.taxonomy.register_class_map(<file>).")
        mapped = np.empty(len(keys), dtype=object)
        mapped[:] = [self._lookup[key] for key in keys]
        return mapped

    def keep_mask(self, labels: Iterable[str | int]) -> np.ndarray:
        """Bool (N,): True where the label maps to a class, False where it is dropped."""
        return np.array([target is not None for target in self.map(labels)], dtype=bool)

    def to_index(self, labels: Iterable[str | int]) -> np.ndarray:
        """Int64 (N,): index into :attr:`classes`, -1 where the label is dropped."""
        return np.array([-1 if target is None else self._index[target] for target in self.map(labels)],
                        dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Parsing and validation of the data files
# ----------------------------------------------------------------------------------------------

def _read_mapping_file(path: Path) -> dict:
    """A YAML (.yaml/.yml) or JSON (.json) file whose top level is a mapping."""
    suffix = path.suffix.lower()
    if suffix not in {".yaml", ".yml", ".json"}:
        raise InputError(f"{path}: class-map files must end in .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read class-map file ({err.strerror or err})") from err
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise InputError(f"{path}: not valid {suffix[1:].upper()}: {err}") from err
    if not isinstance(data, dict):
        raise InputError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _check_keys(data: Mapping, allowed: set[str], where: str) -> None:
    extra = sorted(str(key) for key in set(data) - allowed)
    if extra:
        raise InputError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _label_table(raw: object, allowed: Iterable[str], where: str) -> dict[str, str | None]:
    """Validate ``{original label: target or drop/null}``; targets must be in ``allowed``."""
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{where}: must be a non-empty mapping of label -> class")
    allowed = set(allowed)
    table: dict[str, str | None] = {}
    for label, target in raw.items():
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise InputError(f"{where}: label {label!r} is a {type(label).__name__}; quote it in YAML")
        if target is None or target == DROP:
            table[str(label)] = None
        elif isinstance(target, str) and target in allowed:
            table[str(label)] = target
        else:
            raise InputError(f"{where}: label {label!r} maps to {target!r}, which is neither "
                             f"{DROP!r} nor one of {sorted(allowed)}")
    return table


def _parse_scheme(name: str, raw: object, where: str) -> Scheme:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: scheme {name!r} must be a mapping")
    _check_keys(raw, _SCHEME_KEYS, f"{where}: scheme {name!r}")
    classes = raw.get("classes")
    if not isinstance(classes, list) or not classes or len(set(classes)) != len(classes):
        raise InputError(f"{where}: scheme {name!r} needs a list of distinct `classes`")
    conversion = _label_table(raw.get("from_canonical"), classes, f"{where}: {name}.from_canonical")
    missing = [c for c in CANONICAL_CLASSES if c not in conversion]
    extra = [c for c in conversion if c not in CANONICAL_CLASSES]
    if missing or extra:
        raise InputError(f"{where}: {name}.from_canonical must list every canonical class once; "
                         f"missing {missing}, not canonical {extra}")
    approximate = raw.get("approximate", [])
    if not isinstance(approximate, list) or not set(approximate) <= set(CANONICAL_CLASSES):
        raise InputError(f"{where}: {name}.approximate must be a list of canonical classes")
    return Scheme(name, tuple(classes), conversion, frozenset(approximate), raw.get("description", ""))


def _parse_class_map(data: Mapping, source: str, schemes: Mapping[str, Scheme]) -> ClassMap:
    _check_keys(data, _CLASS_MAP_KEYS, source)
    name = data.get("dataset")
    if not isinstance(name, str) or not normalize_label(name):
        raise InputError(f"{source}: `dataset` must be a non-empty string")
    name = normalize_label(name)
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise InputError(f"{source}: `aliases` must be a list of strings")
    labels = _label_table(data.get("labels"), CANONICAL_CLASSES, f"{source}: labels")
    overrides: dict[str, SchemeOverride] = {}
    raw_overrides = data.get("schemes", {})
    if not isinstance(raw_overrides, dict):
        raise InputError(f"{source}: `schemes` must be a mapping of scheme name -> overrides")
    for scheme_name, raw in raw_overrides.items():
        if scheme_name not in schemes or scheme_name == CANONICAL:
            raise InputError(f"{source}: schemes.{scheme_name}: not a scheme with overrides; "
                             f"use one of {sorted(set(schemes) - {CANONICAL})}")
        if not isinstance(raw, dict):
            raise InputError(f"{source}: schemes.{scheme_name} must be a mapping")
        _check_keys(raw, _OVERRIDE_KEYS, f"{source}: schemes.{scheme_name}")
        table = _label_table(raw.get("labels"), schemes[scheme_name].classes,
                             f"{source}: schemes.{scheme_name}.labels")
        overrides[scheme_name] = SchemeOverride(table, bool(raw.get("exclusive", False)),
                                                str(raw.get("hint", "")).strip())
    class_map = ClassMap(name, labels, tuple(normalize_label(a) for a in aliases),
                         str(data.get("description", "")).strip(), overrides, source)
    for scheme in schemes.values():  # fail on a clash of normalized labels now, not on first use
        try:
            _compose(class_map, scheme)
        except InputError as err:
            raise InputError(f"{source}: {err}") from err
    return class_map


def _compose(class_map: ClassMap, scheme: Scheme) -> Taxonomy:
    """The taxonomy of ``class_map`` under ``scheme`` (overrides first, then the canonical route)."""
    override = class_map.schemes.get(scheme.name)
    targets: dict[str, str | None] = {}
    approximate: list[str] = []
    if override is None or not override.exclusive:
        for label, canonical in class_map.labels.items():
            targets[label] = None if canonical is None else scheme.from_canonical[canonical]
            if canonical in scheme.approximate:
                approximate.append(label)
    if override is not None:
        overridden = {normalize_label(label) for label in override.labels}
        targets = {k: v for k, v in targets.items() if normalize_label(k) not in overridden}
        approximate = [label for label in approximate if normalize_label(label) not in overridden]
        targets.update(override.labels)
    return Taxonomy(class_map.name, scheme.name, scheme.classes, targets,
                    approximate_labels=approximate, hint=override.hint if override else "")


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

class _Registry:
    """Schemes and class maps: the package's files, loaded on first use, plus registered ones."""

    def __init__(self) -> None:
        self.schemes: dict[str, Scheme] = {}
        self.class_maps: dict[str, ClassMap] = {}
        self.names: dict[str, str] = {}  # normalized name or alias -> class-map name
        self.taxonomies: dict[tuple[str, str], Taxonomy] = {}

    def ensure_loaded(self) -> None:
        if self.schemes:
            return
        try:
            self._load_package_files()
        except Exception:
            self.__init__()  # leave no half-loaded registry behind
            raise

    def _load_package_files(self) -> None:
        folder = resources.files("aecfe").joinpath(_PACKAGE_DIR)
        schemes_path = folder.joinpath(_SCHEMES_FILE)
        raw = yaml.safe_load(schemes_path.read_text(encoding="utf-8"))
        identity = {c: c for c in CANONICAL_CLASSES}
        schemes = {CANONICAL: Scheme(CANONICAL, CANONICAL_CLASSES, identity,
                                     description="The project's shared class space.")}
        for name, entry in raw.items():
            schemes[name] = _parse_scheme(name, entry, str(schemes_path))
        self.schemes = schemes
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".yaml") and entry.name != _SCHEMES_FILE:
                data = yaml.safe_load(entry.read_text(encoding="utf-8"))
                self.add(_parse_class_map(data, str(entry), self.schemes), replace=False)

    def add(self, class_map: ClassMap, *, replace: bool) -> None:
        claimed = (class_map.name, *class_map.aliases)
        for key in claimed:
            owner = self.names.get(key)
            if owner is not None and owner != class_map.name:
                raise InputError(f"{class_map.source}: name {key!r} already belongs to class map "
                                 f"{owner!r}")
        if class_map.name in self.class_maps:
            if not replace:
                raise InputError(f"{class_map.source}: a class map named {class_map.name!r} is already "
                                 f"registered ({self.class_maps[class_map.name].source}); "
                                 "pass replace=True to replace it")
            old = self.class_maps[class_map.name]
            for key in (old.name, *old.aliases):
                self.names.pop(key, None)
        self.class_maps[class_map.name] = class_map
        self.names.update({key: class_map.name for key in claimed})
        self.taxonomies = {k: v for k, v in self.taxonomies.items() if k[0] != class_map.name}


_REGISTRY = _Registry()


def load_class_map_file(path: str | Path) -> ClassMap:
    """Read and validate a class-map file (format in the module docstring); does not register it."""
    _REGISTRY.ensure_loaded()
    path = Path(path)
    return _parse_class_map(_read_mapping_file(path), str(path), _REGISTRY.schemes)


def register_class_map(source: str | Path | ClassMap, *, replace: bool = False) -> ClassMap:
    """Register a class map (a file path or a :class:`ClassMap`) for :func:`load_taxonomy`.

    Raises InputError if its name or an alias is taken, unless ``replace`` and the name is its own.
    """
    _REGISTRY.ensure_loaded()
    class_map = source if isinstance(source, ClassMap) else load_class_map_file(source)
    _REGISTRY.add(class_map, replace=replace)
    return class_map


def available_datasets() -> tuple[str, ...]:
    """Names of the registered class maps (aliases not included), sorted."""
    _REGISTRY.ensure_loaded()
    return tuple(sorted(_REGISTRY.class_maps))


def available_schemes() -> tuple[str, ...]:
    """Names of the label schemes, ``canonical`` first."""
    _REGISTRY.ensure_loaded()
    return tuple(_REGISTRY.schemes)


def get_scheme(name: str) -> Scheme:
    """The :class:`Scheme` called ``name`` (InputError listing the schemes if there is none)."""
    _REGISTRY.ensure_loaded()
    if name not in _REGISTRY.schemes:
        raise InputError(f"unknown label scheme {name!r}; available: {', '.join(_REGISTRY.schemes)}")
    return _REGISTRY.schemes[name]


def resolve_dataset(name: str, *, missing_ok: bool = False) -> str | None:
    """The class-map name for a dataset name or alias (matched like labels).

    Returns None for an unknown name when ``missing_ok``, else raises InputError listing them.
    """
    _REGISTRY.ensure_loaded()
    found = _REGISTRY.names.get(normalize_label(name))
    if found is None and not missing_ok:
        raise InputError(f"no class map for dataset {name!r}; available: "
                         f"{', '.join(available_datasets())} (aliases accepted). "
                         "Add one with aecfe.taxonomy.register_class_map(<file>).")
    return found


def load_class_map(dataset: str) -> ClassMap:
    """The registered :class:`ClassMap` of a dataset name or alias."""
    return _REGISTRY.class_maps[resolve_dataset(dataset)]


def load_taxonomy(dataset: str, scheme: str = CANONICAL) -> Taxonomy:
    """The :class:`Taxonomy` mapping ``dataset``'s labels (name or alias) into ``scheme``.

    Logs a warning (once per dataset and scheme) when some labels rely on an approximate
    canonical -> scheme conversion (see ``schemes.yaml``).
    """
    name = resolve_dataset(dataset)
    key = (name, get_scheme(scheme).name)
    if key not in _REGISTRY.taxonomies:
        taxonomy = _compose(_REGISTRY.class_maps[name], _REGISTRY.schemes[scheme])
        if taxonomy.approximate_labels:
            logger.warning("taxonomy %s: labels %s have no finer label in this dataset; their "
                           "classes are approximate (see aecfe/taxonomies/schemes.yaml)",
                           taxonomy.name, list(taxonomy.approximate_labels))
        _REGISTRY.taxonomies[key] = taxonomy
    return _REGISTRY.taxonomies[key]


def relabel(y, domains, scheme: str, label_dataset: str | None = None) -> np.ndarray:
    """Labels (N,) mapped into ``scheme``; None where the scheme drops the label.

    Each domain's labels go through the class map of the dataset named like the domain, or of
    ``label_dataset`` for all domains. :class:`InputError` for a domain with no class map or unknown labels.
    """
    y, domains = np.asarray(y, dtype=object), np.asarray(domains)
    mapped = np.empty(len(y), dtype=object)
    for domain in np.unique(domains):
        rows = domains == domain
        mapped[rows] = load_taxonomy(label_dataset or str(domain), scheme).map(y[rows])
    dropped = sum(label is None for label in mapped)
    if dropped:
        logger.info("scheme %r drops %d of %d labels; those samples are left out", scheme, dropped, len(y))
    return mapped
