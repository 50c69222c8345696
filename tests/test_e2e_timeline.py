"""End to end: ``tag --timeline`` with a crnn on a real local Ray, resumed runs, and ``plot-timeline``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from audio_factory import write_chirp, write_noise, write_tone

from mgr_batch.cli import main
from mgr_batch.features import registry as features
from mgr_batch.io import schemas
from mgr_batch.models import checkpoint

pytestmark = pytest.mark.usefixtures("ray_cluster")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("timeline_in")
    write_tone(root / "tone.wav", seconds=4.0)
    write_noise(root / "noise.flac", seconds=7.0)
    write_chirp(root / "chirp.wav", seconds=3.0)
    (root / "broken.wav").write_bytes(b"not audio")
    return root


@pytest.fixture(scope="module")
def tagged(folder, tiny_crnn, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("timeline_out") / "out"
    assert main(["tag", str(folder), "-o", str(out), "--model", tiny_crnn, "--timeline", "--songs-per-task", "2"]) == 0
    return out


def read(out: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(out / table) if (out / table).exists() else pd.DataFrame(columns=["song_id"])


def n_steps(model_dir: str) -> int:
    spec = checkpoint.load_spec(model_dir)
    model, _ = checkpoint.load(model_dir)
    _, n_frames = features.feature_shape(sr=spec.audio.sr, clip_seconds=spec.clips.clip_seconds, cfg=spec.features)
    return model.n_steps_out(n_frames)


def test_timeline_table(tagged, tiny_crnn):
    songs, clips, timeline = read(tagged, "songs"), read(tagged, "clips"), read(tagged, "timeline")
    genres = checkpoint.load_spec(tiny_crnn).genres
    assert len(songs) == 3 and len(timeline) == int(songs["n_clips"].sum()) * n_steps(tiny_crnn)
    assert list(timeline.columns) == [c["name"] for c in schemas.spec("timeline")["columns"]]
    assert set(timeline["song_id"]) == set(songs["song_id"])
    probs = np.stack(timeline["probabilities"].to_numpy())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (timeline["genre"].to_numpy() == np.asarray(genres)[probs.argmax(axis=1)]).all()
    # each clip's steps: increasing times inside the clip, and their mean is the clip's probabilities
    steps = timeline.assign(**{f"p_{g}": probs[:, j] for j, g in enumerate(genres)})
    per_clip = steps.groupby(["song_id", "clip_index"])
    merged = clips.set_index(["song_id", "clip_index"]).join(per_clip["time_s"].agg(["min", "max"]))
    assert ((merged["min"] >= merged["start_s"]) & (merged["max"] <= merged["end_s"])).all()
    assert per_clip["time_s"].apply(lambda t: bool((np.diff(t.to_numpy()) > 0).all())).all()
    cols = schemas.probability_columns(genres)
    np.testing.assert_allclose(per_clip[cols].mean().loc[merged.index].to_numpy(), merged[cols].to_numpy(), atol=1e-5)
    run = json.loads((tagged / "run.json").read_text())
    assert run["n_timeline_steps"] == run["this_run"]["n_timeline_steps"] == len(timeline)
    assert run["config"]["timeline"] is True


def test_plot_timeline(tagged, tmp_path, capsys):
    song = read(tagged, "songs").iloc[0]
    png = tmp_path / "song.png"
    assert main(["plot-timeline", str(tagged), "--song", song["path"], "--output", str(png)]) == 0
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert json.loads(capsys.readouterr().out)["song_id"] == song["song_id"]
    assert main(["plot-timeline", str(tagged), "--song", "nope", "--output", str(tmp_path / "x.png")]) == 2
    assert "'nope' is not in" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_timeline_needs_a_model_with_one(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["tag", str(folder), "-o", str(out), "--timeline"]) == 2  # the shipped model has no timeline
    assert "--timeline needs a model with a genre belief per time step" in capsys.readouterr().err
    assert not out.exists()


def test_reruns_keep_the_timeline_whole(folder, tagged, tiny_crnn, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(folder, src)
    tag = ["tag", str(src), "-o", str(out), "--model", tiny_crnn]
    assert main(tag) == 0  # without --timeline: no timeline table
    assert not (out / "timeline").exists()
    assert main([*tag, "--timeline"]) == 0  # now asked: the songs without timeline rows are redone
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"]) == (3, 1)  # the broken file stays done
    expected = len(read(tagged, "timeline"))
    assert len(read(out, "timeline")) == run["n_timeline_steps"] == expected and len(read(out, "songs")) == 3

    assert main([*tag, "--timeline"]) == 0  # nothing to do, nothing duplicated
    assert json.loads((out / "run.json").read_text())["n_skipped"] == 4
    time.sleep(0.01)
    write_tone(src / "tone.wav", seconds=7.0, freq=880.0)  # changed: 2 clips instead of 1
    assert main([*tag, "--timeline"]) == 0
    timeline, songs = read(out, "timeline"), read(out, "songs")
    assert not timeline.duplicated(["song_id", "clip_index", "step_index"]).any()
    assert len(timeline) == int(songs["n_clips"].sum()) * n_steps(tiny_crnn) == expected + n_steps(tiny_crnn)

    assert main([*tag, "--force"]) == 0  # --force clears the timeline with the other tables
    assert not (out / "timeline").exists()
    assert json.loads((out / "run.json").read_text())["n_timeline_steps"] == 0
