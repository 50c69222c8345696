"""mgr_batch.models.classic: every scikit-learn model fits, predicts, and survives a checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest

from mgr_batch import checkpoint
from mgr_batch.checkpoint import ModelSpec
from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig, ModelConfig
from mgr_batch.errors import CheckpointError, ConfigError
from mgr_batch.models import MODELS, build_model
from mgr_batch.models.classic import ESTIMATORS, ClassicModel

GENRES = ("a", "b", "c")


def songs(n_songs: int = 8, clips_per_song: int = 3, seed: int = 0, shift: float = 3.0):
    """Clips (n, 20, 2) of three separable classes; labels and song ids (clips of a song share both)."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(n_songs * 3) % 3, clips_per_song)
    song = np.repeat(np.arange(n_songs * 3), clips_per_song).astype(str)
    x = rng.standard_normal((len(label), 20, 2)) + shift * label[:, None, None] * np.linspace(-1, 1, 20)[None, :, None]
    return x.astype(np.float32), label, song


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_fits_and_generalizes_to_new_songs(name):
    x, y, groups = songs()
    model = build_model(name, n_classes=3, input_shape=(20, 2)).fit(x, y, groups=groups)
    xt, yt, _ = songs(seed=1)
    probs = model.predict_proba(xt)
    assert probs.shape == (len(xt), 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == yt).mean() > 0.9
    assert set(model.best_params) == set(model.grid)


def test_registry_entries():
    classic = {n for n, m in MODELS.items() if m.family == "classic"}
    assert classic == {"svm", "svm_pca", "logreg", "knn", "tree", "naive_bayes"}
    assert all(MODELS[n].features == "classic58" and MODELS[n].study for n in classic)
    assert build_model("knn", n_classes=3, input_shape=(58, 1)).pca == 15
    assert build_model("knn", n_classes=3, input_shape=(58, 1), params={"pca": 0})._build().steps[-1][0] == "model"


def test_a_genre_missing_from_training_gets_zero_probability():
    x, y, groups = songs()
    keep = y != 1
    model = ClassicModel(name="logreg", n_classes=3, input_shape=(20, 2)).fit(x[keep], y[keep], groups=groups[keep])
    probs = model.predict_proba(x)
    assert (probs[:, 1] == 0).all() and np.allclose(probs.sum(axis=1), 1.0)


def test_bad_parameters_and_unfitted_use_are_clear():
    with pytest.raises(ConfigError, match="bad parameters"):
        ClassicModel(name="tree", n_classes=3, input_shape=(4, 1), no_such_param=1)
    with pytest.raises(ConfigError, match="not fitted"):
        ClassicModel(name="tree", n_classes=3, input_shape=(4, 1)).predict_proba(np.zeros((1, 4, 1)))


def spec(name: str) -> ModelSpec:
    return ModelSpec(genres=GENRES, audio=AudioConfig(sr=8000), clips=ClipConfig(clip_seconds=1.0),
                     features=FeatureConfig(kind="classic58"), model=ModelConfig(name=name))  # fmt: skip


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_checkpoint_round_trip_gives_identical_probabilities(name, tmp_path):
    x, y, groups = songs()
    s = spec(name)
    model = s.build()
    model.input_shape = (20, 2)
    model.fit(x, y, groups=groups)
    saved = checkpoint.save(str(tmp_path), model, s)
    assert saved.model_id.startswith(f"{name}-") and (tmp_path / checkpoint.CLASSIC_WEIGHTS).is_file()
    loaded, loaded_spec = checkpoint.load(str(tmp_path))
    assert isinstance(loaded, ClassicModel) and loaded_spec == saved
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_a_tampered_classic_checkpoint_is_refused(tmp_path):
    x, y, groups = songs()
    s = spec("logreg")
    model = s.build().fit(x, y, groups=groups)
    checkpoint.save(str(tmp_path), model, s)
    (tmp_path / checkpoint.CLASSIC_WEIGHTS).write_bytes(b"not a skops file")
    with pytest.raises(CheckpointError, match="cannot read classic model"):
        checkpoint.load(str(tmp_path))
