"""Classifiers on cell embeddings and images.

* :mod:`~classifiers.heads` — scikit-learn heads on embeddings: :class:`RandomForestHead`,
  :class:`XGBoostHead`, :class:`LinearHead`, :func:`make_head`.
* :mod:`classifiers.dg` — deep domain-generalization baselines (ERM, DANN, CORAL, Mixup, SelfReg, BoDA,
  SADA, few-shot fine-tuning, oracle); imported on demand (it pulls in torchvision).
"""
from classifiers.heads import HEADS, EmbeddingHead, LinearHead, RandomForestHead, XGBoostHead, make_head

__all__ = ["HEADS", "EmbeddingHead", "LinearHead", "RandomForestHead", "XGBoostHead", "make_head"]
