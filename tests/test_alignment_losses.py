"""Alignment losses (extractors/losses.py): reference formulas, pairing, small-domain rules, registry, total loss."""
import io
import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from aecfe.errors import InputError
from extractors.losses import (ALIGNMENT_LOSSES, AdversarialAlignment, AECFELoss, CodeVarianceFloor, CORALLoss,
                               KernelMMDLoss, MomentMatchingLoss, NormalAlignmentLoss, make_alignment_loss)


def codes(n, dim=50, seed=0, shift=0.0):
    return torch.tanh(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + shift)


def reference_calculate_mmd(z_s, z_t):
    """The reference code's pair loss, written as it is there: MSE of means + symmetric KLDivLoss('mean')."""
    mean_term = nn.MSELoss()(z_s.mean(0), z_t.mean(0))
    p_s, p_t = F.softmax(torch.cov(z_s.T), dim=0), F.softmax(torch.cov(z_t.T), dim=0)
    kl = nn.KLDivLoss()  # reduction 'mean': element sum / D²
    return mean_term + 0.5 * (kl(p_s.log(), p_t) + kl(p_t.log(), p_s))


@pytest.mark.filterwarnings("ignore:reduction")
def test_moment_matching_equals_reference_code_summed_over_source_pairs():
    z = torch.cat([codes(7, seed=1), codes(5, seed=2, shift=0.3), codes(6, seed=3, shift=-0.2)])
    domains = torch.tensor([0] * 7 + [1] * 5 + [2] * 6)
    expected = reference_calculate_mmd(z[:7], z[7:12]) + reference_calculate_mmd(z[:7], z[12:])
    assert torch.allclose(MomentMatchingLoss()(z, domains), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.filterwarnings("ignore:reduction")
def test_all_pairs_adds_the_pairs_between_targets():
    z = torch.cat([codes(4, seed=1), codes(4, seed=2, shift=0.3), codes(4, seed=3, shift=-0.2)])
    domains = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    source = MomentMatchingLoss(pairing="source")(z, domains)
    everything = MomentMatchingLoss(pairing="all")(z, domains)
    assert torch.allclose(everything, source + reference_calculate_mmd(z[4:8], z[8:]), rtol=1e-5)


def test_source_pairing_is_zero_without_the_source_domain_and_respects_source_choice():
    z = codes(6)
    domains = torch.tensor([1, 1, 1, 2, 2, 2])
    assert float(MomentMatchingLoss(source_domain=0)(z, domains)) == 0.0
    assert float(MomentMatchingLoss(source_domain=1)(z, domains)) > 0.0


def test_singleton_domain_keeps_the_mean_term_and_drops_the_covariance_term():
    z = torch.cat([codes(5, seed=1), codes(1, seed=2)])
    domains = torch.tensor([0] * 5 + [1])
    expected = F.mse_loss(z[:5].mean(0), z[5])
    assert torch.allclose(MomentMatchingLoss()(z, domains), expected)


def literal_mmd2(x, y, sigmas, unbiased):
    def k(a, b):
        return sum(torch.exp(-((a - b) ** 2).sum() / (2 * s * s)) for s in sigmas) / len(sigmas)
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j or not unbiased)
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j or not unbiased)
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
    if unbiased:
        return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2 * kxy / (m * n)
    return kxx / m ** 2 + kyy / n ** 2 - 2 * kxy / (m * n)


@pytest.mark.parametrize("unbiased", [True, False])
def test_kernel_mmd_matches_literal_double_sum(unbiased):
    x, y = codes(5, dim=4, seed=1), codes(4, dim=4, seed=2, shift=0.5)
    loss = KernelMMDLoss(bandwidths=(0.5, 2.0), unbiased=unbiased)
    domains = torch.tensor([0] * 5 + [1] * 4)
    expected = literal_mmd2(x, y, (0.5, 2.0), unbiased)
    assert torch.allclose(loss(torch.cat([x, y]), domains), expected.float(), atol=1e-6)


