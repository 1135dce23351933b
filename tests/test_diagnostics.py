"""Code diagnostics (extractors/diagnostics.py): spread, effective rank, linear probes, the collapse warning."""
import numpy as np

from extractors.diagnostics import code_statistics, collapse_warning, effective_rank, linear_probe


def test_effective_rank_counts_the_directions_a_code_spreads_in():
    rng = np.random.default_rng(0)
    isotropic = rng.standard_normal((2000, 10))
    assert 9.0 < effective_rank(isotropic) <= 10.0
    on_a_line = rng.standard_normal((500, 1)) * np.ones((1, 10)) + 1e-6 * rng.standard_normal((500, 10))
    assert effective_rank(on_a_line) < 1.1
    assert effective_rank(np.full((50, 10), 0.3)) == 0.0


def test_collapse_is_flagged_for_a_constant_code_and_not_for_a_live_one():
    rng = np.random.default_rng(0)
    live = np.tanh(rng.standard_normal((300, 50)))
    collapsed = 0.3 + 0.001 * rng.standard_normal((300, 50))
    assert collapse_warning(code_statistics(live)) is None
    statistics = code_statistics(collapsed)
    assert statistics["code_std"] < 0.002
    assert "CODE COLLAPSE" in collapse_warning(statistics)


def test_linear_probe_sees_class_structure_and_domain_shift():
    rng = np.random.default_rng(0)
    n = 600
    labels = rng.integers(0, 3, n)
    domains = rng.integers(0, 2, n)
    centres = rng.standard_normal((3, 8)) * 3
    codes = centres[labels] + rng.standard_normal((n, 8))
    mixed = linear_probe(codes, labels, domains)
    assert mixed["probe_f1_macro"] > 90 and mixed["domain_accuracy"] < 65  # domains carry no signal: chance 50
    shifted = linear_probe(codes + 4 * domains[:, None], labels, domains)
    assert shifted["domain_accuracy"] > 95
    noise = linear_probe(rng.standard_normal((n, 8)), labels, domains)
    assert noise["probe_f1_macro"] < 50


def test_linear_probe_leaves_out_unlabelled_cells_and_reports_nan_without_labels():
    rng = np.random.default_rng(1)
    codes = rng.standard_normal((40, 4))
    result = linear_probe(codes, np.full(40, -1), np.zeros(40, dtype=int))
    assert np.isnan(result["probe_f1_macro"]) and np.isnan(result["domain_accuracy"])
    labels = np.where(np.arange(40) < 20, np.arange(40) % 2, -1)
    assert np.isfinite(linear_probe(codes, labels, np.zeros(40, dtype=int))["probe_f1_macro"])
