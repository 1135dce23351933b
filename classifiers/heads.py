"""scikit-learn classifier heads on cell embeddings: random forest, XGBoost, logistic regression.

Each head is a scikit-learn classifier: ``X`` (N, D) floats, ``y`` (N,) labels of any hashable kind (class
names as strings are the norm), hyper-parameters in ``__init__`` only, ``fit`` returns ``self``, fitted state
ends in ``_`` (``classes_`` sorted, ``n_features_in_``, the wrapped ``estimator_``); ``predict_proba``
columns follow ``classes_``. They work in ``Pipeline`` / ``GridSearchCV`` and pass
``sklearn.utils.estimator_checks.check_estimator``, with one documented expected failure
(:data:`EXPECTED_FAILED_CHECKS`: the random forest's bootstrap makes a weight of 2 differ from a repeated row,
as for scikit-learn's own forest). ``check_array_api_input`` is skipped by scikit-learn itself unless
``SCIPY_ARRAY_API=1``; the heads do not claim array-API support.

Shared behaviour (:class:`EmbeddingHead`):

* labels are encoded to 0..K-1 internally (XGBoost needs it) and decoded on the way out;
* ``class_weight`` (None, ``"balanced"`` or a dict label -> weight) becomes per-sample weights
  (:func:`sklearn.utils.class_weight.compute_sample_weight`; "balanced" gives a sample of class k the
  weight ``n / (K * n_k)``), multiplied into any ``sample_weight`` passed to ``fit``: the same rule for the
  three heads, identical to scikit-learn's own ``class_weight`` of ``RandomForestClassifier`` and
  ``LogisticRegression``;
* a training set with a single class (e.g. a lab that only labelled neutrophils) still fits: the head then
  predicts that class with probability 1 (a :class:`~sklearn.dummy.DummyClassifier`) and logs a warning.

Defaults:

* :class:`RandomForestHead` — the AE-CFE thesis / reference code (METHODS.md §1.9): 100 trees,
  ``max_depth=16``, ``random_state=0``, everything else scikit-learn's default (Gini, sqrt(D) features,
  bootstrap).
* :class:`XGBoostHead` — 200 rounds of depth-6 ``hist`` trees with learning rate 0.1 (XGBoost's defaults
  are depth 6, 100 rounds, rate 0.3: a smaller rate with more rounds is the common, steadier choice).
* :class:`LinearHead` — ``StandardScaler`` + multinomial ``LogisticRegression`` (L2, C=1, lbfgs,
  ``max_iter=2000``, enough to converge on standardised 50-d codes).

:func:`make_head` builds one by name: ``make_head("rf", n_estimators=10)``.

Saving without pickle (:func:`save_head` / :func:`load_head`): a fitted head becomes ``head.json`` (format,
head name, hyper-parameters, ``classes_``, ``n_features_in_``, library versions) plus one model file: the
XGBoost booster as XGBoost's own JSON model (``head.xgb.json``) or a scikit-learn head as a skops file
(``head.skops``), loaded with the explicit trusted-type list :data:`SKOPS_TRUSTED_TYPES` (skops refuses any
other type instead of running it). A single-class head stores no model file (its constant prediction is
rebuilt from ``classes_``).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from aecfe.errors import InputError

logger = logging.getLogger(__name__)

EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "RandomForestHead": {
        "check_sample_weight_equivalence_on_dense_data":
            "bootstrap resampling draws rows uniformly, so a weight of 2 is not the same as a repeated row; "
            "scikit-learn lists the same expected failure for RandomForestClassifier",
    },
}
"""``check_estimator`` checks a head is known to fail, by class name -> check name -> reason."""


class EmbeddingHead(ClassifierMixin, BaseEstimator):
    """Common logic of the heads: validation, label encoding, class weights, single-class fallback.

    A subclass defines ``__init__`` (its hyper-parameters, stored unchanged, including ``class_weight``) and
    :meth:`_build_estimator`, returning an unfitted estimator that takes labels 0..K-1 (K >= 2) and
    per-sample weights (passed as :meth:`_weight_kwargs` says).
    """

    def _build_estimator(self) -> Any:
        raise NotImplementedError

    def _weight_kwargs(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """The keyword arguments that hand per-sample ``weights`` (N,) to the built estimator's ``fit``."""
        return {"sample_weight": weights}

    def fit(self, X, y, sample_weight=None) -> "EmbeddingHead":
        """Fit on ``X`` (N, D) finite floats and ``y`` (N,) class labels; returns ``self``.

        ``sample_weight`` (N,) non-negative, optional; multiplied by the ``class_weight`` weights.
        """
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if self.class_weight is not None:
            weights = weights * compute_sample_weight(self.class_weight, y)
        if len(self.classes_) == 1:
            logger.warning("%s: the training labels hold a single class (%r); it will predict that class "
                           "for every sample", type(self).__name__, self.classes_[0])
            self.estimator_ = DummyClassifier(strategy="prior").fit(X, codes)
        else:
            self.estimator_ = self._build_estimator()
            self.estimator_.fit(X, codes, **self._weight_kwargs(weights))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, K), columns in the order of ``classes_``, rows summing to 1."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return np.asarray(self.estimator_.predict_proba(X), dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        """Most probable class (N,), taken from ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class RandomForestHead(EmbeddingHead):
    """Random forest (scikit-learn), defaults of the AE-CFE thesis: 100 trees, depth <= 16, seed 0."""

    def __init__(self, n_estimators: int = 100, max_depth: int | None = 16, min_samples_leaf: int = 1,
                 max_features: str | int | float | None = "sqrt", class_weight: str | None = None,
                 n_jobs: int | None = None, random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _build_estimator(self) -> RandomForestClassifier:
        return RandomForestClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                      min_samples_leaf=self.min_samples_leaf, max_features=self.max_features,
                                      n_jobs=self.n_jobs, random_state=self.random_state)


