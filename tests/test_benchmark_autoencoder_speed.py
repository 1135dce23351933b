"""benchmarks/autoencoder_speed.py's pieces (the full run takes minutes and is not part of the suite)."""
import math

import pytest
import torch

from autoencoder_speed import build_model, loss_differences, measure_encoding, measure_training, synthetic_cells


def test_synthetic_cells_have_the_trainer_shapes_and_three_domains():
    roi, crops, domains = synthetic_cells(5)
    assert roi.shape == (5, 256, 14, 14) and crops.shape == (5, 3, 128, 128) and crops.dtype.name == "uint8"
    assert sorted(set(domains.tolist())) == [0, 1, 2]


def test_loss_differences_reports_the_largest_relative_gap_per_term():
    a = [{"total": 1.0, "image": 0.5}, {"total": 2.0, "image": 0.5}]
    b = [{"total": 1.0, "image": 0.4}, {"total": 1.0, "image": 0.5}]
    assert loss_differences(a, b) == pytest.approx({"total": 1.0, "image": 0.25})


def test_training_and_encoding_measurements_run_in_process():
    threads = torch.get_num_threads()  # the measurement sets it process-wide: keep the suite's value
    run = measure_training("reference", batch_size=2, steps=1, threads=threads)
    assert len(run["losses"]) == 2 and all(math.isfinite(v) for v in run["losses"][0].values())
    assert run["step_seconds"] > 0 and run["peak_rss_mb"] > 0
    assert measure_encoding(cells=4, batch_size=2, threads=threads)["cells_per_second"] > 0


def test_reference_ops_baseline_computes_the_same_model_as_the_fused_group_norm():
    torch.manual_seed(0)
    fused = build_model("chunk")
    baseline = build_model("reference-ops")
    baseline.load_state_dict(fused.state_dict())
    h = fused.scale_input(torch.as_tensor(synthetic_cells(2)[0]))
    assert torch.allclose(fused.encode(h), baseline.encode(h), atol=1e-5)
