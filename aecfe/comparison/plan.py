"""The steps of the whole comparison (the thesis's Table 3.2 and the DG papers), on the same domains, splits and seeds.

Feature methods share one cell store: the detector writes the RoI features and crops of every image
(``extract``), each autoencoder variant trains on them and writes its embedding (``ae_<alignment>.train``),
the CNN baseline embeds the crops (``cnn``), and every embedding is evaluated with every head
(``<method>.evaluate``). The deep baselines train end to end on each input of ``dg_inputs``: the whole images
(``<algorithm>.train_dg``, report name ``<algorithm>``) and the detector's crops of the store's labelled cells
(``<algorithm>_crop.train_dg``, report name ``<algorithm> (crop)``, folder ``methods/<algorithm>_crop``), the
cells, labels and split groups the heads see (:mod:`aecfe.store.readers`). Every evaluation uses
:func:`aecfe.evaluation.evaluate_cross_domain` with the same seeds, so the splits are identical (on crops, the
very splits of the heads).

==========================  =====================================================================
method (report name)        features
==========================  =====================================================================
ResNet-RF                   ``cnn``: CNN (ImageNet weights, or random init) global-pooled features of the crop
R-CNN-RF                    ``rcnn_roi``: the detector's RoI features averaged over 14x14 (256-d)
AE-RF                       ``ae_none``: autoencoder without alignment
ND-AE-DA                    ``ae_nd``: aligned to a normal distribution
AAE-DA                      ``ae_adversarial``: domain discriminator
AE-CFE                      ``ae_mmd``: the reference moment matching
AE-CFE-kMMD                 ``ae_kmmd``: multi-bandwidth Gaussian-kernel MMD
AE-CFE-DG                   ``ae_mmd_without_<domain>``: AE-CFE trained without the held-out domain, one
                            autoencoder per leave-one-domain-out fold (LODO only)
==========================  =====================================================================

Every autoencoder above but AE-CFE-DG trains on the cells of *every* domain, the held-out one's included
(unlabelled): unsupervised domain adaptation, as in the thesis. AE-CFE-DG and the deep baselines never see the
held-out domain (domain generalisation); :data:`TARGET_DATA` says which is which, and the report shows it. The
autoencoders train with the ``aecfe`` recipe (:mod:`extractors.recipes`) and the alignment of the variant;
``--ae-options`` adds to or overrides it (e.g. ``--recipe reference``). Each variant runs with the weight β its
alignment loss documents (:func:`extractors.losses.default_beta`: 1 for AAE-DA, METHODS §8.7; 5 for the others);
a ``--beta`` in ``--ae-options`` overrides it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from aecfe.comparison.steps import Step
from classifiers.dg.hparams import ALGORITHM_NAMES  # torch-free: the comparison's parent process stays small

FEATURE_METHODS: dict[str, str] = {
    "ResNet-RF": "cnn", "R-CNN-RF": "rcnn_roi", "AE-RF": "ae_none", "ND-AE-DA": "ae_nd", "AAE-DA": "ae_adversarial",
    "AE-CFE": "ae_mmd", "AE-CFE-kMMD": "ae_kmmd",
}
"""Report name -> embedding name in the store."""

FOLD_METHODS: dict[str, str] = {"AE-CFE-DG": "ae_mmd"}
"""Report name -> the embedding trained once per leave-one-domain-out fold without the held-out domain."""

DG_METHODS: tuple[str, ...] = tuple(name for name in ALGORITHM_NAMES if name != "CRT")  # the registry's, less CRT

DG_INPUTS: dict[str, str] = {"image": "whole image", "crop": "detector crop"}
"""The deep baselines' inputs (``ComparisonConfig.dg_inputs``) -> what the report calls them. The feature
methods all read the detector's cells (crops or RoI features): their input is ``"detector crop"``."""
CROP_SUFFIX = " (crop)"
"""Report name of a deep baseline on crops: ``"ERM (crop)"``; its folder under ``methods/`` is ``ERM_crop``."""

TARGET_DATA: dict[str, str] = {
    **{method: "unlabelled (UDA)" for method, embedding in FEATURE_METHODS.items() if embedding.startswith("ae_")},
    "AE-CFE-DG": "none", "ResNet-RF": "none", "R-CNN-RF": "none",
    **{method: "none" for method in DG_METHODS}, "FewShot": "k labelled per class", "Oracle": "labelled",
}
TARGET_DATA.update({f"{method}{CROP_SUFFIX}": TARGET_DATA[method] for method in DG_METHODS})
"""What each method's training saw of the domain it is scored on (LODO: the held-out one)."""


