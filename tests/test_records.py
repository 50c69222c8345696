"""mgr_batch.execution.records: run.json and config.yaml beside an output, and the lost-files check."""

from __future__ import annotations

import json

import pytest
import yaml

from mgr_batch.config import SegmentConfig
from mgr_batch.execution import records


def test_run_record_writes_the_summary_and_the_redacted_config(tmp_path):
    cfg = SegmentConfig(input="in", output=str(tmp_path), storage_options={"key": "AKIA", "endpoint_url": "http://x"})
    records.write_run_record(str(tmp_path), {"n_songs": 2, "output": str(tmp_path)}, cfg, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "run.json"]
    assert json.loads((tmp_path / "run.json").read_text()) == {"n_songs": 2, "output": str(tmp_path)}
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["input"] == "in"
    assert written["storage_options"] == {"key": "***", "endpoint_url": "http://x"}


def test_run_record_under_another_name(tmp_path):
    records.write_run_record(str(tmp_path), {"folds": 2}, SegmentConfig(), None, name="cv.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "cv.json"]


def test_every_file_accounted():
    records.check_every_file_accounted(5, 3, 2)
    with pytest.raises(RuntimeError, match=r"^lost files: 5 listed, 3 songs \+ 1 errors$"):
        records.check_every_file_accounted(5, 3, 1)
