"""mgr_batch.models.classic: every scikit-learn model fits, predicts, and survives a checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest

from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig, ModelConfig
from mgr_batch.errors import CheckpointError, ConfigError
from mgr_batch.models import MODELS, build_model, checkpoint
from mgr_batch.models.checkpoint import ModelSpec
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
    return ModelSpec(
        genres=GENRES,
        audio=AudioConfig(sr=8000),
        clips=ClipConfig(clip_seconds=1.0),
        features=FeatureConfig(kind="classic58"),
        model=ModelConfig(name=name),
    )


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


def test_pool_rows_gives_each_songs_mean_and_std_in_order_of_first_clip():
    from mgr_batch.models.classic import pool_rows

    x = np.array([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0], [5.0, 4.0]])
    groups = np.array(["s2", "s2", "s1", "s2"])
    rows, first = pool_rows(x, groups, "mean_std")
    assert list(first) == [0, 2]
    np.testing.assert_allclose(rows[0], [3.0, 2.0, np.std([1, 3, 5]), np.std([0, 2, 4])])
    np.testing.assert_allclose(rows[1], [10.0, 10.0, 0.0, 0.0])
    np.testing.assert_allclose(pool_rows(x, groups, "mean")[0], rows[:, :2])


@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_song_level_heads_fit_one_row_per_song_and_score_songs_from_their_pooled_clips(pooling):
    x, y, groups = songs(n_songs=10, clips_per_song=4)
    model = ClassicModel(name="logreg", n_classes=3, input_shape=(20, 2), pooling=pooling, grid={}, C=1.0)
    model.fit(x, y, groups=groups)
    assert model.song_level and model.pipeline.n_features_in_ == 40 * (2 if pooling == "mean_std" else 1)
    xt, yt, gt = songs(n_songs=4, clips_per_song=4, seed=1)
    order = list(dict.fromkeys(gt))  # songs in order of first clip, as rows() gives them
    song_probs = np.stack([model.predict_song_proba(xt[gt == g]) for g in order])
    rows, _, _ = model.rows(xt, yt, gt)
    # the head on the pooled row, not the mean of its clips' probabilities
    np.testing.assert_allclose(song_probs, model.predict_rows(rows), atol=1e-6)
    assert not np.allclose(song_probs, np.stack([model.predict_proba(xt[gt == g]).mean(0) for g in order]), atol=1e-3)
    assert (song_probs.argmax(1) == [yt[gt == g][0] for g in order]).mean() > 0.9
    # a clip is scored as a song of one clip
    one = xt[:1]
    np.testing.assert_allclose(model.predict_proba(one)[0], model.predict_song_proba(one), atol=1e-6)


def test_out_of_fold_song_probabilities_never_see_their_song():
    x, y, groups = songs(n_songs=10, clips_per_song=2)
    model = ClassicModel(name="logreg", n_classes=3, input_shape=(20, 2), pooling="mean", grid={}, C=1.0).fit(
        x, y, groups
    )
    probs, labels = model.out_of_fold_song_proba(x, y, groups, folds=5)
    assert probs.shape == (30, 3) and list(labels) == [int(y[groups == g][0]) for g in np.unique(groups)]
    assert (probs.argmax(1) == labels).mean() > 0.9


def test_unknown_pooling_is_a_config_error():
    with pytest.raises(ConfigError, match="pooling"):
        ClassicModel(name="logreg", n_classes=3, input_shape=(20, 2), pooling="max")