class XGBoostHead(EmbeddingHead):
    """Gradient-boosted trees (XGBoost ``hist``); softmax over K classes (logistic when K = 2)."""

    def __init__(self, n_estimators: int = 200, max_depth: int = 6, learning_rate: float = 0.1,
                 subsample: float = 1.0, colsample_bytree: float = 1.0, reg_lambda: float = 1.0,
                 class_weight: str | None = None, n_jobs: int | None = None, random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _build_estimator(self):
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                             learning_rate=self.learning_rate, subsample=self.subsample,
                             colsample_bytree=self.colsample_bytree, reg_lambda=self.reg_lambda,
                             tree_method="hist", n_jobs=self.n_jobs,
                             random_state=self.random_state)


class LinearHead(EmbeddingHead):
    """``StandardScaler`` + multinomial L2 logistic regression (lbfgs)."""

    def __init__(self, C: float = 1.0, max_iter: int = 2000, tol: float = 1e-4,
                 class_weight: str | None = None, random_state: int | None = 0):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.random_state = random_state

    def _build_estimator(self):
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol,
                                                                  random_state=self.random_state))

    @property
    def n_iter_(self) -> int:
        """lbfgs iterations of the fitted logistic regression (0 after a single-class fit)."""
        return int(np.max(getattr(self.estimator_[-1], "n_iter_", 0)))

    def _weight_kwargs(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        # weighted scaling too, so that a weight of 2 is the same as a repeated row
        return {"standardscaler__sample_weight": weights, "logisticregression__sample_weight": weights}


HEADS: dict[str, type[EmbeddingHead]] = {"rf": RandomForestHead, "xgboost": XGBoostHead, "linear": LinearHead}
"""Head classes by the short name :func:`make_head` and the command line take."""


def make_head(name: str, **params) -> EmbeddingHead:
    """A new head by short name (``"rf"``, ``"xgboost"``, ``"linear"``) with ``params`` for its ``__init__``.

    Raises :class:`~aecfe.errors.InputError` for an unknown name or parameter, listing the valid ones.
    """
    if name not in HEADS:
        raise InputError(f"unknown classifier head {name!r}; available: {', '.join(HEADS)}")
    head = HEADS[name]()
    unknown = sorted(set(params) - set(head.get_params()))
    if unknown:
        raise InputError(f"head {name!r} has no parameter(s) {unknown}; valid: {sorted(head.get_params())}")
    return head.set_params(**params)


# ---------------------------------------------------------------------------------------------- safe files
HEAD_FORMAT = "aecfe.head/1"
"""``format`` of ``head.json``."""
HEAD_JSON = "head.json"
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "classifiers.heads.RandomForestHead", "classifiers.heads.LinearHead", "sklearn.tree._tree.Tree",
)
"""Types a skops head file may hold beyond skops' own defaults (scikit-learn estimators, numpy arrays):
our two scikit-learn heads and the random forest's tree structure. Anything else is refused on load."""


