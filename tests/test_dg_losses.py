"""Loss terms of the deep DG algorithms (classifiers/dg/losses.py) against loop references and on degenerate
batches (missing domain-class pairs, one-sample domains)."""
import math

import pytest
import torch

from classifiers.dg.losses import (boda_loss, disc_loss, local_alignment_loss, mean_cov_distance,
                                   pairwise_mean_cov, supcon_loss)


INF = float("inf")


def test_mean_cov_distance_is_domainbed_mean_cov_and_finite_for_one_sample():
    torch.manual_seed(0)
    a, b = torch.randn(7, 3), torch.randn(5, 3) * 2 + 1
    expected = ((a.mean(0) - b.mean(0)) ** 2).mean() + ((torch.cov(a.T) - torch.cov(b.T)) ** 2).mean()
    assert torch.allclose(mean_cov_distance(a, b), expected, atol=1e-6)
    single = mean_cov_distance(a[:1], b)
    assert torch.isfinite(single) and torch.allclose(single, ((a[0] - b.mean(0)) ** 2).mean())
    assert float(pairwise_mean_cov([a])) == 0.0
    three = pairwise_mean_cov([a, b, a])
    assert torch.allclose(three, (2 * mean_cov_distance(a, b)) / 3)


def boda_reference(z, d, c, centroids, counts, nu, tau):
    """Loop form of METHODS §2.3 steps 1-4."""
    pairs = [(e, k) for e in range(counts.shape[0]) for k in range(counts.shape[1]) if math.isfinite(counts[e, k])]
    total, n_pos = 0.0, 0
    for i in range(len(z)):
        n_i = float(counts[d[i], c[i]])
        if not math.isfinite(n_i):
            continue
        logits = {p: -float(torch.dist(centroids[p], z[i])) / n_i * (float(counts[p]) / n_i) ** nu / tau
                  for p in pairs}
        denominator = sum(math.exp(v) for p, v in logits.items() if p != (int(d[i]), int(c[i])))
        for p in pairs:
            if p[1] == c[i] and p[0] != d[i]:
                total += -(logits[p] - math.log(denominator))
                n_pos += 1
    return total / n_pos if n_pos else 0.0


def boda_case():
    torch.manual_seed(1)
    counts = torch.tensor([[10.0, 4.0, INF], [3.0, INF, 6.0], [1.0, 2.0, 2.0]])  # missing pairs
    centroids = torch.randn(3, 3, 5)
    z = torch.randn(7, 5, requires_grad=True)
    d = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    c = torch.tensor([0, 1, 0, 2, 0, 1, 2])
    return z, d, c, centroids, counts


def test_boda_loss_matches_the_loop_reference_with_missing_pairs():
    z, d, c, centroids, counts = boda_case()
    loss = boda_loss(z, d, c, centroids, counts, nu=0.5, temperature=0.7)
    assert loss.item() == pytest.approx(boda_reference(z.detach(), d, c, centroids, counts, 0.5, 0.7), rel=1e-5)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_boda_samples_without_positive_or_with_absent_pair_add_nothing():
    z, d, c, centroids, counts = boda_case()
    base = boda_loss(z, d, c, centroids, counts)
    # class 2 of domain 1: also in domain 2 -> has a positive; add a sample of an absent pair (0, 2) and
    # a sample of a class present in a single domain
    counts_one = counts.clone()
    counts_one[:, 1] = torch.tensor([INF, INF, 2.0])
    extra_z = torch.cat([z, torch.randn(1, 5)])
    with_absent = boda_loss(extra_z, torch.cat([d, torch.tensor([0])]), torch.cat([c, torch.tensor([2])]),
                            centroids, counts)
    assert with_absent.item() == pytest.approx(base.item(), rel=1e-6)
    only_here = boda_loss(z, d, c, centroids, counts_one)
    keep = c != 1
    assert only_here.item() == pytest.approx(boda_loss(z[keep], d[keep], c[keep], centroids, counts_one).item(),
                                             rel=1e-6)


def test_boda_loss_is_zero_and_differentiable_without_any_positive():
    z = torch.randn(3, 4, requires_grad=True)
    counts = torch.tensor([[5.0, INF], [INF, 5.0]])  # no class in two domains
    loss = boda_loss(z, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), torch.zeros(2, 2, 4), counts)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


def test_boda_loss_finite_when_features_sit_on_centroids():
    counts = torch.tensor([[1.0, 2.0], [1.0, 3.0]])
    z = torch.zeros(2, 4, requires_grad=True)
    loss = boda_loss(z, torch.tensor([0, 1]), torch.tensor([0, 1]), torch.zeros(2, 2, 4), counts)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_disc_loss_matches_the_formula():
    torch.manual_seed(2)
    n, k = 4, 3
    views = torch.nn.functional.normalize(torch.randn(n, k, 6), dim=-1)
    labels = torch.tensor([0, 1, 0, 2])
    tau = 0.1
    flat, flat_labels = views.reshape(n * k, 6), labels.repeat_interleave(k)
    expected = 0.0
    for i in range(n):
        anchor = views[i].mean(0)
        logits = flat @ anchor / tau
        log_prob = logits - torch.logsumexp(logits, 0)
        positives = flat_labels == labels[i]
        expected += -log_prob[positives].sum() / (positives.sum() + 1e-6)
    assert disc_loss(views, labels, tau).item() == pytest.approx(float(expected) / n, rel=1e-5)


def test_supcon_matches_khosla_and_ignores_anchors_without_positive():
    torch.manual_seed(3)
    z = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])  # label 2 has no positive
    tau = 0.5
    losses = []
    for i in range(6):
        others = [j for j in range(6) if j != i]
        positives = [j for j in others if labels[j] == labels[i]]
        if not positives:
            continue
        logits = torch.stack([z[i] @ z[j] / tau for j in others])
        log_denominator = torch.logsumexp(logits, 0)
        losses.append(-sum(z[i] @ z[p] / tau - log_denominator for p in positives) / len(positives))
    assert supcon_loss(z, labels, tau).item() == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)
    assert supcon_loss(z[:1], labels[:1]).item() == 0.0


def test_local_alignment_is_zero_for_identical_views_and_averages_views():
    local = torch.randn(2, 1, 4, 3, 3).expand(2, 3, 4, 3, 3).clone()
    assert local_alignment_loss(local).item() == 0.0
    local[:, 2] += 1.0
    assert local_alignment_loss(local).item() == pytest.approx(0.5)
    assert local_alignment_loss(local[:, :1]).item() == 0.0
