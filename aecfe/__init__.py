"""aecfe: cross-domain white blood cell classification (the spine every other package plugs into).

Module map, in five layers; imports only point down (``tests/test_layers.py`` checks every import of every module,
lazy ones included, and that nothing outside :mod:`aecfe.cli` imports it). Modules are imported on demand, so
``import aecfe`` stays light.

1. **base** — import nothing of ours above them: :mod:`aecfe.errors`, :mod:`aecfe.atomic` (atomic files),
   :mod:`aecfe.shapes` (per-cell shapes), :mod:`aecfe.checkpoints` (atomic, weights-only checkpoints),
   :mod:`aecfe.identity` (the one model-identity builder, file hashing), :mod:`aecfe.io` (images, class folders,
   COCO), :mod:`aecfe.taxonomy` (class maps and schemes), :mod:`aecfe.metrics`, :mod:`aecfe.splits` (per-domain
   training/test splits), :mod:`aecfe.distributed` (torchrun set-up), :mod:`aecfe.devices` (the default device, ``--device`` checked),
   :mod:`aecfe.measure` (wall time and peak memory of a workload in a child process),
   :mod:`aecfe.synthetic` (the synthetic multi-domain smears), :mod:`aecfe.torchvision_compat` (CPU kernels for
   torchvision's ops when its compiled ones do not load; import it before torchvision).
2. **models** — beside this package: :mod:`detectors` (Mask R-CNN), :mod:`extractors` (AE-CFE autoencoder,
   losses, trainer, CNN features), :mod:`classifiers` (scikit-learn heads, deep DG baselines). They import the
   base layer and each other, never the store or anything above it.
3. **store** — :mod:`aecfe.store`, the one boundary to the HDF5 cell store: the file (:mod:`aecfe.store.core`),
   a run's store and its report (:mod:`aecfe.store.runs`),
   every stage writer (:mod:`aecfe.store.roi`, :mod:`aecfe.store.embeddings`: one resumable writer, one attribute
   schema) and every reader (:mod:`aecfe.store.training_cells`, :mod:`aecfe.store.readers`).
4. **application** — :mod:`aecfe.pipeline` (extraction runs calling the store writers), :mod:`aecfe.evaluation`
   (cross-domain protocols), :mod:`aecfe.reporting` (tables and figures of evaluation runs),
   :mod:`aecfe.autoencoding` (training an autoencoder on a store), :mod:`aecfe.demo`, :mod:`aecfe.comparison`
   (every method side by side, ``aecfe-compare``), :mod:`aecfe.dg_baselines` (the deep DG baselines in those
   protocols and tables), :mod:`aecfe.plots`, :mod:`aecfe.bundle` (a trained classifier as one verified folder),
   :mod:`aecfe.classifier_training` (store -> bundle with validation scores), :mod:`aecfe.prediction` (bundle +
   new images -> per-cell classes and differential counts; :mod:`aecfe.cell_figures`: overlays, gallery),
   :mod:`aecfe.export` (AnnData), :mod:`aecfe.adaptation` (a bundle adapted to a new lab: its unlabelled cells
   train the autoencoder on, the head is refitted), :mod:`aecfe.few_shot` (the embedding heads' few-shot rows).
5. **programs** — :mod:`aecfe.cli`: each ``aecfe/cli/NAME.py`` a parser and a call into layer 4
   (``python -m aecfe.cli NAME``).
"""
__version__ = "0.1.0"
