"""Loss terms of the deep DG algorithms, as plain functions with their formulas and shapes.

* :func:`mean_cov_distance`, :func:`pairwise_mean_cov` — DomainBed's CORAL "mean_cov" penalty (METHODS §3.2),
  also BoDA's "macro alignment" term (§2.3 step 5).
* :func:`boda_loss` — BoDA's calibrated domain-class distance loss (§2.2-2.3).
* :func:`disc_loss` (SADA paper's DISC, §4.4 and §8.10) and :func:`supcon_loss` (SupCon, the SADA code's choice).
* :func:`local_alignment_loss` — SADA's LA term (§4.3).

Every function returns a scalar tensor that stays finite (and has finite gradients) on the degenerate batches
of imbalanced multi-domain data: one-sample domains, missing domain-class pairs, classes without positives.

>>> a, b = torch.randn(8, 4), torch.randn(6, 4) + 1
>>> bool(mean_cov_distance(a, b) > 0), float(mean_cov_distance(a, a))
(True, 0.0)
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor


def mean_cov_distance(a: Tensor, b: Tensor) -> Tensor:
    """mean((μ_a − μ_b)²) + mean((C_a − C_b)²) for features a (n_a, D), b (n_b, D).

    μ is the (1, D) mean and C the unbiased (D, D) covariance; both ``mean`` run over elements (DomainBed's
    normalisation, not Deep CORAL's ‖·‖²_F / 4D²). A batch of one sample has no unbiased covariance: the
    covariance term is then left out (DomainBed would return NaN).
    """
    mean_a, mean_b = a.mean(0, keepdim=True), b.mean(0, keepdim=True)
    distance = (mean_a - mean_b).pow(2).mean()
    if len(a) > 1 and len(b) > 1:
        centred_a, centred_b = a - mean_a, b - mean_b
        cov_a = centred_a.T @ centred_a / (len(a) - 1)
        cov_b = centred_b.T @ centred_b / (len(b) - 1)
        distance = distance + (cov_a - cov_b).pow(2).mean()
    return distance


def pairwise_mean_cov(features: list[Tensor]) -> Tensor:
    """Mean of :func:`mean_cov_distance` over all pairs a < b of per-domain features; 0 with fewer than two."""
    pairs = list(itertools.combinations(features, 2))
    if not pairs:
        return features[0].sum() * 0 if features else torch.zeros(())
    return torch.stack([mean_cov_distance(a, b) for a, b in pairs]).mean()


def boda_loss(features: Tensor, domains: Tensor, labels: Tensor, centroids: Tensor, counts: Tensor,
              nu: float = 0.5, temperature: float = 1.0) -> Tensor:
    """BoDA's calibrated distance loss of the reference code (METHODS §2.3, steps 1-4).

    Args:
        features: z (B, D). domains, labels: (B,) long, domain index e_i and class c_i of each sample.
        centroids: ψ (M, C, D), the mean feature of each domain-class pair (rows of absent pairs unused).
        counts: n (M, C) float, training samples per pair, ``+inf`` for an absent pair.
        nu: calibration exponent ν. temperature: τ.

    For the K existing pairs k = (e_k, c_k) and sample i with n_i = n[e_i, c_i]:

        logits[k, i] = −‖ψ_k − z_i‖₂ / n_i · (n[e_k, c_k] / n_i)^ν / τ
        log_prob[k, i] = logits[k, i] − log Σ_{k' ≠ (e_i, c_i)} exp(logits[k', i])
        L = −Σ_{(k, i) positive} log_prob[k, i] / #positives,   positive: c_k = c_i and e_k ≠ e_i.

    The loss is averaged over (sample, positive-centroid) pairs. A sample without a positive (its class exists
    in no other domain) or whose own pair is absent from ``counts`` adds nothing; with no positive at all the
    loss is 0. The reference's ε = 1e-6 inside the log is replaced by an exact log-sum-exp.
    """
    exists = torch.isfinite(counts)
    pair_domain, pair_class = exists.nonzero(as_tuple=True)  # (K,), (K,)
    n_pair = counts[pair_domain, pair_class]
    n_own = counts[domains, labels]
    known = torch.isfinite(n_own)
    n_own = torch.where(known, n_own, torch.ones_like(n_own))
    distance = torch.cdist(centroids[pair_domain, pair_class].to(features.dtype), features)  # (K, B)
    logits = -distance / n_own * (n_pair[:, None] / n_own) ** nu / temperature
    same_class = pair_class[:, None] == labels[None, :]
    same_domain = pair_domain[:, None] == domains[None, :]
    positive = same_class & ~same_domain & known[None, :]
    if not bool(positive.any()):
        return features.sum() * 0
    log_denominator = torch.logsumexp(logits.masked_fill(same_class & same_domain, float("-inf")), dim=0)
    log_prob = logits - log_denominator[None, :]
    return -log_prob[positive].sum() / positive.sum()


def disc_loss(views: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Domain-invariant supervised contrastive loss (SADA paper eq. 6, as its ``Domain_Proxy_Contrast_Loss``).

    Args:
        views: (N, k, D) L2-normalised embeddings of each raw sample (view 0) and its k − 1 re-stained views.
        labels: (N,) class of each sample (shared by its views).

    Anchor a_i = mean_t views[i, t] (not re-normalised); with the N·k embeddings z_q and P_i the embeddings of
    label y_i (own views included):

        log_prob[i, q] = a_i·z_q / τ − log Σ_{q'} exp(a_i·z_{q'} / τ)      (all N·k in the denominator)
        L = −mean_i Σ_{p ∈ P_i} log_prob[i, p] / (|P_i| + 1e-6)
    """
    n, k, _ = views.shape
    anchors = views.mean(dim=1)  # (N, D)
    embeddings = views.reshape(n * k, -1)
    logits = anchors @ embeddings.T / temperature  # (N, N·k)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels.repeat_interleave(k)[None, :]).to(log_prob.dtype)
    return -((positive * log_prob).sum(1) / (positive.sum(1) + 1e-6)).mean()


def supcon_loss(embeddings: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised contrastive loss (Khosla et al.), every embedding an anchor (the SADA code's loss).

    Args:
        embeddings: (M, D) L2-normalised. labels: (M,).

    log_prob[i, q] = z_i·z_q / τ − log Σ_{q' ≠ i} exp(z_i·z_{q'} / τ);
    L = −mean over anchors with a positive of Σ_{p ≠ i, y_p = y_i} log_prob[i, p] / |P_i|  (0 if none has one).
    """
    m = len(embeddings)
    logits = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(m, dtype=torch.bool, device=embeddings.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    n_positive = positive.sum(1)
    has_positive = n_positive > 0
    if not bool(has_positive.any()):
        return embeddings.sum() * 0
    per_anchor = log_prob.masked_fill(~positive, 0).sum(1)[has_positive] / n_positive[has_positive]
    return -per_anchor.mean()


def local_alignment_loss(local: Tensor) -> Tensor:
    """SADA's local alignment (code form, METHODS §4.3): (1/(k−1)) Σ_t mean((Ê_raw − Ê_t)²).

    Args:
        local: (N, k, C, h, w) projected last-conv maps, L2-normalised over C at each position; view 0 raw.

    The mean runs over N·C·h·w elements (the paper's sum divided by N·C·h·w). 0 when k = 1.
    """
    if local.shape[1] < 2:
        return local.sum() * 0
    return (local[:, 1:] - local[:, :1]).pow(2).mean(dim=(0, 2, 3, 4)).mean()

