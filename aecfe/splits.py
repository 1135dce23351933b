"""Per-domain training/test splits shared by every cross-domain protocol (base layer: the evaluation, the deep
DG estimator and any baseline import it, so all of them split a domain the same way).

Every domain is split once per seed into a training part (``1 - test_size``) and a test part (``test_size``),
stratified by class when every class has >= 2 samples and both parts can hold every class, and otherwise
unstratified (the reason is logged and kept in :attr:`DomainSplit.reason`). The split of a domain depends only
on (seed, domain name, that domain's labels), not on the other domains. With ``groups`` (one key per sample)
each group is split as one unit (see :func:`domain_splits`).

Example::

    splits = domain_splits(y, domains, seed=0)          # {domain: DomainSplit(train=..., test=...)}
    X_train = X[splits["lab_a"].train]
"""
from __future__ import annotations

import dataclasses
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
