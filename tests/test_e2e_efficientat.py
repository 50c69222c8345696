"""End to end with the pre-trained EfficientAT mn04_as: fine-tuning through Ray Train (``--model-type
efficientat``), a classic head on its embeddings (the network in the decode tasks or in the inference actor,
alike), and ``tag --model audioset-tags`` (its 527 AudioSet classes as sigmoid probabilities)."""

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
from mgr_batch.models.efficientat import EfficientAT, audioset_labels, load_pretrained_state

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Two genres of 2 s songs (tones, noise), 3 train and 1 valid song each."""
    return write_tones_and_noise(tmp_path_factory.mktemp("labelled"))


def test_fine_tuning_efficientat_through_ray_train(labelled, tmp_path):
    """--model-type efficientat with pretrained=mn04_as: the efficientat preset, the pre-trained body and a new
    2-genre head, one epoch of Ray Train on CPU. With lr 0 the convolutions stay exactly the pre-trained ones,
    which proves the body was loaded inside the Train worker."""
    ckpt = tmp_path / "efficientat"
    rc = main(
        [
            "train",
            str(labelled),
            "-o",
            str(ckpt),
            "--model-type",
            "efficientat",
            "--model-param",
            "pretrained=mn04_as",
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
        "efficientat",
        {"pretrained": "mn04_as"},
        "efficientat",
    )
    assert (spec.audio.sr, spec.features.kind, spec.input_shape) == (32000, "efficientat_logmel", (128, 100))
    assert spec.train["n_clips"] == {"train": 12, "valid": 4} and "valid_song_accuracy" in spec.metrics
    state = torch.load(ckpt / "model.pt", weights_only=True)
    pre = load_pretrained_state()
    convs = [k for k in pre if pre[k].dim() == 4]  # stem, 14 x 3 + 1 x 2 block convolutions, last
    assert len(convs) == 46 and all(torch.equal(state[f"net.{k}"], pre[k]) for k in convs)
    assert torch.equal(state["net.hidden.weight"], pre["hidden.weight"]) and state["net.head.weight"].shape == (2, 512)

    model, _ = checkpoint.load(str(ckpt))
    assert isinstance(model, EfficientAT) and model.tags is None  # a fresh head: no AudioSet labels
    out = tmp_path / "tags"
    assert main(["tag", str(labelled / "tones"), "-o", str(out), "--model", str(ckpt)]) == 0
    songs = pq.read_table(out / "songs").to_pandas()
    assert len(songs) == 4 and set(songs["genre"]) <= {"tones", "noise"}


def test_wiring_of_a_classic_head_on_efficientat_embeddings_in_tasks_or_actor(labelled, tmp_path):
    """logreg on efficientat_embedding; tagging with the network in the inference actor
    (``inference.embed_in_actor``: the decode tasks send its log-mel, as for a GPU actor) gives the
    probabilities of the network run in the decode tasks.

    A wiring check, not an accuracy measure: it tags the songs it trained and chose on, so every genre right
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
            "efficientat_embedding",
            "--clip-seconds",
            "2",
            *split_flags(labelled),
        ]
    )
    assert rc == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert (spec.train["preset"], spec.features.kind, spec.audio.sr, spec.input_shape) == (
        "efficientat_embedding",
        "efficientat_embedding",
        32000,
        (384, 1),
    )
    assert spec.metrics["valid_song_accuracy"] == 1.0

    config = tmp_path / "actor.yaml"
    config.write_text("inference:\n  embed_in_actor: true\n")
    assert main(["tag", str(labelled), "-o", str(tmp_path / "tasks"), "--model", str(ckpt)]) == 0
    assert (
        main(["tag", str(labelled), "-o", str(tmp_path / "actor"), "--model", str(ckpt), "--config", str(config)]) == 0
    )
    probs = [f"p_{g}" for g in spec.genres]
    tasks, actor = (
        pq.read_table(tmp_path / d / "songs").to_pandas().sort_values("path").reset_index(drop=True)
        for d in ("tasks", "actor")
    )
    assert len(tasks) == 8 and (tasks["genre"] == [Path(p).parent.name for p in tasks["path"]]).all()
    assert list(tasks["genre"]) == list(actor["genre"]) and list(tasks["n_clips"]) == list(actor["n_clips"])
    np.testing.assert_allclose(actor[probs].to_numpy(), tasks[probs].to_numpy(), atol=1e-5)
    run = json.loads((tmp_path / "actor" / "run.json").read_text())
    assert run["config"]["inference"]["embed_in_actor"] is True


def test_audioset_tags_is_a_zero_training_tagger(tmp_path):
    """tag --model audioset-tags: EfficientAT's 527 AudioSet classes per song as independent (sigmoid)
    probabilities, the mean over 10 s clips, on the efficientat preset's features; a pure tone is a sine wave."""
    long = tmp_path / "in" / "tone.wav"
    write_tone(long, seconds=12.0, freq=440.0, sr=32000)
    write_noise(tmp_path / "in" / "noise.wav", seconds=4.0, seed=1)
    out = tmp_path / "tags"
    assert main(["tag", str(long.parent), "-o", str(out), "--model", "audioset-tags"]) == 0
    spec = checkpoint.load_spec("audioset-tags")
    labels = audioset_labels()
    assert spec.genres == labels and spec.activation == "sigmoid" and spec.model_id.startswith("audioset-tags-")
    assert json.loads((out / "run.json").read_text())["model_id"] == spec.model_id
    songs = pq.read_table(out / "songs").to_pandas().set_index("path")
    assert sum(c.startswith("p_") for c in songs.columns) == 527
    row = songs.loc[str(long)]
    p = np.array([row[f"p_{t}"] for t in labels])
    assert row["genre"] == labels[p.argmax()] == "Sine wave" and row["model_id"] == spec.model_id
    assert ((p > 0) & (p < 1)).all() and abs(p.sum() - 1) > 0.05  # multi-label: no softmax
    assert songs.loc[str(tmp_path / "in" / "noise.wav"), "genre"] != "Sine wave"

    decoded = audio.load(str(long), sr=32000)
    song_clips = clips.cut(decoded.y, sr=32000, clip_seconds=10.0, hop_seconds=10.0)[0]
    assert row["n_clips"] == len(song_clips)
    x = features.featurize(song_clips, sr=32000, cfg=spec.features)
    model, _ = checkpoint.load("audioset-tags")
    with torch.inference_mode():
        expected = torch.sigmoid(model(torch.from_numpy(x))).mean(dim=0).numpy()
    np.testing.assert_allclose(p, expected, atol=1e-5)