def dg_method(algorithm: str, dg_input: str) -> str:
    """Report name of deep baseline ``algorithm`` on ``dg_input`` (a key of :data:`DG_INPUTS`)."""
    return algorithm + CROP_SUFFIX if dg_input == "crop" else algorithm


def method_folder(method: str) -> str:
    """Folder of a report name under ``methods/``: ``"ERM (crop)"`` -> ``"ERM_crop"``, others unchanged."""
    return method[:-len(CROP_SUFFIX)] + "_crop" if method.endswith(CROP_SUFFIX) else method


def method_from_folder(folder: str) -> str:
    """Report name of a folder under ``methods/`` (inverse of :func:`method_folder`)."""
    base = folder[:-len("_crop")] if folder.endswith("_crop") else None
    return base + CROP_SUFFIX if base in DG_METHODS else folder


def base_method(method: str) -> str:
    """The method without its input: ``"ERM (crop)"`` -> ``"ERM"``."""
    return method[:-len(CROP_SUFFIX)] if method.endswith(CROP_SUFFIX) else method


def method_input(method: str) -> str:
    """What ``method`` reads (a value of :data:`DG_INPUTS`): deep baselines by name, feature methods the
    detector's cells."""
    return DG_INPUTS["image"] if method in DG_METHODS else DG_INPUTS["crop"]


def needs_store(methods: Sequence[str], dg_inputs: Sequence[str]) -> bool:
    """Whether ``methods`` on ``dg_inputs`` read the cell store (then the detector runs first)."""
    return any(m in FEATURE_METHODS or m in FOLD_METHODS for m in methods) or (
        "crop" in dg_inputs and any(m in DG_METHODS for m in methods))
SYNTHETIC_LABS: tuple[str, ...] = ("lab_a", "lab_b", "lab_c")
"""The labs of :func:`aecfe.synthetic.default_domains`."""


@dataclasses.dataclass
class ComparisonConfig:
    """What to compare and how long to train (defaults: a CPU-sized run).

    Attributes:
        out: output folder (``store.h5``, ``steps/``, ``methods/``, ``report/``).
        domains_root: ``<root>/<domain>/<class>/<image>``; None: the synthetic labs written under ``out/data``.
        detector_checkpoint: a trained detector (``scripts/train_detector.py``); None: train one on synthetic
            fields first (``detector.train``), which only suits the synthetic labs.
        scheme: label scheme of every evaluation (:mod:`aecfe.taxonomy`).
        seeds: split and model seeds (every method). heads: embedding heads.
        methods: report names of :data:`FEATURE_METHODS` and :data:`DG_METHODS` to run.
        ae_epochs, ae_max_cells: autoencoder training length (None: the recipe's) and seeded cell subset
            (None: all).
        cnn_backbone, cnn_weights: the ResNet-RF features (weights: enum name or local file; None: random init).
        dg_backbone, dg_weights, dg_image_size, dg_steps: the deep baselines' network and length.
        dg_protocols: the protocols the deep baselines run (each trains its own models; Oracle always runs the
            matrix, FewShot leave-one-domain-out).
        dg_seeds: seeds of the deep baselines (None: ``seeds``; each seed trains every model again).
        dg_inputs: the deep baselines' inputs, keys of :data:`DG_INPUTS` (each trains every model again).
        few_shot_k: labelled target images per class of the few-shot fine-tuning and, with ``FewShot`` among the
            methods, of the feature methods' heads (step ``<embedding>.few_shot``, heads ``<head>_k<k>``; the same
            cells on crops: :func:`aecfe.splits.few_shot_selection`).
        synthetic_n: single-cell images per synthetic lab. detector_seconds: training time of the synthetic
            detector (single-cell images it misses get the centred box).
        extract_options / ae_options / dg_options: extra arguments of extract_features / train_autoencoder /
            train_dg.
    """

    out: Path
    domains_root: Path | None = None
    detector_checkpoint: Path | None = None
    scheme: str = "five"
    seeds: Sequence[int] = (0, 1, 2)
    heads: Sequence[str] = ("rf", "xgboost", "linear")
    methods: Sequence[str] = tuple(FEATURE_METHODS) + tuple(FOLD_METHODS) + DG_METHODS
    ae_epochs: int | None = None
    ae_max_cells: int | None = None
    cnn_backbone: str = "mobilenet_v2"
    cnn_weights: str | None = None
    dg_backbone: str = "mobilenet_v2"
    dg_weights: str | None = None
    dg_image_size: int = 96
    dg_steps: int = 300
    dg_protocols: Sequence[str] = ("matrix", "lodo")
    few_shot_k: Sequence[int] = (5, 10, 20)
    synthetic_n: int = 60
    detector_seconds: float = 600
    dg_seeds: Sequence[int] | None = None
    dg_inputs: Sequence[str] = tuple(DG_INPUTS)
    extract_options: Sequence[str] = ()
    ae_options: Sequence[str] = ()
    dg_options: Sequence[str] = ()

    def __post_init__(self):
        self.out = Path(self.out)
        known = [*FEATURE_METHODS, *FOLD_METHODS, *DG_METHODS]
        unknown = sorted(set(self.methods) - set(known))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {known}")
        if not self.dg_inputs or set(self.dg_inputs) - set(DG_INPUTS):
            raise ValueError(f"dg_inputs {list(self.dg_inputs)}: choose one or more of {list(DG_INPUTS)}")

    @property
    def store(self) -> Path:
        return self.out / "store.h5"

    @property
    def data_root(self) -> Path:
        return self.domains_root if self.domains_root is not None else self.out / "data" / "cls"

    def ae_run(self, alignment: str) -> Path:
        return self.out / "autoencoders" / alignment

    def domains(self) -> list[str]:
        """The domain names: the folders of ``domains_root``, or the synthetic labs."""
        if self.domains_root is None:
            return list(SYNTHETIC_LABS)
        return sorted(path.name for path in Path(self.domains_root).iterdir() if path.is_dir())


