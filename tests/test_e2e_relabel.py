"""End to end: tag stores each song's vector; train --labels fits a head on them; retag applies it through Ray
Data without audio, and agrees with tag --model from audio; heads of another kind and thin labels are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from audio_factory import write_tones_and_noise

from mgr_batch.cli import main
from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig, ModelConfig
from mgr_batch.io import schemas
from mgr_batch.models import checkpoint
from mgr_batch.models.checkpoint import ModelSpec
from mgr_batch.stages import vectors

pytestmark = pytest.mark.usefixtures("ray_cluster")

#: A small head on pre-trained embeddings: MSD_musicnn's penultimate layer of 1 s clips at 16 kHz, mean+std.
SPEC = ModelSpec(
    genres=("a", "b"),
    audio=AudioConfig(sr=16000),
    clips=ClipConfig(clip_seconds=1.0),
    features=FeatureConfig(kind="musicnn_embedding", params={"pretrained": "MSD_musicnn", "layer": "penultimate"}),
    model=ModelConfig(name="logreg", params={"pooling": "mean_std", "grid": {"C": [1.0]}}),
)


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory) -> str:
    """A song-level logistic regression on 400-value mean+std rows, fitted on random rows."""
    rng = np.random.default_rng(0)
    model = SPEC.build()
    model.fit_rows(rng.normal(size=(8, 400)), np.array([0, 1] * 4), np.arange(8))
    directory = tmp_path_factory.mktemp("tiny_head")
    checkpoint.save(str(directory), model, SPEC)
    return str(directory)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, tiny_head) -> tuple[Path, Path]:
    """(the audio folder, its tag output by the tiny head), with a labels CSV beside the audio."""
    root = write_tones_and_noise(tmp_path_factory.mktemp("labelled"))
    (root / "broken.wav").write_bytes(b"RIFF not audio")
    out = tmp_path_factory.mktemp("tags") / "out"
    assert main(["tag", str(root), "-o", str(out), "--model", tiny_head]) == 0
    rows = [(f"{g}/{g}.{i:05d}.wav", g) for g in ("tones", "noise") for i in range(4)]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(root / "labels.csv", index=False)
    return root, out


def _songs(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "songs").to_pandas().sort_values("song_id").reset_index(drop=True)


def test_tag_stores_the_vector_its_head_reads(tagged, tiny_head):
    _, out = tagged
    table = pq.read_table(out / "embeddings")
    assert table.schema.remove_metadata() == schemas.arrow_schema("embeddings")
    emb = table.to_pandas().sort_values("song_id").reset_index(drop=True)
    songs = _songs(out)
    assert list(emb["song_id"]) == list(songs["song_id"]) and len(emb) == 8  # the broken file has none
    kind = vectors.head_kind(checkpoint.load_spec(tiny_head))
    assert set(emb["feature_id"]) == {kind.feature_id} and set(emb["dims"]) == {400}
    assert set(emb["feature"]) == {"MSD_musicnn:penultimate mean_std of 1 s clips at 16000 Hz"}
    # the head on the stored (float16) vectors gives the songs table's probabilities
    head = vectors.VectorHead(tiny_head)
    probs = head.song_proba(np.stack(emb["vector"]))
    np.testing.assert_allclose(probs, songs[["p_a", "p_b"]].to_numpy(), atol=0.01)
    assert json.loads((out / "run.json").read_text())["n_embeddings"] == 8


def test_no_embeddings_skips_them(tagged, tiny_head, tmp_path):
    root, _ = tagged
    assert main(["tag", str(root), "-o", str(tmp_path / "o"), "--model", tiny_head, "--no-embeddings"]) == 0
    assert not (tmp_path / "o" / "embeddings").exists()


def test_train_on_labels_then_retag_agrees_with_tag_from_audio(tagged, tmp_path):
    root, out = tagged
    ckpt = tmp_path / "head"
    assert main(["train", str(out), "--labels", str(root / "labels.csv"), "-o", str(ckpt)]) == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert spec.genres == ("noise", "tones") and spec.features.kind == "musicnn_embedding"
    assert spec.model.params["pooling"] == "mean_std" and spec.calibration["uncertain_below"] is not None
    cv = spec.metrics["cv"]
    assert cv["n_songs"] == 8 and len(cv["per_fold"]) == 4 and spec.metrics["cv_song_accuracy"] >= 0.75
    assert (ckpt / "train_report.md").read_text().count("| fold |") == 1

    retagged = tmp_path / "retagged"
    assert main(["retag", str(out), "--model", str(ckpt), "-o", str(retagged)]) == 0
    from_audio = tmp_path / "from_audio"
    assert main(["tag", str(root), "-o", str(from_audio), "--model", str(ckpt)]) == 0
    a, b = _songs(retagged), _songs(from_audio)
    assert list(a["song_id"]) == list(b["song_id"]) and len(a) == 8
    assert list(a["genre"]) == list(b["genre"]) == [Path(p).parent.name for p in a["path"]]
    np.testing.assert_allclose(a[["p_noise", "p_tones"]], b[["p_noise", "p_tones"]], atol=0.02)
    assert (a["model_id"] == spec.model_id).all() and a["uncertain"].notna().all()
    for column in ("path", "size", "mtime", "duration_s", "n_clips"):  # copied from the tag output
        assert list(a[column]) == list(_songs(out)[column])
    assert pq.read_table(retagged / "songs").schema.remove_metadata() == schemas.arrow_schema("songs", spec.genres)
    run = json.loads((retagged / "run.json").read_text())
    assert (run["n_songs"], run["n_songs_without_vector"]) == (8, 0)


def test_refusals(tagged, tiny_model, tmp_path, capsys):
    root, out = tagged
    thin = tmp_path / "thin.csv"
    thin.write_text(
        "path,label\ntones/tones.00000.wav,tones\ntones/tones.00001.wav,tones\nnoise/noise.00000.wav,noise\n"
    )
    assert main(["train", str(out), "--labels", str(thin), "-o", str(tmp_path / "h")]) == 2
    assert "at least 2 labels with at least 2 songs" in capsys.readouterr().err
    assert main(["train", str(out), "--labels", "no_such_column", "-o", str(tmp_path / "h")]) == 2
    assert "neither a CSV file nor a column" in capsys.readouterr().err
    # a head of another kind (the tiny log-mel CNN), and the default's stacked head on these vectors
    assert main(["retag", str(out), "--model", tiny_model, "-o", str(tmp_path / "r")]) == 2
    assert "does not read one stored vector per song" in capsys.readouterr().err
    assert main(["retag", str(out), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "reads vectors" in err and "mean_std of 3 s clips at 32000 Hz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_train_from_a_songs_column_with_a_label_map(tagged, tmp_path):
    """--labels COLUMN --label-map: raw values mapped to labels, unmapped ones (two songs here) unused."""
    _, out = tagged
    paths = [p for p in _songs(out)["path"] if not p.endswith("00003.wav")]
    label_map = tmp_path / "map.yaml"
    label_map.write_text("".join(f"'{p}': {Path(p).parent.name}\n" for p in paths))
    ckpt = tmp_path / "head"
    assert main(["train", str(out), "--labels", "path", "--label-map", str(label_map), "-o", str(ckpt)]) == 0
    spec = checkpoint.load_spec(str(ckpt))
    assert spec.train["n_songs"] == {"train": 6} and spec.train["labels"] == "songs column path"
    assert spec.train["n_songs_per_label"] == {"noise": 3, "tones": 3}
