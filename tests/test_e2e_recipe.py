"""End to end: a song-level, calibrated head on stacked pre-trained embeddings (the shipped default's recipe)
trained by ``mgr-batch train``, then ``tag`` (decode tasks, or the actor path forced) and ``evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from audio_factory import write_noise, write_tone

from mgr_batch.cli import main
from mgr_batch.features import registry as features
from mgr_batch.models import checkpoint

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Two genres of 2 s songs: 4 train and 2 valid each, plus 2 unseen songs each for evaluate."""
    root = tmp_path_factory.mktemp("recipe")
    for i in range(8):
        write_tone(root / "data" / "tones" / f"tones.{i:05d}.wav", seconds=2.0, freq=250.0 + 90 * i)
        write_noise(root / "data" / "noise" / f"noise.{i:05d}.wav", seconds=2.0, seed=i)
    data = root / "data"
    (root / "train.txt").write_text("\n".join(f"{g}/{g}.{i:05d}.wav" for g in ("tones", "noise") for i in range(4)))
    (root / "valid.txt").write_text("\n".join(f"{g}/{g}.{i:05d}.wav" for g in ("tones", "noise") for i in (4, 5)))
    (root / "unseen.txt").write_text("\n".join(f"{g}/{g}.{i:05d}.wav" for g in ("tones", "noise") for i in (6, 7)))
    return data


def _split(data: Path) -> list[str]:
    return ["--train-list", str(data.parent / "train.txt"), "--valid-list", str(data.parent / "valid.txt")]


@pytest.fixture(scope="module")
def recipe_model(labelled, tmp_path_factory) -> Path:
    ckpt = tmp_path_factory.mktemp("ckpt") / "stacked"
    rc = main(
        [
            "train",
            str(labelled),
            "-o",
            str(ckpt),
            "--model-type",
            "logreg",
            "--features",
            "musicnn_efficientat",
            "--model-param",
            "pooling=mean",
            "--model-param",
            "calibrate=true",
            "--model-param",
            "grid={C: [0.01]}",
            *_split(labelled),
        ]
    )
    assert rc == 0
    return ckpt


def test_training_fits_one_row_per_song_and_stores_its_calibration(recipe_model):
    spec = checkpoint.load_spec(str(recipe_model))
    assert (spec.audio.sr, spec.features.kind, spec.input_shape) == (32000, "stacked_embedding", (200 + 384, 1))
    assert spec.model.params["pooling"] == "mean" and spec.train["best_params"] == {"C": 0.01}
    cal = spec.calibration
    assert cal["method"] == "temperature" and cal["temperature"] > 0 and cal["n_songs"] == 8 and cal["folds"] == 4
    assert np.isfinite(cal["uncertain_below"]) and cal["out_of_fold"]["song_accuracy"] == 1.0
    assert spec.metrics["valid_song_accuracy"] == 1.0 and spec.metrics["valid_n_songs"] == 4


