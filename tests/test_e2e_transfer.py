"""End to end with the pre-trained musicnn: fine-tuning through Ray Train, a classic head on its
embeddings, and ``tag --model msd-tags`` (its 50 MSD tags as sigmoid probabilities)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from audio_factory import write_noise, write_tone

from mgr_batch import audio, checkpoint, clips, features
from mgr_batch.cli import main
from mgr_batch.models.musicnn import MSD_TAGS, Musicnn, load_pretrained_state

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Two genres of 2 s songs (tones, noise), 3 train and 1 valid song each."""
    root = tmp_path_factory.mktemp("labelled")
    for i in range(4):
        write_tone(root / "tones" / f"tones.{i:05d}.wav", seconds=2.0, freq=300.0 + 100 * i)
        write_noise(root / "noise" / f"noise.{i:05d}.wav", seconds=2.0, seed=i)
    (root / "train.txt").write_text("\n".join(f"{g}/{g}.{i:05d}.wav" for g in ("tones", "noise") for i in range(3)))
    (root / "valid.txt").write_text("tones/tones.00003.wav\nnoise/noise.00003.wav\n")
    return root


def split_flags(root: Path) -> list[str]:
    return ["--train-list", str(root / "train.txt"), "--valid-list", str(root / "valid.txt")]


def test_fine_tuning_musicnn_through_ray_train(labelled, tmp_path):
    """--model-type musicnn with pretrained=MSD_musicnn: the musicnn preset, the pre-trained body and a new
    2-genre head, trained by Ray Train on CPU. With lr 0 the convolutions stay exactly the pre-trained ones,
    which proves the body was loaded inside the Train worker."""
    ckpt = tmp_path / "musicnn"
    rc = main(["train", str(labelled), "-o", str(ckpt), "--model-type", "musicnn", "--model-param", "pretrained=MSD_musicnn",
               "--clip-seconds", "1", "--epochs", "1", "--batch-size", "4", "--lr", "0", "--weight-decay", "0",
               "--storage-path", str(tmp_path / "runs"), *split_flags(labelled)])  # fmt: skip
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


def test_classic_head_on_musicnn_embeddings(labelled, tmp_path):
    ckpt = tmp_path / "logreg"
    rc = main(["train", str(labelled), "-o", str(ckpt), "--model-type", "logreg", "--features", "musicnn_embedding",
               *split_flags(labelled)])  # fmt: skip
    assert rc == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert (spec.train["preset"], spec.features.kind, spec.audio.sr, spec.input_shape) == (
        "musicnn_embedding", "musicnn_embedding", 16000, (200, 1))  # fmt: skip
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
