"""mgr_batch.models.checkpoint: save and load self-describing checkpoints; broken ones raise CheckpointError."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from mgr_batch.config import GTZAN_GENRES, AudioConfig, ClipConfig, FeatureConfig, ModelConfig
from mgr_batch.errors import CheckpointError
from mgr_batch.models import checkpoint
from mgr_batch.models.checkpoint import ModelSpec


def make_spec(**model_params) -> ModelSpec:
    return ModelSpec(
        genres=GTZAN_GENRES,
        audio=AudioConfig(),
        clips=ClipConfig(),
        features=FeatureConfig(n_mels=32, hop_length=1024),
        model=ModelConfig(name="cnn", params={"channels": [4, 8], **model_params}),
    )


def inputs(n: int = 3) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(-40, 15, size=(n, 32, 65)).astype(np.float32))


def test_save_then_load_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    spec = make_spec()
    model = spec.build().eval()
    saved = checkpoint.save(str(tmp_path / "ck"), model, spec)
    assert sorted(os.listdir(tmp_path / "ck")) == [checkpoint.CONFIG, checkpoint.WEIGHTS]
    loaded, loaded_spec = checkpoint.load(str(tmp_path / "ck"))
    assert not loaded.training
    assert loaded_spec == saved
    assert loaded_spec.model_id == saved.model_id != ""
    assert loaded_spec.input_shape == (32, 65)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs()), model(inputs()), rtol=0, atol=0)


def test_config_json_describes_the_model(tmp_path):
    spec = dataclasses.replace(make_spec(), train={"manifest": "abc"}, metrics={"song_accuracy": 0.5})
    saved = checkpoint.save(str(tmp_path), spec.build(), spec)
    doc = json.loads((tmp_path / checkpoint.CONFIG).read_text())
    assert doc["format_version"] == checkpoint.FORMAT_VERSION
    assert doc["genres"] == list(GTZAN_GENRES)
    assert doc["features"]["n_mels"] == 32 and doc["features"]["hop_length"] == 1024
    assert doc["model"] == {"name": "cnn", "params": {"channels": [4, 8]}, "init_from": None}
    assert doc["activation"] == "softmax"
    assert doc["model_id"] == saved.model_id
    assert doc["train"] == {"manifest": "abc"} and doc["metrics"] == {"song_accuracy": 0.5}
    assert checkpoint.load_spec(str(tmp_path)) == saved


def test_model_id_is_deterministic(tmp_path):
    torch.manual_seed(0)
    model = make_spec().build()
    a = checkpoint.save(str(tmp_path / "a"), model, make_spec())
    b = checkpoint.save(str(tmp_path / "b"), model, make_spec())
    assert a.model_id == b.model_id
    assert a.model_id.startswith("cnn-") and len(a.model_id) == len("cnn-") + 12
    assert (tmp_path / "a" / checkpoint.WEIGHTS).read_bytes() == (tmp_path / "b" / checkpoint.WEIGHTS).read_bytes()
    torch.manual_seed(1)
    other = checkpoint.save(str(tmp_path / "c"), make_spec().build(), make_spec())
    assert other.model_id != a.model_id


def test_model_id_for():
    assert checkpoint.model_id_for("cnn", b"x") == checkpoint.model_id_for("cnn", b"x")
    assert checkpoint.model_id_for("cnn", b"x") != checkpoint.model_id_for("cnn", b"y")
    assert checkpoint.model_id_for("crnn", b"x").startswith("crnn-")


def test_missing_dir_raises(tmp_path):
    with pytest.raises(CheckpointError, match="no model checkpoint"):
        checkpoint.load(str(tmp_path / "nope"))


def test_missing_weights_raise(tmp_path):
    checkpoint.save(str(tmp_path), make_spec().build(), make_spec())
    (tmp_path / checkpoint.WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=checkpoint.WEIGHTS):
        checkpoint.load(str(tmp_path))


CORRUPTIONS = {
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
    "text": lambda good: b"this is not a torch checkpoint\n" * 10,
    "random": lambda good: np.random.default_rng(0).bytes(2048),
}


@pytest.mark.parametrize(
    "corruption",
    [
        "empty",
        "truncated",
        "text",
        "random",
    ],
)
def test_corrupt_weights_raise_checkpoint_error(tmp_path, corruption):
    checkpoint.save(str(tmp_path), make_spec().build(), make_spec())
    good = (tmp_path / checkpoint.WEIGHTS).read_bytes()
    (tmp_path / checkpoint.WEIGHTS).write_bytes(CORRUPTIONS[corruption](good))
    with pytest.raises(CheckpointError):
        checkpoint.load(str(tmp_path))


def test_weights_of_another_shape_raise(tmp_path):
    checkpoint.save(str(tmp_path), make_spec().build(), make_spec())
    doc = json.loads((tmp_path / checkpoint.CONFIG).read_text())
    doc["model"]["params"]["channels"] = [8, 16]
    (tmp_path / checkpoint.CONFIG).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load(str(tmp_path))


@pytest.mark.parametrize(
    "edit",
    [
        lambda doc: "{not json",
        lambda doc: json.dumps({k: v for k, v in doc.items() if k != "genres"}),
        lambda doc: json.dumps({**doc, "features": {**doc["features"], "n_mel": 3}}),
        lambda doc: json.dumps({**doc, "audio": 5}),
    ],
    ids=["not-json", "no-genres", "unknown-key", "not-a-mapping"],
)
def test_bad_config_raises(tmp_path, edit):
    checkpoint.save(str(tmp_path), make_spec().build(), make_spec())
    doc = json.loads((tmp_path / checkpoint.CONFIG).read_text())
    (tmp_path / checkpoint.CONFIG).write_text(edit(doc))
    with pytest.raises(CheckpointError):
        checkpoint.load(str(tmp_path))


def test_spec_json_round_trip():
    spec = dataclasses.replace(make_spec(dropout=0.1), model_id="cnn-x", train={"a": 1})
    assert ModelSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_fixture_checkpoint_loads(tiny_model):
    model, spec = checkpoint.load(tiny_model)
    assert spec.genres == GTZAN_GENRES and spec.input_shape == (32, 65)
    assert model(inputs(2)).shape == (2, len(GTZAN_GENRES))


def test_packaged_models_load_and_predict():
    """The shipped default (stacked MSD_musicnn + EfficientAT embeddings, song-level head), the earlier default
    (musicnn embedding + logistic regression) and the packaged log-mel CNN load by name, are small, and give
    one probability row per clip of their own input shape."""
    for name, kind in ((None, "stacked_embedding"), ("musicnn-logreg", "musicnn_embedding"), ("logmel-cnn", "logmel")):
        model, spec = checkpoint.load(name)
        assert spec.features.kind == kind and spec.genres == GTZAN_GENRES
        folder = checkpoint.resolve(name)
        assert sum(f.stat().st_size for f in os.scandir(folder)) < 1_000_000  # the package stays small
        x = np.random.default_rng(0).normal(size=(3, *spec.input_shape)).astype(np.float32)
        probs = (
            model.predict_proba(x)
            if spec.family == "classic"
            else torch.softmax(model(torch.from_numpy(x)), -1).detach().numpy()
        )
        assert probs.shape == (3, len(GTZAN_GENRES)) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert checkpoint.resolve("default") == checkpoint.resolve(None) != checkpoint.resolve("logmel-cnn")
    assert checkpoint.resolve("musicnn-logreg") != checkpoint.resolve(None)
    spec = checkpoint.load_spec(None)
    assert spec.train["n_songs"] == {"train": 444} and spec.temperature > 0 and spec.uncertain_below > 0
