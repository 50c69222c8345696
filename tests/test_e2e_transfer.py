"""End to end with the pre-trained musicnn: fine-tuning through Ray Train, a classic head on its
embeddings, and ``tag --model msd-tags`` (its 50 MSD tags as sigmoid probabilities)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from audio_factory import split_flags, write_noise, write_tone, write_tones_and_noise

from mgr_batch.cli import main
from mgr_batch.clips import windows as clips
from mgr_batch.features import registry as features
from mgr_batch.io import audio
from mgr_batch.models import checkpoint
from mgr_batch.models.musicnn import Musicnn, load_pretrained_state
from mgr_batch.models.musicnn_tags import MSD_TAGS

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Two genres of 2 s songs (tones, noise), 3 train and 1 valid song each."""
    return write_tones_and_noise(tmp_path_factory.mktemp("labelled"))


def test_fine_tuning_musicnn_through_ray_train(labelled, tmp_path):
    """--model-type musicnn with pretrained=MSD_musicnn: the musicnn preset, the pre-trained body and a new
    2-genre head, trained by Ray Train on CPU. With lr 0 the convolutions stay exactly the pre-trained ones,
    which proves the body was loaded inside the Train worker."""
    ckpt = tmp_path / "musicnn"
    rc = main(
        [
            "train",
            str(labelled),
            "-o",
            str(ckpt),
            "--model-type",
            "musicnn",
            "--model-param",
            "pretrained=MSD_musicnn",
            "--clip-seconds",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--lr",
            "0",
            "--weight-decay",
            "0",
            "--storage-path",
            str(tmp_path / "runs"),
            *split_flags(labelled),
        ]
    )
    assert rc == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert (spec.model.name, spec.model.params, spec.train["preset"]) == (
        "musicnn",
        {"pretrained": "MSD_musicnn"},
        "musicnn",
    )
    assert (spec.audio.sr, spec.features.n_mels, spec.features.scale, spec.input_shape) == (
        16000,
        96,
        "log1p",
        (96, 63),
    )
    assert spec.train["n_clips"] == {"train": 12, "valid": 4} and "valid_song_accuracy" in spec.metrics
    state = torch.load(ckpt / "model.pt", weights_only=True)
    pre = load_pretrained_state("MSD_musicnn")
    convs = [k for k in pre if k.endswith("conv.weight")]
    assert len(convs) == 8 and all(torch.equal(state[k], pre[k]) for k in convs)
    assert state["head.weight"].shape == (2, 200)

    model, _ = checkpoint.load(str(ckpt))
    assert isinstance(model, Musicnn) and model.tags is None  # a fresh head: no MSD tags


def test_wiring_of_a_classic_head_on_musicnn_embeddings(labelled, tmp_path):
    """A wiring check, not an accuracy measure: it tags the songs it trained and chose on, so every genre right
    shows the labels come back through train, checkpoint and tag in their order."""
    ckpt = tmp_path / "logreg"
    rc = main(
        [
            "train",
            str(labelled),
            "-o",
            str(ckpt),
            "--model-type",
            "logreg",
            "--features",
            "musicnn_embedding",
            *split_flags(labelled),
        ]
    )
    assert rc == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert (spec.train["preset"], spec.features.kind, spec.audio.sr, spec.input_shape) == (
        "musicnn_embedding",
        "musicnn_embedding",
        16000,
        (200, 1),
    )
    assert spec.metrics["valid_song_accuracy"] == 1.0

    out = tmp_path / "tags"
    assert main(["tag", str(labelled), "-o", str(out), "--model", str(ckpt)]) == 0
    songs = pq.read_table(out / "songs").to_pandas()
    assert len(songs) == 8 and (songs["genre"] == [Path(p).parent.name for p in songs["path"]]).all()