def _cli(name: str, *args) -> tuple[str, ...]:
    return ("{python}", "-m", "aecfe.cli", name, *map(str, args))


def data_steps(config: ComparisonConfig) -> list[Step]:
    """The synthetic labs and their detector, when no real domains / detector are given."""
    steps = []
    if config.domains_root is None:
        steps.append(Step("data.synthetic", _cli("synthetic_data", "--out", config.out / "data",
                                                 "--n-per-domain", config.synthetic_n),
                          kind="data", method="data"))
    if config.detector_checkpoint is None and needs_store(config.methods, config.dg_inputs):
        coco = [config.out / "data" / "coco" / lab / "annotations.json" for lab in SYNTHETIC_LABS]
        steps.append(Step("detector.train", _cli("train_detector", *coco, "--out", config.out / "detector",
                                                 "--min-size", 256, "--max-size", 256,
                                                 "--max-seconds", config.detector_seconds, "--overlays", 4,
                                                 "--no-progress"),
                          kind="training", method="detector", after=("data.synthetic",)))
    return steps


def detector_checkpoint(config: ComparisonConfig) -> Path:
    return config.detector_checkpoint or config.out / "detector" / "last.pt"


def extract_step(config: ComparisonConfig) -> Step:
    """The detector on every image: the store's cells (RoI features, crops) and the ``rcnn_roi`` embedding."""
    fallback = ("--fallback", "center") if config.detector_checkpoint is None else ()
    return Step("extract", _cli("extract_features", "--out", config.store, "--class-folders", config.data_root,
                                "--detector-checkpoint", detector_checkpoint(config), "--baselines", "rcnn_roi",
                                "--no-progress", *fallback, *config.extract_options),
                kind="extraction", method="R-CNN-RF", after=tuple(s.name for s in data_steps(config)))


def feature_steps(config: ComparisonConfig) -> list[Step]:
    """Extraction, the CNN embedding, the autoencoders and the evaluation of every chosen feature method."""
    wanted = [m for m in FEATURE_METHODS if m in config.methods]
    folds = [m for m in FOLD_METHODS if m in config.methods]
    if not wanted and not folds:
        return []
    steps = [extract_step(config)]
    if "ResNet-RF" in wanted:
        weights = ("--weights", config.cnn_weights) if config.cnn_weights else ()
        steps.append(Step("cnn", _cli("embed_cnn", config.store, "--backbone", config.cnn_backbone, *weights),
                          kind="extraction", method="ResNet-RF", after=("extract",)))
    for method in wanted:
        embedding = FEATURE_METHODS[method]
        before = ("extract",)
        if embedding.startswith("ae_"):
            steps.append(_autoencoder_step(config, method, embedding, config.ae_run(embedding.removeprefix("ae_"))))
            before = (f"{embedding}.train",)
        elif embedding == "cnn":
            before = ("cnn",)
        steps.append(_evaluation_step(config, method, embedding, ("matrix", "lodo"), config.out / "methods" / method,
                                      before))
        if "FewShot" in config.methods and config.few_shot_k:  # the heads' rows beside the deep few-shot's
            step = _evaluation_step(config, method, embedding, ("lodo",), config.out / "methods" / method, before,
                                    "--few-shot-k", ",".join(map(str, config.few_shot_k)))
            steps.append(dataclasses.replace(step, name=f"{embedding}.few_shot"))
    for method in folds:  # one autoencoder per leave-one-domain-out fold, trained without the held-out domain
        for domain in config.domains():
            embedding = f"{FOLD_METHODS[method]}_without_{domain}"
            steps.append(_autoencoder_step(config, method, embedding, config.out / "autoencoders" / embedding,
                                           "--exclude-domain", domain))
            steps.append(_evaluation_step(config, method, embedding, ("lodo",),
                                          config.out / "methods" / method / "folds" / domain,
                                          (f"{embedding}.train",), "--held-out", domain))
    return steps


