"""End to end: ``tag --embeddings`` writes one musicnn embedding per song, resumes like the other tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from audio_factory import write_noise, write_tone

from mgr_batch.cli import main
from mgr_batch.clips import windows as clips
from mgr_batch.config import AudioConfig
from mgr_batch.features.musicnn import DEFAULT_LAYER, LAYERS, musicnn_embedding
from mgr_batch.io import audio, schemas
from mgr_batch.stages import vectors

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    write_tone(root / "tone.wav", seconds=7.0, freq=440.0)  # two 3 s clips at the tiny model's 22050 Hz
    write_noise(root / "noise.flac", seconds=2.0, sr=44100, channels=2)  # one zero-padded clip
    (root / "broken.mp3").write_bytes(b"not audio at all")
    return root


def read(out: Path, table: str):
    return pq.read_table(out / table).to_pandas().sort_values("path").reset_index(drop=True)


def test_embeddings_table(catalog, tiny_model, tmp_path):
    """A model not on pre-trained embeddings (the tiny CNN) with --embeddings: MSD_musicnn's mean embedding of
    its clips, computed in float32 whatever the precision asked for the models, stored as float16."""
    out = tmp_path / "out"
    argv = ["tag", str(catalog), "-o", str(out), "--model", tiny_model, "--embeddings", "--precision", "bfloat16"]
    assert main(argv) == 0
    table = pq.read_table(out / "embeddings")
    assert table.schema.remove_metadata() == schemas.arrow_schema("embeddings")
    emb, songs = read(out, "embeddings"), read(out, "songs")
    assert list(emb["song_id"]) == list(songs["song_id"]) and len(emb) == 2  # the broken file has no row
    kind = vectors.musicnn_kind(AudioConfig(sr=22050), 3.0)
    assert (emb["feature_id"] == kind.feature_id).all() and (emb["dims"] == LAYERS[DEFAULT_LAYER]).all()
    assert (emb["feature"] == "MSD_musicnn:penultimate mean of 3 s clips at 22050 Hz").all()
    assert list(emb["n_clips"]) == list(songs["n_clips"]) == [1, 2]
    for _, row in emb.iterrows():
        # the mean over the song's clips, cut at the genre model's 22050 Hz and resampled to 16 kHz
        song_clips, _ = clips.cut(audio.load(row["path"], sr=22050).y, sr=22050, clip_seconds=3.0, hop_seconds=3.0)
        expected = musicnn_embedding(song_clips, sr=22050).mean(axis=0)
        np.testing.assert_allclose(np.asarray(row["vector"], np.float32), expected, rtol=2e-3, atol=2e-3)
    run = json.loads((out / "run.json").read_text())
    assert (run["n_embeddings"], run["this_run"]["n_embeddings"], run["n_songs"], run["n_errors"]) == (2, 2, 2, 1)

    # A rerun has nothing to do; the tables stay as they were.
    assert main(["tag", str(catalog), "-o", str(out), "--model", tiny_model, "--embeddings"]) == 0
    assert json.loads((out / "run.json").read_text())["n_processed"] == 0
    assert len(read(out, "embeddings")) == 2


def test_asking_for_embeddings_later_redoes_the_songs_without_them(catalog, tiny_model, tmp_path):
    out = tmp_path / "out"
    assert main(["tag", str(catalog), "-o", str(out), "--model", tiny_model]) == 0
    assert not (out / "embeddings").exists()
    assert main(["tag", str(catalog), "-o", str(out), "--model", tiny_model, "--embeddings"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"]) == (2, 1)  # the error row needs no embedding
    emb, songs = read(out, "embeddings"), read(out, "songs")
    assert len(emb) == len(songs) == 2 and set(emb["song_id"]) == set(songs["song_id"])
    assert len(read(out, "clips")) == 3  # the redone songs' old rows were pruned, not duplicated
