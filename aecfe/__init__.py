"""aecfe: cross-domain white blood cell classification (the spine every other package plugs into).

Modules (imported on demand, so ``import aecfe`` stays light):

* :mod:`aecfe.io` — images, class folders, COCO annotations; :mod:`aecfe.taxonomy` — class maps and schemes.
* :mod:`aecfe.synthetic` — the synthetic multi-domain smears (the embedded default).
* :mod:`aecfe.store` — the HDF5 cell store; :mod:`aecfe.pipeline` — images -> detector -> store -> embeddings.
* :mod:`aecfe.metrics`, :mod:`aecfe.evaluation` — cross-domain protocols; :mod:`aecfe.plots` — figures.
* :mod:`aecfe.dg_baselines` — the deep DG baselines (:mod:`classifiers.dg`) in those protocols and tables.
* :mod:`aecfe.comparison` — every method side by side (``aecfe-compare``); :mod:`aecfe.measure` — wall time and peak
  memory of a workload in a child process (the comparison's steps, the speed probes in ``benchmarks/``).
* :mod:`aecfe.bundle` — a trained classifier as one verified folder (detector, embedder, head, classes,
  preprocessing, provenance); :mod:`aecfe.classifier_training` — store -> bundle with validation scores;
  :mod:`aecfe.prediction` — bundle + new images -> per-cell classes and differential counts
  (:mod:`aecfe.cell_figures`: overlays, gallery); :mod:`aecfe.export` — AnnData export;
  :mod:`aecfe.device` — the ``--device`` default (the GPU if present, else the CPU).
* :mod:`aecfe.checkpoints` — atomic, weights-only checkpoints; :mod:`aecfe.torchvision_compat` — CPU kernels
  for torchvision's ops when its compiled ones do not load (import it before torchvision).
* :mod:`aecfe.cli` — the command-line programs (``python -m aecfe.cli NAME``).

The models live beside it: :mod:`detectors` (Mask R-CNN), :mod:`extractors` (AE-CFE autoencoder),
:mod:`classifiers` (scikit-learn heads, deep DG baselines).
"""
__version__ = "0.1.0"
