"""mgr_batch.output across runs: every table of a run exists after it, empty with its schema when it has no rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from audio_factory import write_tone

from mgr_batch import output, schemas
from mgr_batch.cli import main
from mgr_batch.config import GTZAN_GENRES

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _columns(out: Path, table: str) -> list[str]:
    return list(pd.read_parquet(out / table).columns)


def test_every_table_exists_after_a_run_even_with_no_rows(tmp_path, tiny_crnn):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        write_tone(src / f"t{i}.wav", seconds=3.0, freq=300.0 + 100 * i)
    tag = ["tag", str(src), "--output", str(out), "--model", tiny_crnn, "--timeline"]
    assert main(tag) == 0
    errors = pd.read_parquet(out / "errors")  # the README's example: a run with no errors still has the table
    assert errors.empty and list(errors.columns) == schemas.arrow_schema("errors").names
    assert pq.read_schema(out / "errors" / output.EMPTY_PART).equals(schemas.arrow_schema("errors"), check_metadata=False)
    assert len(pd.read_parquet(out / "songs")) == 2

    (src / "bad.wav").write_bytes(b"RIFF not audio")  # the rerun writes an error row: the empty part goes
    assert main(tag) == 0
    assert len(pd.read_parquet(out / "errors")) == 1 and not (out / "errors" / output.EMPTY_PART).exists()

    only_bad, out2 = tmp_path / "bad", tmp_path / "out2"
    only_bad.mkdir()
    (only_bad / "bad.wav").write_bytes(b"RIFF not audio")
    assert main(["tag", str(only_bad), "--output", str(out2), "--model", tiny_crnn, "--timeline"]) == 0
    for table in ("songs", "clips", "timeline"):
        assert pd.read_parquet(out2 / table).empty, table
        assert _columns(out2, table) == schemas.arrow_schema(table, GTZAN_GENRES).names, table
    assert len(pd.read_parquet(out2 / "errors")) == 1
