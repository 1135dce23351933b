"""benchmarks/extraction_speed.py's table logic (the measurements themselves run in the program, not in the suite)."""
import extraction_speed as bench


def test_rows_turn_medians_into_cells_per_second(monkeypatch):
    canned = {
        "measure_training": {"step_seconds": 2.0, "peak_rss_mb": 900.0, "losses": [], "batch_size": 256},
        "measure_detect_encode": {"cells": 12, "detect_seconds": 3.0, "encode_seconds": 1.0, "peak_rss_mb": 1500.0},
        "measure_pipeline": {"cells": 12, "seconds": 6.0, "peak_rss_mb": 1600.0},
    }
    calls = []
    monkeypatch.setattr(bench, "in_fresh_process", lambda function, *args: calls.append(args) or canned[function.__name__])
    args = bench.build_parser().parse_args(["--train-batches", "256", "--images", "12", "--threads", "1"])
    rows, raw = bench.run_benchmarks(args)
    by_name = {row["workload"]: row for row in rows}
    assert by_name["train_ae"]["cells_per_s"] == 128.0 and by_name["train_ae"]["peak_rss_mb"] == 900.0
    assert by_name["detect+encode"]["cells_per_s"] == 3.0
    assert by_name["encode"]["cells_per_s"] == 12.0
    assert by_name["pipeline"]["cells_per_s"] == 2.0
    assert calls[0] == ("optimised", 256, 2, 1)
    table = bench.format_table(rows)
    assert table.splitlines()[0].startswith("| workload") and "detect+encode" in table


def test_detect_encode_and_pipeline_measurements_run_in_process(tmp_path):
    """The workloads themselves, smoke-sized (2 images, untrained detector at 128 px): one cell per image."""
    import torch

    threads = torch.get_num_threads()  # the measurement sets it process-wide: keep the suite's value
    options = (2, 128, "mobilenet_v2", None, 128, 128, 2, 2, 1, threads)
    run = bench.measure_detect_encode(*options)
    assert run["cells"] == 2 and run["detect_seconds"] > 0 and run["encode_seconds"] > 0 and run["peak_rss_mb"] > 0
    pipeline = bench.measure_pipeline(*options)
    assert pipeline["cells"] == 2 and pipeline["seconds"] > 0
