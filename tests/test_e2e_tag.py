"""End to end: ``mgr-batch tag`` on a real local Ray over generated audio and broken files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from audio_factory import write_broken_corpus, write_catalog, write_noise, write_tone

from mgr_batch.cli import main
from mgr_batch.clips.windows import clip_starts
from mgr_batch.io import schemas
from mgr_batch.io.storage import song_id_for
from mgr_batch.models.checkpoint import load_spec

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, float], dict[str, str]]:
    root = tmp_path_factory.mktemp("corpus")
    durations = write_catalog(root / "good")
    # FLAC: libsndfile's Vorbis encoder segfaults writing 2 min of 48 kHz stereo in one call
    write_noise(root / "good" / "two_minutes.flac", seconds=120.0, sr=48000, channels=2)
    durations["two_minutes.flac"] = 120.0
    broken = write_broken_corpus(root / "broken")
    (root / "notes.txt").write_text("not audio, and not an audio extension: ignored and counted")
    return root, durations, broken


@pytest.fixture(scope="module")
def tagged(corpus, tiny_model, tmp_path_factory) -> Path:
    root, _, _ = corpus
    out = tmp_path_factory.mktemp("tagged") / "out"
    assert main(["tag", str(root), "--output", str(out), "--model", tiny_model, "--songs-per-task", "3"]) == 0
    return out


def read(out: Path, table: str) -> pd.DataFrame:
    return pq.read_table(out / table).to_pandas()


def test_every_file_lands_in_exactly_one_table(corpus, tagged):
    root, durations, broken = corpus
    songs, errors = read(tagged, "songs"), read(tagged, "errors")
    listed = {str(p) for p in root.rglob("*") if p.is_file() and p.suffix != ".txt"}
    assert set(songs["path"]) | set(errors["path"]) == listed
    assert not set(songs["path"]) & set(errors["path"])
    assert len(songs) == len(durations) and len(errors) == len(broken)
    assert songs["song_id"].is_unique and errors["song_id"].is_unique


def test_broken_files_get_clear_error_rows(corpus, tagged):
    _, _, broken = corpus
    errors = read(tagged, "errors").set_index(read(tagged, "errors")["path"].map(lambda p: Path(p).name))
    for name, expected in broken.items():
        assert errors.loc[name, "error_type"] == expected, name
        assert errors.loc[name, "message"], name
        assert errors.loc[name, "stage"] in ("read", "decode")


def test_clip_counts_follow_window_arithmetic(corpus, tagged, tiny_model):
    _, durations, _ = corpus
    clip = load_spec(tiny_model).clips.clip_seconds
    songs, clips = read(tagged, "songs"), read(tagged, "clips")
    for _, song in songs.iterrows():
        expected = len(clip_starts(durations[Path(song["path"]).name], clip_seconds=clip, hop_seconds=clip))
        assert song["n_clips"] == expected, song["path"]
        mine = clips[clips["song_id"] == song["song_id"]].sort_values("clip_index")
        assert list(mine["clip_index"]) == list(range(expected))
        assert mine["start_s"].tolist() == pytest.approx([i * clip for i in range(expected)])
        assert (mine["end_s"] - mine["start_s"]).tolist() == pytest.approx([clip] * expected)
    assert len(clips) == songs["n_clips"].sum()


def test_song_probabilities_are_the_mean_of_their_clips(tagged, tiny_model):
    genres = load_spec(tiny_model).genres
    songs, clips = read(tagged, "songs"), read(tagged, "clips")
    cols = schemas.probability_columns(genres)
    means = clips.groupby("song_id")[cols].mean()
    for _, song in songs.iterrows():
        assert song[cols].to_numpy(float) == pytest.approx(means.loc[song["song_id"]].to_numpy(float), abs=1e-5)
        assert song["genre"] == genres[song[cols].to_numpy(float).argmax()]
        assert song["top3"][0] == song["genre"] and len(song["top3"]) == 3
        p = sorted(song[cols].to_numpy(float))
        assert song["certainty"] == pytest.approx(math.log10(p[-1] / p[-2]), rel=1e-4, abs=1e-6)
        assert song["song_id"] == song_id_for(song["path"])


@pytest.mark.parametrize("table", ["songs", "clips", "errors"])
def test_written_tables_match_the_json_schemas(tagged, tiny_model, table):
    genres = load_spec(tiny_model).genres
    written = pq.read_table(tagged / table).schema
    expected = schemas.arrow_schema(table, genres if table != "errors" else ())
    assert written.names == expected.names
    assert [f.type for f in written] == [f.type for f in expected]


def test_run_json_counts_match_the_tables(tagged):
    run = json.loads((tagged / "run.json").read_text())
    songs, clips, errors = read(tagged, "songs"), read(tagged, "clips"), read(tagged, "errors")
    assert (run["n_songs"], run["n_clips"], run["n_errors"]) == (len(songs), len(clips), len(errors))
    assert run["n_files"] == len(songs) + len(errors)
    assert sum(run["errors_by_type"].values()) == len(errors)
    assert run["ignored_non_audio_files"] == 1
    assert run["audio_seconds"] == pytest.approx(songs["analyzed_s"].sum(), rel=1e-3)
    assert (tagged / "config.yaml").is_file()


def test_rerun_on_the_same_output_skips_what_is_done(corpus, tagged, tiny_model, tmp_path):
    root, _, _ = corpus
    before = {t: read(tagged, t) for t in ("songs", "clips", "errors")}
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(tagged, out)
    assert main(["tag", str(root), "--output", str(out), "--model", tiny_model]) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"]) == (0, run["n_files"])
    for t, frame in before.items():
        assert len(read(out, t)) == len(frame), t


def test_manifest_glob_and_hop(tmp_path, tiny_model):
    audio = tmp_path / "audio"
    write_tone(audio / "a.wav", seconds=9.0)
    write_tone(audio / "sub" / "b.flac", seconds=4.0, sr=44100, channels=2)
    (tmp_path / "manifest.csv").write_text("path,label\naudio/a.wav,x\naudio/sub/b.flac,y\n")
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    assert (
        main(["tag", str(tmp_path / "manifest.csv"), "-o", str(out1), "--model", tiny_model, "--hop-seconds", "1.5"])
        == 0
    )
    songs = read(out1, "songs").set_index("path")
    assert songs.loc[str(audio / "a.wav"), "n_clips"] == 5  # 9 s, 3 s clips every 1.5 s
    assert songs.loc[str(audio / "sub" / "b.flac"), "n_clips"] == 1
    assert main(["tag", str(audio / "*.wav"), "-o", str(out2), "--model", tiny_model]) == 0
    assert read(out2, "songs")["path"].tolist() == [str(audio / "a.wav")]


def test_decode_stays_apart_from_the_inference_actors(corpus, tiny_model):
    """Ray Data must not fuse the decode tasks into the actor pool (decoding would then scale with actors):
    the path of GPU runs, here on CPU actors."""
    from mgr_batch.config import InferenceConfig
    from mgr_batch.execution.tag import featurized, predicted
    from mgr_batch.io.storage import list_inputs
    from mgr_batch.models.checkpoint import load_spec as spec_of

    root, _, _ = corpus
    spec = spec_of(tiny_model)
    files = list_inputs(str(root / "good")).files
    inference = InferenceConfig(songs_per_task=2, in_decode_tasks=False)
    ds = featurized(files, spec=spec, clip_cfg=spec.clips, inference=inference, storage_options=None)
    ds = predicted(ds, model=tiny_model, inference=inference, storage_options=None).materialize()
    stats = ds.stats()
    assert "MapBatches(featurize_batch):" in stats
    assert "MapBatches(Predictor):" in stats
    assert "featurize_batch)->MapBatches(Predictor)" not in stats


def test_cpu_runs_decode_predict_and_write_in_one_task_like_the_actor_path(corpus, tagged, tiny_model, tmp_path):
    """Without GPUs the model runs in the decode tasks: Ray Data fuses decode, inference and writing into one
    task stage (so it can run one task per CPU); the tables equal those of the actor pool path."""
    from mgr_batch.config import InferenceConfig
    from mgr_batch.execution.tag import featurized, in_decode_tasks, predicted
    from mgr_batch.io.storage import list_inputs
    from mgr_batch.models.checkpoint import load_spec as spec_of

    root, _, _ = corpus
    spec = spec_of(tiny_model)
    assert in_decode_tasks(spec, InferenceConfig()) and not in_decode_tasks(spec, InferenceConfig(num_gpus=1))
    files = list_inputs(str(root / "good")).files
    inference = InferenceConfig(songs_per_task=2, in_decode_tasks=True)
    ds = featurized(files, spec=spec, clip_cfg=spec.clips, inference=inference, storage_options=None)
    stats = predicted(ds, model=tiny_model, inference=inference, storage_options=None).materialize().stats()
    assert "MapBatches(featurize_batch)->MapBatches(call_cached)" in stats
    assert "MapWorker" not in stats and "MapBatches(Predictor)" not in stats

    config = tmp_path / "actors.yaml"
    config.write_text("inference:\n  in_decode_tasks: false\n")
    out = tmp_path / "actors"
    assert (
        main(
            ["tag", str(root), "-o", str(out), "--model", tiny_model, "--songs-per-task", "3", "--config", str(config)]
        )
        == 0
    )
    for table, key in (("songs", "path"), ("errors", "path"), ("clips", ["path", "clip_index"])):
        fused, actors = (read(o, table).sort_values(key).reset_index(drop=True) for o in (tagged, out))
        assert len(fused) == len(actors) > 0
        probs = [c for c in fused.columns if c.startswith("p_")]
        pd.testing.assert_frame_equal(fused.drop(columns=probs), actors.drop(columns=probs))
        if probs:
            assert (fused[probs] - actors[probs]).abs().to_numpy().max() < 1e-5


def test_a_one_cpu_ray_tags_without_deadlock(tmp_path, tiny_model):
    """The CPU inference actor reserves no CPU: with one CPU it once held it and no decode task could start."""
    import os
    import signal
    import subprocess
    import sys

    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        write_tone(src / f"s{i}.wav", seconds=4.0, freq=300.0 + 50 * i)
    cmd = [
        sys.executable,
        "-m",
        "mgr_batch.cli",
        "tag",
        str(src),
        "-o",
        str(out),
        "--model",
        tiny_model,
        "--num-cpus",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # an embedded Ray of its own, not the fixture's
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert json.loads((out / "run.json").read_text())["n_songs"] == 3
