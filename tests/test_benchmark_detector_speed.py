"""benchmarks/detector_speed.py on one small size (moved from test_detector_training.py with the program)."""
import json

from detector_speed import main


def test_detector_speed_times_one_size_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--sizes", "128", "--images", "2", "--rounds", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert rows[0]["size"] == 128 and rows[0]["extraction_over_forward"] > 0