def test_msd_tags_is_a_zero_training_tagger(labelled, tmp_path):
    """tag --model msd-tags: musicnn's 50 MSD tags per song as independent (sigmoid) probabilities, the
    mean over 3 s clips of the pre-trained network's taggram, on the musicnn preset's features."""
    song = labelled / "tones" / "tones.00000.wav"
    long = tmp_path / "in" / "long.wav"
    write_tone(long, seconds=7.0, freq=440.0)
    out = tmp_path / "tags"
    assert main(["tag", str(long.parent), "-o", str(out), "--model", "msd-tags"]) == 0
    assert main(["tag", str(song), "-o", str(tmp_path / "one"), "--model", "msd-tags"]) == 0
    spec = checkpoint.load_spec("msd-tags")
    assert spec.genres == MSD_TAGS and spec.activation == "sigmoid" and spec.model_id.startswith("msd-tags-")
    assert json.loads((out / "run.json").read_text())["model_id"] == spec.model_id
    row = pq.read_table(out / "songs").to_pandas().iloc[0]
    probs = np.array([row[f"p_{t}"] for t in MSD_TAGS])
    assert row["n_clips"] == 2 and row["genre"] == MSD_TAGS[probs.argmax()] and row["model_id"] == spec.model_id
    assert ((probs > 0) & (probs < 1)).all() and abs(probs.sum() - 1) > 0.05  # multi-label: no softmax

    decoded = audio.load(str(long), sr=16000)
    x = features.featurize(
        clips.cut(decoded.y, sr=16000, clip_seconds=3.0, hop_seconds=3.0)[0], sr=16000, cfg=spec.features
    )
    model, _ = checkpoint.load("msd-tags")
    with torch.inference_mode():
        expected = torch.sigmoid(model(torch.from_numpy(x))).mean(dim=0).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_musicnn_logreg_runs_its_network_in_the_tasks_or_the_actor_alike(tmp_path):
    """The earlier default (musicnn embedding + logistic regression): with ``inference.embed_in_actor`` the
    decode tasks send musicnn's log-mel and the inference actor runs the pre-trained network (what a GPU
    actor does); the probabilities equal those of the network run in the decode tasks. The stored vectors (the
    mean and standard deviation of the clip embeddings the head reads, written by default) are the same too."""
    src = tmp_path / "in"
    write_tone(src / "tone.wav", seconds=7.0, freq=330.0)
    write_noise(src / "noise.flac", seconds=4.0, seed=3)
    config = tmp_path / "actor.yaml"
    config.write_text("inference:\n  embed_in_actor: true\n")
    old = ["--model", "musicnn-logreg"]
    assert main(["tag", str(src), "-o", str(tmp_path / "tasks"), *old]) == 0
    assert main(["tag", str(src), "-o", str(tmp_path / "actor"), "--config", str(config), *old]) == 0
    spec = checkpoint.load_spec("musicnn-logreg")
    assert spec.features.kind == "musicnn_embedding"
    cols = ["path", "n_clips", "genre"] + [f"p_{g}" for g in spec.genres]
    tasks, actor = (
        pq.read_table(tmp_path / d / "songs").to_pandas()[cols].sort_values("path").reset_index(drop=True)
        for d in ("tasks", "actor")
    )
    assert list(tasks["n_clips"]) == [1, 2] and list(tasks["genre"]) == list(actor["genre"])
    probs = [f"p_{g}" for g in spec.genres]
    np.testing.assert_allclose(actor[probs].to_numpy(), tasks[probs].to_numpy(), atol=1e-5)
    emb = {d: pq.read_table(tmp_path / d / "embeddings").to_pandas().sort_values("path") for d in ("tasks", "actor")}
    assert list(emb["tasks"]["feature_id"]) == list(emb["actor"]["feature_id"]) and list(emb["tasks"]["dims"]) == [
        400,
        400,
    ]
    np.testing.assert_allclose(np.stack(emb["tasks"]["vector"]), np.stack(emb["actor"]["vector"]), atol=2e-3)


def test_predictor_embeds_musicnn_log_mel_itself():
    """Given musicnn's log-mel instead of embeddings, musicnn-logreg's Predictor runs the network first."""
    from mgr_batch.features import musicnn as fm
    from mgr_batch.stages.predict import Predictor

    spec = checkpoint.load_spec("musicnn-logreg")
    rng = np.random.default_rng(0)
    song_clips = (
        0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * 16000) / 16000) + 0.05 * rng.normal(size=(4, 3 * 16000))
    ).astype(np.float32)
    x_mel = features.featurize(song_clips, sr=16000, cfg=fm.INPUT_FEATURES)
    x_emb = features.featurize(song_clips, sr=16000, cfg=spec.features)
    assert x_mel.shape[1] == 96 and x_emb.shape[1:] == spec.input_shape
    predictor = Predictor("musicnn-logreg", device="cpu")
    np.testing.assert_allclose(predictor.predict_proba(x_mel), predictor.predict_proba(x_emb), atol=1e-5)


def test_shipped_default_runs_its_networks_in_the_tasks_or_the_actor_alike(tmp_path):
    """The shipped default (MSD_musicnn + EfficientAT stacked, song-level head, calibrated): with
    ``inference.embed_in_actor`` the decode tasks send the decoded 32 kHz clips and the actor runs both
    networks (what a GPU actor does); songs and clips equal those of the networks run in the decode tasks."""
    src = tmp_path / "in"
    write_tone(src / "tone.wav", seconds=7.0, freq=330.0)
    write_noise(src / "noise.flac", seconds=4.0, seed=3)
    config = tmp_path / "actor.yaml"
    config.write_text("inference:\n  embed_in_actor: true\n")
    assert main(["tag", str(src), "-o", str(tmp_path / "tasks")]) == 0
    assert main(["tag", str(src), "-o", str(tmp_path / "actor"), "--config", str(config)]) == 0
    spec = checkpoint.load_spec(None)
    assert spec.features.kind == "stacked_embedding" and spec.audio.sr == 32000
    probs = [f"p_{g}" for g in spec.genres]
    for table in ("songs", "clips"):
        tasks, actor = (
            pq.read_table(tmp_path / d / table)
            .to_pandas()
            .sort_values(["path"] + (["clip_index"] if table == "clips" else []))
            for d in ("tasks", "actor")
        )
        np.testing.assert_allclose(actor[probs].to_numpy(), tasks[probs].to_numpy(), atol=1e-5)
    songs = pq.read_table(tmp_path / "tasks" / "songs").to_pandas()
    assert songs["uncertain"].notna().all() and list(songs.sort_values("path")["n_clips"]) == [1, 2]