def test_tag_scores_songs_with_the_head_on_pooled_clips_and_flags_uncertain(recipe_model, labelled, tmp_path):
    from mgr_batch.evaluation import calibration
    from mgr_batch.stages.aggregate import certainty

    model, spec = checkpoint.load(str(recipe_model))
    src = tmp_path / "in"
    write_tone(src / "long.wav", seconds=7.0, freq=400.0)
    write_noise(src / "noise.wav", seconds=5.0, seed=11)
    assert main(["tag", str(src), "-o", str(tmp_path / "tasks"), "--model", str(recipe_model)]) == 0
    songs = pq.read_table(tmp_path / "tasks" / "songs").to_pandas().sort_values("path").reset_index(drop=True)
    clips = pq.read_table(tmp_path / "tasks" / "clips").to_pandas().sort_values(["path", "clip_index"])
    probs = [f"p_{g}" for g in spec.genres]
    assert list(songs["n_clips"]) == [2, 1]
    # the song row is the calibrated head on the mean of the song's clip embeddings, not the mean of clip rows
    from mgr_batch.clips import windows as clipping
    from mgr_batch.io import audio

    decoded = audio.load(str(src / "long.wav"), sr=spec.audio.sr)
    x = features.featurize(
        clipping.cut(decoded.y, sr=spec.audio.sr, clip_seconds=3.0, hop_seconds=3.0)[0],
        sr=spec.audio.sr,
        cfg=spec.features,
    )
    want = calibration.apply_temperature(model.predict_song_proba(x), spec.temperature)
    np.testing.assert_allclose(songs.loc[0, probs].to_numpy(np.float64), want, atol=1e-5)
    want_clips = calibration.apply_temperature(model.predict_proba(x), spec.temperature)
    np.testing.assert_allclose(
        clips[clips["path"] == songs.loc[0, "path"]][probs].to_numpy(np.float64), want_clips, atol=1e-5
    )
    assert songs["uncertain"].tolist() == (certainty(songs[probs].to_numpy()) < spec.uncertain_below).tolist()

    # the networks in the inference actor (what --num-gpus does), fed decoded clips: the same rows
    config = tmp_path / "actor.yaml"
    config.write_text("inference:\n  embed_in_actor: true\n")
    assert (
        main(["tag", str(src), "-o", str(tmp_path / "actor"), "--model", str(recipe_model), "--config", str(config)])
        == 0
    )
    actor = pq.read_table(tmp_path / "actor" / "songs").to_pandas().sort_values("path").reset_index(drop=True)
    np.testing.assert_allclose(actor[probs].to_numpy(), songs[probs].to_numpy(), atol=1e-5)
    assert actor["uncertain"].tolist() == songs["uncertain"].tolist()


def test_evaluate_reports_calibration_and_the_uncertain_share(recipe_model, labelled, tmp_path):
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                str(labelled),
                "--model",
                str(recipe_model),
                "--list",
                str(labelled.parent / "unseen.txt"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    c = metrics["calibration"]
    assert (
        metrics["n_songs"] == 4
        and c["bins"] == 15
        and c["temperature"] == checkpoint.load_spec(str(recipe_model)).temperature
    )
    assert 0 <= c["ece"] <= 1 and 0 <= c["ece_uncalibrated"] <= 1 and c["ece"] != c["ece_uncalibrated"]
    assert sum(b["n"] for b in c["reliability"]) == 4 and 0 <= c["uncertain_share"] <= 1
    assert (out / "reliability.png").read_bytes().startswith(b"\x89PNG")
    report = (out / "report.md").read_text()
    assert "expected calibration error before calibration" in report and "share of songs flagged uncertain" in report


def test_models_without_a_threshold_write_null_uncertain(labelled, tmp_path):
    """The earlier default (clip-level head, no calibration) keeps its probabilities and writes null."""
    assert main(["tag", str(labelled / "tones"), "-o", str(tmp_path / "old"), "--model", "musicnn-logreg"]) == 0
    songs = pq.read_table(tmp_path / "old" / "songs").to_pandas()
    assert len(songs) == 8 and songs["uncertain"].isna().all()
    assert checkpoint.load_spec("musicnn-logreg").features.kind == "musicnn_embedding"


def test_cv_trains_and_scores_a_calibrated_song_level_head_per_fold(labelled, tmp_path):
    out = tmp_path / "cv"
    assert (
        main(
            [
                "cv",
                str(labelled),
                "-o",
                str(out),
                "--folds",
                "2",
                "--model-type",
                "logreg",
                "--features",
                "musicnn_embedding",
                "--model-param",
                "pooling=mean",
                "--model-param",
                "calibrate=true",
                "--model-param",
                "grid={C: [0.1]}",
                *_split(labelled),
            ]
        )
        == 0
    )
    summary = json.loads((out / "cv.json").read_text())
    assert summary["n_songs"] == 12 and len(summary["per_fold"]) == 2
    for k in range(2):
        spec = checkpoint.load_spec(str(out / f"fold-{k}" / "model"))
        assert spec.model.params["pooling"] == "mean" and spec.temperature > 0 and spec.calibration["n_songs"] == 6
        metrics = json.loads((out / f"fold-{k}" / "metrics.json").read_text())
        assert metrics["n_songs"] == 6 and metrics["calibration"]["temperature"] == spec.temperature