def save_head(head: EmbeddingHead, directory: str | os.PathLike) -> list[Path]:
    """Write the fitted ``head`` into ``directory`` without pickle; returns the files written.

    ``head.json`` always; ``head.xgb.json`` (XGBoost's JSON model) for :class:`XGBoostHead`, ``head.skops``
    for the scikit-learn heads; none for a single-class head.
    """
    check_is_fitted(head)
    name = next((key for key, kind in HEADS.items() if type(head) is kind), None)
    if name is None:
        raise InputError(f"cannot save a head of type {type(head).__name__}; known: {sorted(HEADS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    classes = head.classes_.tolist()
    meta = {"format": HEAD_FORMAT, "head": name, "params": head.get_params(), "classes": classes,
            "n_features_in": int(head.n_features_in_), "model_file": None, "versions": _library_versions()}
    if len(classes) > 1 and name == "xgboost":
        meta["model_file"] = "head.xgb.json"
        head.estimator_.save_model(directory / meta["model_file"])
    elif len(classes) > 1:
        sio = _skops_io()
        meta["model_file"] = "head.skops"
        sio.dump(head, directory / meta["model_file"])
    (directory / HEAD_JSON).write_text(json.dumps(meta, indent=2, default=_plain) + "\n", encoding="utf-8")
    return [directory / HEAD_JSON] + ([directory / meta["model_file"]] if meta["model_file"] else [])


def load_head(directory: str | os.PathLike) -> EmbeddingHead:
    """The head :func:`save_head` wrote into ``directory``; :class:`InputError` naming the file when a part
    is missing, of another format, or (skops) holds a type outside :data:`SKOPS_TRUSTED_TYPES`."""
    directory = Path(directory)
    meta_path = directory / HEAD_JSON
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{meta_path}: cannot read the head description ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT or meta.get("head") not in HEADS:
        raise InputError(f"{meta_path}: not a head description of format {HEAD_FORMAT}")
    classes = np.asarray(meta["classes"])
    if meta["model_file"] is None:
        head = make_head(meta["head"], **meta["params"])
        head.classes_, head.n_features_in_ = classes, int(meta["n_features_in"])
        head.estimator_ = DummyClassifier(strategy="prior").fit(np.zeros((1, head.n_features_in_)), [0])
        return head
    model_path = directory / meta["model_file"]
    if not model_path.is_file():
        raise InputError(f"{model_path}: the head's model file is missing")
    if meta["head"] == "xgboost":
        head = make_head("xgboost", **meta["params"])
        head.estimator_ = head._build_estimator()
        try:
            head.estimator_.load_model(model_path)
        except Exception as error:  # xgboost raises its own XGBoostError for a damaged model
            raise InputError(f"{model_path}: cannot read the XGBoost model ({error})") from error
        head.classes_, head.n_features_in_ = classes, int(meta["n_features_in"])
        return head
    return _load_skops(model_path, meta)


def _skops_io():
    """``skops.io``, or :class:`InputError` saying how to install it."""
    try:
        import skops.io
    except ImportError as error:
        raise InputError("saving or loading a scikit-learn head (rf, linear) needs skops: pip install skops "
                         "(an XGBoost head does not)") from error
    return skops.io


def _load_skops(path: Path, meta: dict) -> EmbeddingHead:
    sio = _skops_io()
    try:
        untrusted = set(sio.get_untrusted_types(file=path)) - set(SKOPS_TRUSTED_TYPES)
        if untrusted:
            raise InputError(f"{path}: holds types outside the trusted list: {sorted(untrusted)}")
        head = sio.load(path, trusted=list(SKOPS_TRUSTED_TYPES))
    except InputError:
        raise
    except Exception as error:  # skops raises several kinds on a damaged or foreign file
        raise InputError(f"{path}: cannot read the skops head ({type(error).__name__}: {error})") from error
    if type(head) is not HEADS[meta["head"]] or head.classes_.tolist() != meta["classes"]:
        raise InputError(f"{path}: holds a {type(head).__name__} with classes {head.classes_.tolist()}, "
                         f"but head.json describes a {meta['head']} head with classes {meta['classes']}")
    return head


def _library_versions() -> dict[str, str]:
    import sklearn

    versions = {"scikit-learn": sklearn.__version__}
    for module in ("xgboost", "skops"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return versions


def _plain(value):
    """JSON for numpy scalars among the hyper-parameters."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