def test_kernel_mmd_separates_shifted_from_same_distribution():
    same = torch.cat([codes(60, dim=8, seed=1), codes(60, dim=8, seed=2)])
    shifted = torch.cat([codes(60, dim=8, seed=1), codes(60, dim=8, seed=2, shift=1.0)])
    domains = torch.tensor([0] * 60 + [1] * 60)
    loss = KernelMMDLoss()  # median heuristic
    assert abs(float(loss(same, domains))) < 0.02
    assert float(loss(shifted, domains)) > 0.1


def test_coral_matches_deep_coral_formula_and_optional_mean_term():
    x, y = codes(6, dim=5, seed=1), codes(7, dim=5, seed=2, shift=0.4)
    z, domains = torch.cat([x, y]), torch.tensor([0] * 6 + [1] * 7)
    cov_term = ((torch.cov(x.T) - torch.cov(y.T)) ** 2).sum() / (4 * 25)
    assert torch.allclose(CORALLoss()(z, domains), cov_term)
    mean_term = ((x.mean(0) - y.mean(0)) ** 2).mean()
    assert torch.allclose(CORALLoss(mean_weight=2.0)(z, domains), cov_term + 2.0 * mean_term)


def test_normal_alignment_analytic_formula_sums_over_every_domain():
    z = torch.cat([codes(5, dim=6, seed=1), codes(4, dim=6, seed=2, shift=0.5)])
    domains = torch.tensor([0] * 5 + [1] * 4)
    log_identity = F.log_softmax(torch.eye(6), dim=0)

    def per_domain(zk):
        log_p = F.log_softmax(torch.cov(zk.T), dim=0)
        return (zk.mean(0) ** 2).mean() + 0.5 * ((log_p.exp() - log_identity.exp()) * (log_p - log_identity)).mean()

    expected = per_domain(z[:5]) + per_domain(z[5:])
    assert torch.allclose(NormalAlignmentLoss()(z, domains), expected, atol=1e-7)


def test_normal_alignment_sampled_is_reproducible_from_its_saved_state():
    z, domains = codes(8, seed=1), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    loss = NormalAlignmentLoss(reference="sampled", seed=3)
    state = loss.state_dict()
    first = loss(z, domains)
    assert not torch.equal(first, loss(z, domains))  # fresh draws each call
    again = NormalAlignmentLoss(reference="sampled", seed=99)
    again.load_state_dict(state)
    assert torch.equal(again(z, domains), first)


def test_adversarial_discriminator_learns_and_generator_loss_pulls_targets_to_source():
    torch.manual_seed(0)
    adversarial = AdversarialAlignment(bottleneck=8, n_domains=3)
    z = torch.cat([codes(16, dim=8, seed=1, shift=-1.0), codes(16, dim=8, seed=2), codes(16, dim=8, seed=3, shift=1.0)])
    domains = torch.tensor([0] * 16 + [1] * 16 + [2] * 16)
    losses = [float(adversarial.discriminator_step(z, domains)) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]
    z_var = z.clone().requires_grad_()
    before = adversarial.generator_loss(z_var, domains)
    before.backward()
    assert z_var.grad[:16].abs().sum() == 0  # source codes get no adversarial gradient
    with torch.no_grad():
        after = adversarial.generator_loss(z - 0.5 * z_var.grad / z_var.grad.abs().max(), domains)
    assert after < before
    assert float(adversarial.generator_loss(z[:16], domains[:16])) == 0.0