def _autoencoder_step(config: ComparisonConfig, method: str, embedding: str, run: Path, *extra) -> Step:
    """Train the autoencoder of ``embedding`` (``ae_<alignment>[...]``) with its alignment's default β on the store
    and write its codes (``config.ae_options`` come last, so a ``--beta`` there wins)."""
    from extractors.losses import default_beta  # torch: only when the plan is built

    alignment = embedding.removeprefix("ae_").split("_without_")[0]
    subset = ("--max-cells", config.ae_max_cells) if config.ae_max_cells else ()
    epochs = ("--epochs", config.ae_epochs) if config.ae_epochs else ()
    return Step(f"{embedding}.train",
                _cli("train_autoencoder", config.store, "--out", run, "--alignment", alignment,
                     "--beta", default_beta(alignment), *epochs,
                     "--seed", 0, "--embedding", embedding, "--no-progress", *subset, *extra, *config.ae_options),
                kind="training", method=method, after=("extract",))


def _evaluation_step(config: ComparisonConfig, method: str, embedding: str, protocols: Sequence[str], out: Path,
                     after: tuple[str, ...], *extra) -> Step:
    """Every head on ``embedding`` under ``protocols``, the comparison's seeds and scheme, into ``out``."""
    return Step(f"{embedding}.evaluate",
                _cli("evaluate_cross_domain", config.store, "--features", embedding, "--head", *config.heads,
                     "--protocol", *protocols, "--seeds", *config.seeds, "--scheme", config.scheme,
                     "--label-dataset", "canonical", "--no-umap", "--no-confusion-png", "--out", out, *extra),
                kind="evaluation", method=method, after=after)


def dg_steps(config: ComparisonConfig) -> list[Step]:
    """One ``train_dg`` step per deep baseline and input, both protocols (Oracle: matrix; FewShot: LODO, every
    k), the same settings on both inputs: the images (``--domains-root``) or the store's crops (``--store``,
    after ``extract``)."""
    steps = []
    weights = ("--weights", config.dg_weights) if config.dg_weights else ()
    for dg_input in (key for key in DG_INPUTS if key in config.dg_inputs):
        if dg_input == "crop":
            data, after = ("--store", config.store), ("extract",)
        else:
            data, after = ("--domains-root", config.data_root), ("data.synthetic",) if config.domains_root is None \
                else ()
        for algorithm in (m for m in DG_METHODS if m in config.methods):
            method = dg_method(algorithm, dg_input)
            protocols = ("matrix",) if algorithm == "Oracle" else ("lodo",) if algorithm == "FewShot" \
                else tuple(config.dg_protocols)
            steps.append(Step(f"{method_folder(method)}.train_dg",
                              _cli("train_dg", *data, "--scheme", config.scheme,
                                   "--algorithm", algorithm, "--protocol", *protocols,
                                   "--seeds", ",".join(map(str, config.dg_seeds or config.seeds)),
                                   "--few-shot-k", ",".join(map(str, config.few_shot_k)),
                                   "--backbone", config.dg_backbone, *weights, "--image-size", config.dg_image_size,
                                   "--steps", config.dg_steps, "--no-confusion-png",
                                   "--out", config.out / "methods" / method_folder(method), *config.dg_options),
                              kind="deep baseline", method=method, after=after))
    return steps


def build_steps(config: ComparisonConfig) -> list[Step]:
    """Every step of the comparison, in an order that respects their ``after`` (the extraction once, for the
    feature methods and the deep baselines on crops)."""
    features, deep = feature_steps(config), dg_steps(config)
    if not features and any(step.after == ("extract",) for step in deep):
        features = [extract_step(config)]
    return data_steps(config) + features + deep
