"""End to end: representative segments in ``tag`` and the ``segment`` command, on a real local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from audio_factory import three_part_song, write_tone

from mgr_batch.cli import main
from mgr_batch.io import schemas

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("segment_songs")
    sf.write(root / "three_parts.wav", three_part_song(sr=22050), 22050)
    write_tone(root / "tone.flac", seconds=8.0)
    (root / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    return root


def test_tag_with_representative_segments_uses_only_those_seconds(songs, tiny_model, tmp_path):
    fixed, rep = tmp_path / "fixed", tmp_path / "rep"
    assert main(["tag", str(songs), "-o", str(fixed), "--model", tiny_model]) == 0
    assert main(["tag", str(songs), "-o", str(rep), "--model", tiny_model, "--clips", "representative"]) == 0
    by_path = {p: pq.read_table(p / "songs").to_pandas().set_index("path") for p in (fixed, rep)}
    three = str(songs / "three_parts.wav")
    assert by_path[fixed].loc[three, "used_start_s"].tolist() == [0.0]
    assert by_path[fixed].loc[three, "used_end_s"].tolist() == pytest.approx([60.0])
    assert by_path[fixed].loc[three, "n_clips"] == 20
    assert 1 <= by_path[rep].loc[three, "n_clips"] < 20
    starts, ends = by_path[rep].loc[three, ["used_start_s", "used_end_s"]]
    clips = pq.read_table(rep / "clips").to_pandas()
    mine = clips[clips["path"] == three]
    assert len(mine) == by_path[rep].loc[three, "n_clips"]
    for s, e in zip(mine["start_s"], mine["end_s"], strict=True):  # every clip mostly inside a used span
        overlap = sum(max(0.0, min(e, hi) - max(s, lo)) for lo, hi in zip(starts, ends, strict=True))
        assert overlap >= 1.5
    assert json.loads((rep / "run.json").read_text())["config"]["clips"]["select"] == "representative"


def test_segment_command_writes_segments_plots_and_errors(songs, tmp_path):
    out = tmp_path / "seg"
    assert main(["segment", str(songs), "--output", str(out), "--plot"]) == 0
    table = pq.read_table(out / "segments")
    assert table.schema.names == schemas.arrow_schema("segments").names
    segs = table.to_pandas()
    errors = pd.read_parquet(out / "errors")
    assert set(segs["path"]) | set(errors["path"]) == {str(p) for p in songs.iterdir()}
    assert errors["error_type"].tolist() == ["AudioDecodeError"]
    three = segs[segs["path"] == str(songs / "three_parts.wav")].sort_values("segment_index")
    assert three["start_s"].iloc[0] == 0.0 and three["end_s"].iloc[-1] == pytest.approx(60.0, abs=0.1)
    assert np.allclose(three["end_s"].to_numpy()[:-1], three["start_s"].to_numpy()[1:])  # segments tile the song
    assert three["is_representative"].any() and three["cluster"].nunique() >= 2
    assert any(abs(b - 20.0) <= 3.0 for b in three["start_s"]) and any(abs(b - 40.0) <= 3.0 for b in three["start_s"])
    pngs = list((out / "plots").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    run = json.loads((out / "run.json").read_text())
    assert (run["n_songs"], run["n_errors"], run["n_segments"]) == (2, 1, len(segs))
