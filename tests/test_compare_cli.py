"""scripts/compare.py (aecfe-compare) on the synthetic labs, smoke-sized: steps, report, resume."""
import json

import pytest

from aecfe.cli.compare import main


def test_quick_run_writes_report_and_resumes(tmp_path, capsys):
    argv = ["--synthetic", "--quick", "--methods", "ERM", "--dg-inputs", "image", "--out", str(tmp_path),
            "--no-progress"]  # whole images only: no detector to train (the crop steps: test_comparison_report)
    assert main(argv) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| ERM      | ERM    |" in report and "## Cost on this machine" in report
    record = json.loads((tmp_path / "steps" / "ERM.train_dg.json").read_text())
    assert record["returncode"] == 0 and record["peak_rss_mb"] > 0
    assert main(argv) == 0  # resumed: the finished steps are not run again
    assert json.loads((tmp_path / "steps" / "ERM.train_dg.json").read_text()) == record
    assert "Ranked by LODO f1-macro" in capsys.readouterr().out


def test_real_domains_without_detector_are_refused(tmp_path):
    (tmp_path / "cls" / "lab").mkdir(parents=True)
    with pytest.raises(SystemExit, match="need --detector-checkpoint"):
        main(["--domains-root", str(tmp_path / "cls"), "--out", str(tmp_path / "out"), "--methods", "AE-CFE"])
    with pytest.raises(SystemExit, match="need --detector-checkpoint"):  # the deep baselines on crops need one too
        main(["--domains-root", str(tmp_path / "cls"), "--out", str(tmp_path / "out"), "--methods", "ERM"])
