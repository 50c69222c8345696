"""mgr_batch.plots.timeline without Ray: a song's timeline read back from written tables, and its PNG."""

from __future__ import annotations

import numpy as np
import pytest
from audio_factory import write_noise, write_tone

from mgr_batch.config import ClipConfig
from mgr_batch.errors import ConfigError
from mgr_batch.io import storage, writer
from mgr_batch.plots.timeline import plot_timeline, read_timeline, timeline_png
from mgr_batch.stages import decode, predict

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tagged(tiny_crnn, tmp_path_factory):
    """A tag output (songs, clips, timeline) of two real files, written by the stages and the writer."""
    root = tmp_path_factory.mktemp("timeline")
    write_tone(root / "in" / "tone.wav", seconds=7.0)
    write_noise(root / "in" / "noise.flac", seconds=4.0)
    files = storage.list_inputs(str(root / "in")).files
    predictor = predict.Predictor(tiny_crnn, device="cpu", timeline=True)
    spec = predictor.spec
    clip_cfg = ClipConfig(clip_seconds=3.0, hop_seconds=1.5)  # overlapping clips: steps interleave in time
    batch = decode.featurize_batch(
        {c: files[c].to_numpy() for c in files.columns}, audio=spec.audio, clip_cfg=clip_cfg, feature_cfg=spec.features
    )
    writer.write_tables(
        predictor(batch), output=str(root / "out"), genres=spec.genres, model_id=spec.model_id, clip_seconds=3.0
    )
    return root / "out", files, spec


def test_read_timeline_by_path_or_song_id(tagged):
    out, files, spec = tagged
    path, song_id = files["path"][0], files["song_id"][0]
    by_path, by_id = read_timeline(str(out), song=path), read_timeline(str(out), song=song_id)
    assert by_path.song_id == by_id.song_id == song_id and by_path.path == path
    assert by_path.genres == spec.genres and by_path.genre in spec.genres and by_path.model_id == spec.model_id
    np.testing.assert_array_equal(by_path.time_s, by_id.time_s)
    assert (np.diff(by_path.time_s) >= 0).all()
    assert by_path.probabilities.shape == (len(by_path.time_s), len(spec.genres))
    np.testing.assert_allclose(by_path.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert by_path.clip_start_s[0] == 0.0 and (np.diff(by_path.clip_start_s) > 0).all()


def test_timeline_png(tagged, tmp_path):
    out, files, _ = tagged
    png = timeline_png(read_timeline(str(out), song=files["path"][1]))
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    summary = plot_timeline(str(out), song=files["song_id"][1], png=str(tmp_path / "figs" / "t.png"))
    assert (tmp_path / "figs" / "t.png").read_bytes().startswith(PNG_SIGNATURE)
    assert summary["song_id"] == files["song_id"][1] and summary["n_steps"] > 0


def test_unknown_song_and_missing_timeline_are_clear_errors(tagged, tmp_path):
    out, _, _ = tagged
    with pytest.raises(ConfigError, match="is not in .*songs"):
        read_timeline(str(out), song="/no/such/song.wav")
    (tmp_path / "songs").mkdir()
    (tmp_path / "songs" / "part.parquet").write_bytes(
        (out / "songs" / next((out / "songs").iterdir()).name).read_bytes()
    )
    with pytest.raises(ConfigError, match="no timeline/ table .*--timeline"):
        read_timeline(str(tmp_path), song=str(tagged[1]["path"][0]))
