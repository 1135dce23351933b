"""SADA's stain augmentation (classifiers/dg/stain.py): percentiles, SNMF, k-means, re-staining."""
import numpy as np
import pytest
import torch

from classifiers.dg.data import synthetic_dataset
from classifiers.dg.stain import (choose_donors, estimate_stains, kmeans, optical_density, percentile, snmf,
                                  stain_augment, whiten_dark_pixels)


@pytest.fixture(scope="module")
def three_labs():
    data = synthetic_dataset(6, size=48)
    return torch.stack([data.image(i) for i in range(len(data))]), torch.as_tensor(data.domain_ids)


def test_percentile_equals_torch_quantile():
    x = torch.rand(3, 2, 101)
    for q in (0, 1, 37.3, 50, 99, 100):
        assert torch.allclose(percentile(x, q), torch.quantile(x, q / 100, dim=-1), atol=1e-6)


def test_snmf_recovers_a_two_stain_mixture():
    generator = torch.Generator().manual_seed(0)
    w_true = torch.nn.functional.normalize(torch.tensor([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]]), dim=0)
    h_true = torch.rand(2, 400, generator=generator) * (torch.rand(2, 400, generator=generator) > 0.3)
    v = (w_true @ h_true)[None]
    w, h = snmf(v, iterations=50)
    error = (w @ h - v).norm() / v.norm()
    assert error < 0.1
    assert torch.allclose(w.norm(dim=1), torch.ones(1, 2), atol=1e-5) and (h >= 0).all()


def test_kmeans_finds_separated_groups_is_seeded_and_fills_every_cluster():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]])
    points = (centres[:, None] + 0.1 * torch.randn(3, 10, 2, generator=generator)).reshape(30, 2)
    labels, found = kmeans(points, 3, generator=torch.Generator().manual_seed(1))
    truth = torch.arange(3).repeat_interleave(10)
    assert all(len(torch.unique(labels[truth == g])) == 1 for g in range(3))
    assert len(torch.unique(labels)) == 3
    again, _ = kmeans(points, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(labels, again)
    duplicates, _ = kmeans(torch.zeros(4, 2), 3, generator=torch.Generator().manual_seed(0))
    assert duplicates.shape == (4,)


def test_donors_come_from_each_other_cluster_and_degenerate_batches_still_get_views():
    clusters = torch.tensor([0, 0, 1, 2, 2])
    donors = choose_donors(clusters, 2, torch.Generator().manual_seed(0))
    for i in range(5):
        assert sorted(clusters[donors[i]].tolist()) == sorted(c for c in (0, 1, 2) if c != clusters[i])
    assert choose_donors(torch.tensor([0]), 2).tolist() == [[0, 0]]
    one_cluster = choose_donors(torch.tensor([0, 0, 0]), 2, torch.Generator().manual_seed(0))
    assert all(i not in one_cluster[i].tolist() for i in range(3))


def test_dark_pixels_become_white():
    x = torch.full((1, 3, 2, 2), 0.5)
    x[0, :, 0, 0] = 0.01
    x[0, 0, 1, 1] = 0.01  # one dark channel only: kept
    out = whiten_dark_pixels(x)
    assert out[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and out[0, 0, 1, 1] == pytest.approx(0.01)


def test_stain_augmentation_changes_colour_and_keeps_density_structure(three_labs):
    x, domains = three_labs
    views, clusters = stain_augment(x, 3, generator=torch.Generator().manual_seed(0), return_clusters=True)
    n = len(x)
    assert views.shape == (3 * n, *x.shape[1:]) and torch.isfinite(views).all()
    assert views.min() >= 0 and views.max() <= 1
    views = views.view(n, 3, *x.shape[1:])
    assert torch.equal(views[:, 0], whiten_dark_pixels(x))  # raw views first, unchanged
    # pseudo-domains follow the labs' stains
    purity = np.mean([(clusters[domains == lab] == torch.mode(clusters[domains == lab]).values).float().mean()
                      for lab in range(3)])
    assert purity > 0.8
    raw_od = optical_density(views[:, 0]).norm(dim=1)
    correlations, colour_shift = [], []
    for t in (1, 2):
        od = optical_density(views[:, t]).norm(dim=1)
        correlations += [np.corrcoef(a.numpy(), b.numpy())[0, 1] for a, b in zip(raw_od, od)]
        colour_shift.append((views[:, t].mean(dim=(2, 3)) - views[:, 0].mean(dim=(2, 3))).abs().sum(1))
    assert np.median(correlations) > 0.9
    assert torch.cat(colour_shift).median() > 0.1


def test_restained_views_carry_another_stain_estimate(three_labs):
    x, _ = three_labs
    params = estimate_stains(whiten_dark_pixels(x))
    views = stain_augment(x, 3, jitter=None, generator=torch.Generator().manual_seed(0))
    views = views.view(len(x), 3, *x.shape[1:])
    # the stain colour bases estimated on a re-stained view differ from those of its source image
    restained_w = estimate_stains(views[:, 1]).w.flatten(1)
    source_w = params.w.flatten(1)
    moved = (restained_w - source_w).norm(dim=1)
    assert moved.median() > 0.05


def test_degenerate_batches_give_k_views_each():
    one = stain_augment(torch.rand(1, 3, 8, 8) * 0.5 + 0.3, 3, generator=torch.Generator().manual_seed(0))
    same = stain_augment(torch.full((2, 3, 8, 8), 0.6), 3, generator=torch.Generator().manual_seed(0))
    assert one.shape == (3, 3, 8, 8) and same.shape == (6, 3, 8, 8)
    assert torch.isfinite(one).all() and torch.isfinite(same).all()
