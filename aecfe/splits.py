"""Per-domain training/test splits shared by every cross-domain protocol (base layer: the evaluation, the deep
DG estimator and any baseline import it, so all of them split a domain the same way).

Every domain is split once per seed into a training part (``1 - test_size``) and a test part (``test_size``),
stratified by class when every class has >= 2 samples and both parts can hold every class, and otherwise
unstratified (the reason is logged and kept in :attr:`DomainSplit.reason`). The split of a domain depends only
on (seed, domain name, that domain's labels), not on the other domains. With ``groups`` (one key per sample)
each group is split as one unit (see :func:`domain_splits`).

Few-shot: :func:`few_shot_selection` picks the k labelled groups (images) per class of a held-out domain from a
seed and the groups' keys alone, the one selection of every few-shot method (``aecfe-adapt --shots``, the
embedding-head few-shot rows, the deep few-shot fine-tuning on whole images and on crops).

Example::

    splits = domain_splits(y, domains, seed=0)          # {domain: DomainSplit(train=..., test=...)}
    X_train = X[splits["lab_a"].train]
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import zlib
from collections import Counter
from typing import Callable

import numpy as np
from sklearn.model_selection import train_test_split

from aecfe.errors import InputError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DomainSplit:
    """One domain's split: global sample indices (sorted int64) of its training and test parts."""

    domain: str
    train: np.ndarray
    test: np.ndarray
    stratified: bool
    reason: str = ""
    """Why the split is not stratified ("" when it is)."""


def domain_seed(seed: int, domain: str) -> int:
    """The ``random_state`` of ``domain``'s split under ``seed``: a hash of both, stable across runs and
    independent of which other domains are present."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(str(domain).encode("utf-8"))]).generate_state(1)[0])


def domain_splits(y, domains, seed: int, test_size: float = 0.2, groups=None) -> dict[str, DomainSplit]:
    """Split each domain into training and test parts (``test_size`` of it, at least one sample, in test).

    Args:
        y: (N,) labels. domains: (N,) domain names.
        seed: split seed; each domain uses :func:`domain_seed` (seed, domain).
        test_size: fraction in (0, 1) of each domain put in its test part.
        groups: optional (N,) group keys; the samples of a group go to the same part (module docstring).
            The split is made over each domain's groups (in order of first appearance, stratified by the
            label of each group's first sample), so ``test_size`` is a fraction of groups.

    Returns:
        ``{domain: DomainSplit}`` in sorted domain order. A domain with a single sample (group) has no
        test part.
    """
    y, domains = np.asarray(y), np.asarray(domains)
    if not 0 < test_size < 1:
        raise InputError(f"test_size must be in (0, 1), got {test_size}")
    if len(y) != len(domains) or (groups is not None and len(groups) != len(y)):
        raise InputError(f"y has {len(y)} samples but domains has {len(domains)}"
                         + ("" if groups is None else f" and groups {len(groups)}"))
    groups = None if groups is None else np.asarray(groups)
    splits = {}
    for domain in np.unique(domains):
        indices = np.flatnonzero(domains == domain)
        units, members = _group_units(indices, None if groups is None else groups[indices])
        reason = _unstratified_reason(y[units], test_size)
        if len(units) < 2:
            train, test = units, units[:0]
        else:
            train, test = train_test_split(units, test_size=test_size, random_state=domain_seed(seed, domain),
                                           stratify=None if reason else y[units])
        if reason:
            logger.warning("domain %r (seed %d): unstratified split: %s", domain, seed, reason)
        train, test = members(train), members(test)
        splits[str(domain)] = DomainSplit(str(domain), np.sort(train), np.sort(test), not reason, reason)
    return splits


def _group_units(indices: np.ndarray, keys: np.ndarray | None) -> tuple[np.ndarray, Callable]:
    """(one representative sample per group, in order of first appearance; a function mapping chosen
    representatives to every sample of their groups). Without keys every sample is its own group."""
    if keys is None:
        return indices, lambda chosen: chosen
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    representative_of = indices[first][inverse]  # per sample, its group's representative

    def members(chosen: np.ndarray) -> np.ndarray:
        return indices[np.isin(representative_of, chosen)]

    return indices[np.sort(first)], members


def _unstratified_reason(labels: np.ndarray, test_size: float) -> str:
    """Why a stratified split of one domain's ``labels`` is impossible, or "" when it is possible."""
    n = len(labels)
    if n < 2:
        return f"{n} sample(s): no test part"
    counts = Counter(labels.tolist())
    rarest, n_rarest = min(counts.items(), key=lambda item: (item[1], str(item[0])))
    if n_rarest < 2:
        return f"class {rarest!r} has {n_rarest} sample"
    n_test = math.ceil(test_size * n)
    if min(n_test, n - n_test) < len(counts):
        return f"a {n_test}/{n - n_test} test/train split cannot hold all {len(counts)} classes"
    return ""


SHOT_SELECTION = "per class, the k group keys of smallest sha256('<seed>:<key>')"
"""How :func:`few_shot_selection` picks the labelled cells of a held-out domain (recorded with results)."""


def shot_rank(seed: int, key: str) -> str:
    """The rank key of a sample's group ``key`` under ``seed``: hex sha256 of ``"<seed>:<key>"`` (stable across
    runs, machines and the order of the data)."""
    return hashlib.sha256(f"{int(seed)}:{key}".encode("utf-8")).hexdigest()


def few_shot_selection(labels, k: int, seed: int = 0, *, keys=None, candidates=None) -> np.ndarray:
    """The k labelled samples per class of a held-out domain that every few-shot method uses (sorted int64
    indices): the one selection shared by ``aecfe-adapt``, the embedding-head few-shot rows and the deep few-shot
    fine-tuning (whole images keyed by their SHA-1, or crops), so all of them see the same k labelled cells.

    Args:
        labels: (N,) class labels (any hashable; compared as given).
        k: groups per class (>= 1); a class with fewer groups gives all of them.
        seed: the selection seed.
        keys: (N,) group keys, e.g. each cell's image content hash (:meth:`aecfe.store.CellStore.cell_groups`);
            None = each sample is its own group, keyed by its index (then the choice depends on the order).
        candidates: indices to choose among (default all), e.g. the held-out domain's samples.

    Rule (:data:`SHOT_SELECTION`): for every class c, the groups holding a candidate of class c are ranked by
    :func:`shot_rank` (seed, key) (ties by key) and the first k taken; every candidate of class c in those groups
    is returned. The choice depends only on (seed, the keys and labels of the candidates), never on their order,
    so a store's cells and a crop dataset of the same images, in any order, give the same groups. With keys that
    are image content hashes, k groups are k images: k cells per class for single-cell images.
    """
    if k < 1:
        raise InputError(f"shots per class must be >= 1, got {k}")
    labels = np.asarray(labels)
    pool = np.arange(len(labels)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    keys = np.arange(len(labels)).astype(str) if keys is None else np.asarray(keys).astype(str)
    if len(keys) != len(labels):
        raise InputError(f"keys has {len(keys)} entries for {len(labels)} labels")
    chosen = []
    for label in sorted(set(labels[pool].tolist()), key=str):
        members = pool[labels[pool] == label]
        groups = sorted(set(keys[members].tolist()), key=lambda key: (shot_rank(seed, key), key))[:k]
        chosen.append(members[np.isin(keys[members], groups)])
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.empty(0, dtype=np.int64)
