"""The deep DG algorithms, registered by name in :data:`ALGORITHMS` (importing this package registers them);
:data:`ALGORITHM_NAMES` (:mod:`classifiers.dg.hparams`, torch-free) — the ones a user runs, in table order."""
from classifiers.dg.algorithms.base import (ALGORITHMS, Algorithm, build_algorithm, featurizer_from_hparams,
                                            get_algorithm, register, split_minibatches)
from classifiers.dg.algorithms.boda import BoDA, CRT
from classifiers.dg.algorithms.coral import CORAL
from classifiers.dg.algorithms.dann import DANN
from classifiers.dg.algorithms.erm import ERM, Oracle
from classifiers.dg.algorithms.fewshot import FewShot, FewShotFinetune
from classifiers.dg.algorithms.mixup import Mixup
from classifiers.dg.algorithms.sada import SADA
from classifiers.dg.algorithms.selfreg import SelfReg
from classifiers.dg.hparams import ALGORITHM_NAMES


__all__ = ["ALGORITHMS", "ALGORITHM_NAMES", "Algorithm", "BoDA", "CORAL", "CRT", "DANN", "ERM", "FewShot",
           "FewShotFinetune", "Mixup", "Oracle", "SADA", "SelfReg", "build_algorithm", "featurizer_from_hparams",
           "get_algorithm", "register", "split_minibatches"]
