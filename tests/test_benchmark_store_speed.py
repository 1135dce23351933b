"""benchmarks/store_speed.py, smoke-sized: every table and the JSON results."""
import json

import numpy as np

from aecfe.shapes import ROI_SHAPE
from store_speed import ROI_OPTIONS, main, synthetic_roi_pool


def test_synthetic_roi_pool_has_the_roi_shape_and_unit_scale():
    pool = synthetic_roi_pool(3, seed=0)
    assert pool.shape == (3, *ROI_SHAPE) and pool.dtype == np.float32
    assert abs(float(pool.std()) - 1.0) < 1e-4


def test_small_run_prints_every_table_and_writes_results(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--repeats", "1", "--embedding-cells", "40", "--roi-cells", "12",
                 "--option-cells", "4", "--dim", "8"]) == 0
    printed = capsys.readouterr().out
    assert "Default layout, median of 1 passes" in printed and "Checksums on (default) and off" in printed
    results = json.loads((tmp_path / "benchmark_store.json").read_text())
    assert set(results["main"]) == {"embeddings only (D=8)", "roi float16 256x14x14"}
    assert results["main"]["roi float16 256x14x14"]["cells"] == 12
    assert len(results["options"]) == len(ROI_OPTIONS) + 3 and len(results["checksum"]) == 4
    assert all(row["write_cells_per_s"] > 0 and row["file_mb"] > 0 for row in results["options"].values())
    assert [p.name for p in tmp_path.iterdir()] == ["benchmark_store.json"]  # the scratch stores are deleted