def test_adversarial_state_round_trips_through_weights_only_load():
    adversarial = AdversarialAlignment(bottleneck=8, n_domains=2)
    z, domains = codes(6, dim=8), torch.tensor([0, 0, 0, 1, 1, 1])
    adversarial.discriminator_step(z, domains)
    buffer = io.BytesIO()
    torch.save(adversarial.state_dict(), buffer)
    buffer.seek(0)
    restored = AdversarialAlignment(bottleneck=8, n_domains=2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(adversarial.discriminator_step(z, domains), restored.discriminator_step(z, domains))
    for a, b in zip(adversarial.parameters(), restored.parameters()):
        assert torch.equal(a, b)


def test_registry_builds_every_loss_and_rejects_unknown_names_and_options():
    for name in ALIGNMENT_LOSSES:
        assert isinstance(make_alignment_loss(name, bottleneck=50, n_domains=3, source_domain=0), nn.Module)
    with pytest.raises(InputError, match="unknown alignment loss"):
        make_alignment_loss("wasserstein")
    with pytest.raises(InputError, match="takes no option"):
        make_alignment_loss("mmd", unbiased=True)


def test_total_loss_is_feature_plus_image_plus_beta_alignment():
    loss = AECFELoss("mmd", beta=5.0)
    gen = torch.Generator().manual_seed(0)
    z = codes(4)
    h, h_hat = torch.rand(4, 256, 14, 14, generator=gen), torch.rand(4, 256, 14, 14, generator=gen)
    r, r_hat = torch.rand(4, 3, 128, 128, generator=gen), torch.rand(4, 3, 128, 128, generator=gen)
    terms = loss(z, h_hat, r_hat, h, r, torch.tensor([0, 0, 1, 1]))
    assert torch.allclose(terms["total"], terms["feature"] + terms["image"] + 5.0 * terms["alignment"])
    assert terms["alignment"] > 0 and terms["image"] > 0


# --- every loss stays finite, with finite gradients, for any batch composition -----------------------------------

CONFIGS = [("mmd", {}), ("mmd", {"pairing": "all"}), ("kmmd", {}), ("kmmd", {"unbiased": False, "pairing": "all"}),
           ("kmmd", {"bandwidths": (1.0,)}), ("nd", {}), ("nd", {"reference": "sampled"}), ("coral", {}),
           ("coral", {"mean_weight": 1.0, "pairing": "all"}), ("adversarial", {}), ("none", {})]


@settings(max_examples=60, deadline=None)
@given(domain_list=st.lists(st.integers(0, 3), min_size=1, max_size=12), dim=st.sampled_from([1, 3, 50]),
       seed=st.integers(0, 2 ** 16), identical=st.booleans())
@example(domain_list=[0], dim=50, seed=0, identical=False)
@example(domain_list=[2, 2, 2, 2], dim=50, seed=0, identical=False)
@example(domain_list=[0, 1], dim=50, seed=0, identical=True)
@example(domain_list=[0, 0, 3], dim=3, seed=1, identical=True)
def test_every_loss_is_finite_with_finite_gradients(domain_list, dim, seed, identical):
    z = codes(len(domain_list), dim=dim, seed=seed)
    if identical:  # all codes equal: zero variances and distances
        z = z[:1].expand_as(z).clone()
    z.requires_grad_()
    domains = torch.tensor(domain_list)
    for name, options in CONFIGS:
        loss_fn = make_alignment_loss(name, bottleneck=dim, n_domains=4, source_domain=0, **options)
        value = loss_fn(z, domains)
        (grad,) = torch.autograd.grad(value, z)
        assert value.shape == () and torch.isfinite(value), (name, options)
        assert torch.isfinite(grad).all(), (name, options)
        if len(set(domain_list)) == 1 and name in ("mmd", "kmmd", "coral", "none"):
            assert float(value.detach()) == 0.0, (name, options)
        if name == "adversarial":
            assert torch.isfinite(loss_fn.discriminator_step(z, domains))


def test_pairs_listing_for_both_pairings():
    assert MomentMatchingLoss().pairs([0, 1, 3]) == [(0, 1), (0, 3)]
    assert MomentMatchingLoss(pairing="all").pairs([0, 1, 3]) == list(itertools.combinations([0, 1, 3], 2))


# --- collapse-proof alignment: standardised codes and the variance floor ------------------------------------------

@pytest.mark.parametrize("name", ["mmd", "kmmd", "coral", "nd"])
def test_standardized_alignment_cannot_be_lowered_by_shrinking_the_code(name):
    z = torch.cat([codes(8, seed=1), codes(8, seed=2, shift=0.4)])
    domains = torch.tensor([0] * 8 + [1] * 8)
    raw = make_alignment_loss(name, n_domains=2)
    standardized = make_alignment_loss(name, n_domains=2, standardize=True)
    # the raw moment losses fall as the code shrinks toward a constant: their trivial minimum (kmmd's median
    # bandwidth follows the scale in value, but it is detached, so its gradient still shrinks the code) ...
    if name != "kmmd":
        assert float(raw(0.01 * z, domains)) < 0.5 * float(raw(z, domains))
    # ... the standardised ones are blind to the code's scale and offset
    assert torch.isclose(standardized(0.01 * z + 0.2, domains), standardized(z, domains), rtol=1e-3)
    assert float(standardized(z, domains)) > 0


def test_standardized_alignment_gradient_has_no_component_along_the_scale():
    z = torch.cat([codes(8, seed=1), codes(8, seed=2, shift=0.4)]).requires_grad_()
    domains = torch.tensor([0] * 8 + [1] * 8)
    make_alignment_loss("mmd", standardize=True)(z, domains).backward()
    centred = z.detach() - z.detach().mean(0)
    # d/da L((1+a)·(z − mean) + mean) at a = 0 is <grad, z − mean>: zero for a scale-free loss
    assert abs(float((z.grad * centred).sum())) < 1e-4 * float(z.grad.norm() * centred.norm())


def test_standardize_is_refused_for_losses_it_does_not_apply_to():
    with pytest.raises(InputError, match="standardize"):
        make_alignment_loss("adversarial", n_domains=3, standardize=True)


def test_variance_floor_is_zero_for_spread_codes_and_pushes_a_collapsed_code_apart():
    floor = CodeVarianceFloor(gamma=0.1)
    assert float(floor(codes(64))) == 0.0
    collapsed = (0.001 * codes(64)).requires_grad_()
    loss = floor(collapsed)
    assert 0.08 < float(loss) <= 0.1  # γ − sqrt(var + eps), var ≈ 0, sqrt(eps) = 0.01
    loss.backward()
    step = collapsed.detach() - 10 * collapsed.grad  # a gradient step spreads the code
    assert float(step.std(0).mean()) > float(collapsed.detach().std(0).mean())


def test_total_loss_adds_the_variance_term_only_when_weighted():
    z, domains = codes(4), torch.tensor([0, 0, 1, 1])
    h, r = torch.rand(4, 256, 14, 14), torch.rand(4, 3, 128, 128)
    assert "variance" not in AECFELoss("mmd")(z, h, r, h, r, domains)
    terms = AECFELoss("mmd", variance_weight=2.0, variance_floor=1.0)(0 * z, h, r, h, r, domains)
    assert float(terms["variance"]) > 0.9
    assert torch.isclose(terms["total"], terms["feature"] + terms["image"] + 5 * terms["alignment"]
                         + 2 * terms["variance"])


def test_unexplained_variance_is_one_for_the_mean_cell_and_zero_for_a_perfect_reconstruction():
    h = torch.randn(16, 256, 14, 14, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.1
    loss = AECFELoss("none", feature_loss="fvu").feature_loss
    assert float(loss(h.mean(0, keepdim=True).expand_as(h), h)) == pytest.approx(1.0, rel=1e-4)
    assert float(loss(h, h)) == 0.0
    assert float(loss(0.5 * h, 0.5 * h + 0.01)) == pytest.approx(float(loss(h, h + 0.02)), rel=1e-4)  # scale-free
    with pytest.raises(InputError, match="feature loss"):
        AECFELoss("none", feature_loss="l1")


def test_each_alignment_loss_carries_its_default_beta():
    """METHODS §8.7: the adversarial generator term is weighted 1; the moment and kernel losses 5 (reference)."""
    from extractors.losses import DEFAULT_BETA, default_beta

    assert default_beta("adversarial") == 1.0 == AdversarialAlignment.default_beta
    assert {name: default_beta(name) for name in ("mmd", "kmmd", "nd", "coral")} == dict.fromkeys(
        ("mmd", "kmmd", "nd", "coral"), DEFAULT_BETA) and DEFAULT_BETA == 5.0
    assert set(ALIGNMENT_LOSSES) <= {name for name in ALIGNMENT_LOSSES if default_beta(name) >= 0}
    with pytest.raises(InputError, match="unknown alignment"):
        default_beta("xyz")
