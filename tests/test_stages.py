"""mgr_batch.stages without Ray: featurize a mixed batch, predict, aggregate, explode for training; the clip
selection of clips.crops and the per-process cache of execution.cache that the stages run under."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from audio_factory import write_broken_corpus, write_chirp, write_noise, write_spliced_mp3, write_tone

from mgr_batch.clips import crops
from mgr_batch.clips import windows as clips
from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.execution import cache
from mgr_batch.features import registry as features
from mgr_batch.io import audio, storage
from mgr_batch.models import checkpoint
from mgr_batch.stages import aggregate, decode, predict, training

FEATURES = FeatureConfig(n_mels=32, hop_length=1024)

#: good files: name -> seconds; with 3 s clips back to back they give 1, 2 and 3 clips
GOOD = {"tone.wav": 1.0, "noise.flac": 7.3, "chirp.ogg": 9.5}


def listing_batch(folder) -> dict[str, np.ndarray]:
    files = storage.list_inputs(str(folder)).files
    return {c: files[c].to_numpy() for c in files.columns}


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "in"
    write_tone(folder / "tone.wav", seconds=GOOD["tone.wav"], sr=22050)
    write_noise(folder / "noise.flac", seconds=GOOD["noise.flac"], sr=44100, channels=2)
    write_chirp(folder / "chirp.ogg", seconds=GOOD["chirp.ogg"], sr=48000)
    broken = write_broken_corpus(folder)
    return folder, broken


@pytest.mark.parametrize("clip_seconds, hop_seconds", [(3.0, None), (2.0, 1.0)])
def test_featurize_batch_mixing_good_and_broken_files(mixed_folder, clip_seconds, hop_seconds):
    folder, broken = mixed_folder
    batch = listing_batch(folder)
    clip_cfg = ClipConfig(clip_seconds=clip_seconds, hop_seconds=hop_seconds)
    out = decode.featurize_batch(batch, audio=AudioConfig(), clip_cfg=clip_cfg, feature_cfg=FEATURES)

    n = len(GOOD) + len(broken)
    assert len(batch["path"]) == n
    for column in (*decode.LISTING_COLUMNS, *decode.FEATURE_COLUMNS):
        assert len(out[column]) == n, column
    np.testing.assert_array_equal(out["path"], batch["path"])  # input columns pass through, in order
    np.testing.assert_array_equal(out["song_id"], batch["song_id"])

    n_mels, n_frames = features.feature_shape(sr=22050, clip_seconds=clip_seconds, cfg=FEATURES)
    names = [str(p).rsplit("/", 1)[-1] for p in out["path"]]
    for i, name in enumerate(names):
        if name in GOOD:
            starts = clips.clip_starts(GOOD[name], clip_seconds=clip_seconds, hop_seconds=clip_cfg.hop)
            assert out["status"][i] == "ok", name
            assert out["error_stage"][i] == out["error_type"][i] == out["error_message"][i] == ""
            assert out["n_clips"][i] == len(starts)
            np.testing.assert_allclose(out["clip_start_s"][i], starts)
            assert out["features"][i].shape == (len(starts), n_mels, n_frames)
            assert out["features"][i].dtype == np.float32
            assert np.isfinite(out["features"][i]).all()
            assert out["duration_s"][i] == pytest.approx(GOOD[name], rel=0.01)
            assert out["analyzed_s"][i] == pytest.approx(GOOD[name], rel=0.01)
        else:
            assert out["status"][i] == "error", name
            assert out["error_type"][i] == broken[name], name
            assert out["error_stage"][i] == "decode"
            assert len(out["error_message"][i]) > 0
            assert out["n_clips"][i] == 0
            assert out["features"][i].shape == (0, n_mels, n_frames)
            assert out["clip_start_s"][i].shape == (0,)
            assert out["duration_s"][i] == 0.0 and out["sample_rate"][i] == 0 and out["channels"][i] == 0

    rows = {name: i for i, name in enumerate(names)}
    assert out["sample_rate"][rows["noise.flac"]] == 44100 and out["channels"][rows["noise.flac"]] == 2
    assert out["sample_rate"][rows["chirp.ogg"]] == 48000 and out["channels"][rows["chirp.ogg"]] == 1
    for column, dtype in [
        ("duration_s", np.float64),
        ("sample_rate", np.int32),
        ("channels", np.int32),
        ("n_clips", np.int32),
    ]:
        assert out[column].dtype == dtype, column


def test_featurize_batch_features_match_the_pure_functions(tmp_path):
    path = write_noise(tmp_path / "n.flac", seconds=7.0, sr=44100, channels=2)
    batch = listing_batch(tmp_path)
    out = decode.featurize_batch(batch, audio=AudioConfig(), clip_cfg=ClipConfig(), feature_cfg=FEATURES)
    decoded = audio.load(str(path), sr=22050)
    song_clips, starts = clips.cut(decoded.y, sr=22050, clip_seconds=3.0, hop_seconds=3.0)
    np.testing.assert_allclose(out["features"][0], features.featurize(song_clips, sr=22050, cfg=FEATURES), atol=1e-4)


def test_the_stages_run_the_pretrained_networks_in_the_precision_they_are_given(tmp_path):
    """featurize_batch (networks in the decode tasks) and the Predictor (networks in the actors, on the decoded
    clips) each give float32's numbers with "float32" and bfloat16's, close to them, with "bfloat16"."""
    write_chirp(tmp_path / "c.wav", seconds=3.0, sr=32000)
    spec = checkpoint.load_spec("default")
    clip_cfg = ClipConfig(clip_seconds=3.0)
    batch = listing_batch(tmp_path)

    def stage(precision: str, feature_cfg: FeatureConfig = spec.features) -> np.ndarray:
        out = decode.featurize_batch(
            batch, audio=spec.audio, clip_cfg=clip_cfg, feature_cfg=feature_cfg, precision=precision
        )
        return out["features"][0]

    full, half = stage("float32"), stage("bfloat16")
    assert full.shape == half.shape == (1, *spec.input_shape)
    assert 0 < np.abs(half - full).max() and np.linalg.norm(half - full) < 0.05 * np.linalg.norm(full)
    raw = stage("float32", FeatureConfig(kind="raw"))  # what the decode tasks send the actors
    for precision, want in [("float32", full), ("bfloat16", half)]:
        got = predict.Predictor("default", device="cpu", precision=precision).embedded(raw)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_featurize_batch_max_duration(tmp_path):
    write_tone(tmp_path / "long.wav", seconds=10.0)
    out = decode.featurize_batch(
        listing_batch(tmp_path), audio=AudioConfig(max_duration=4.0), clip_cfg=ClipConfig(), feature_cfg=FEATURES
    )
    assert out["duration_s"][0] == pytest.approx(10.0)
    assert out["analyzed_s"][0] == pytest.approx(4.0)
    assert out["n_clips"][0] == 1


def test_unreadable_files_are_read_errors(tmp_path):
    write_tone(tmp_path / "ok.wav", seconds=1.0)
    (tmp_path / "a_dir.wav").mkdir()
    batch = {
        "path": np.array(
            [str(tmp_path / "missing.wav"), str(tmp_path / "a_dir.wav"), str(tmp_path / "ok.wav")], dtype=object
        )
    }
    out = decode.featurize_batch(batch, audio=AudioConfig(), clip_cfg=ClipConfig(), feature_cfg=FEATURES)
    assert list(out["status"]) == ["error", "error", "ok"]
    assert list(out["error_type"][:2]) == ["AudioReadError", "AudioReadError"]
    assert list(out["error_stage"][:2]) == ["read", "read"]
    assert "missing.wav" in out["error_message"][0]


def test_featurize_empty_batch():
    out = decode.featurize_batch(
        {"path": np.zeros(0, dtype=object)}, audio=AudioConfig(), clip_cfg=ClipConfig(), feature_cfg=FEATURES
    )
    for column in decode.FEATURE_COLUMNS:
        assert len(out[column]) == 0, column


@pytest.fixture
def featurized(mixed_folder):
    folder, _ = mixed_folder
    return decode.featurize_batch(
        listing_batch(folder), audio=AudioConfig(), clip_cfg=ClipConfig(), feature_cfg=FEATURES
    )


def test_predictor_clip_probs_are_distributions(tiny_model, featurized):
    predictor = predict.Predictor(tiny_model, batch_size=2, device="cpu")
    assert predictor.spec.features == FEATURES
    out = predictor(featurized)
    assert "features" not in out
    assert set(featurized) - {"features"} <= set(out)
    n_genres = len(predictor.spec.genres)
    assert len(out["clip_probs"]) == len(featurized["path"])
    for i, probs in enumerate(out["clip_probs"]):
        assert probs.shape == (featurized["n_clips"][i], n_genres)
        assert probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert (probs >= 0).all()


def test_predictor_batch_size_does_not_change_results(tiny_model, featurized):
    one = predict.Predictor(tiny_model, batch_size=1, device="cpu")(dict(featurized))
    many = predict.Predictor(tiny_model, batch_size=64, device="cpu")(dict(featurized))
    for a, b in zip(one["clip_probs"], many["clip_probs"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_call_cached_builds_a_stage_once_per_process_and_keeps_a_few(tiny_model, featurized, monkeypatch):
    """Plain tasks run the model where they decode: the Predictor is loaded on the first batch only, equals a
    fresh one's output, and only the last CACHED_STAGES stage objects stay loaded."""
    built = []

    class Counting(predict.Predictor):
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(cache, "_CACHED", type(cache._CACHED)())
    kw = {"model_uri": tiny_model, "device": "cpu", "batch_size": 2}
    first = cache.call_cached(dict(featurized), stage=Counting, kwargs=kw)
    again = cache.call_cached(dict(featurized), stage=Counting, kwargs=dict(kw))
    assert len(built) == 1
    fresh = predict.Predictor(tiny_model, batch_size=2, device="cpu")(dict(featurized))
    for a, b, c in zip(first["clip_probs"], again["clip_probs"], fresh["clip_probs"], strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-6)
    for bs in (3, 4, 5):  # other arguments are other stage objects; the oldest are dropped
        cache.call_cached(dict(featurized), stage=Counting, kwargs=kw | {"batch_size": bs})
    assert len(built) == 4 and len(cache._CACHED) == cache.CACHED_STAGES
    cache.call_cached(dict(featurized), stage=Counting, kwargs=kw)
    assert len(built) == 5  # batch_size 2 had been dropped, so it is built again


def test_predictor_on_a_batch_of_errors_only(tiny_model):
    empty = np.empty(2, dtype=object)
    empty[0] = np.zeros((0, 32, 65), np.float32)
    empty[1] = np.zeros((0, 32, 65), np.float32)
    out = predict.Predictor(tiny_model, device="cpu")({"path": np.array(["a", "b"], dtype=object), "features": empty})
    assert [p.shape for p in out["clip_probs"]] == [(0, 10), (0, 10)]


def test_predict_proba_matches_the_model(tiny_model):
    import torch

    predictor = predict.Predictor(tiny_model, device="cpu")
    model, _ = checkpoint.load(tiny_model)
    x = np.random.default_rng(0).normal(-30, 10, size=(5, 32, 65)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=-1).numpy()
    np.testing.assert_allclose(predictor.predict_proba(x), expected, atol=1e-5)


# A hand case where the aggregations disagree: the mean favours genre 0, the product genre 1.
CLIP_PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.3, 0.2]])


@pytest.mark.parametrize(
    "method, expected",
    [
        ("mean", [1.3 / 3, 1.1 / 3, 0.6 / 3]),
        ("vote", [2 / 3, 1 / 3, 0.0]),
        ("log", np.array([0.035, 0.036, 0.006]) / 0.077),
    ],
)
def test_song_probabilities(method, expected):
    got = aggregate.song_probabilities(CLIP_PROBS, method=method)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert got.sum() == pytest.approx(1.0)


def test_log_aggregation_survives_zero_probabilities():
    got = aggregate.song_probabilities(np.array([[1.0, 0.0], [0.5, 0.5]]), method="log")
    assert np.isfinite(got).all() and got[0] == pytest.approx(1.0)


def test_one_clip_song_is_its_clip():
    row = np.array([[0.2, 0.5, 0.3]])
    for method in ("mean", "log"):
        np.testing.assert_allclose(aggregate.song_probabilities(row, method=method), row[0], atol=1e-9)


def test_unknown_aggregation():
    with pytest.raises(ValueError, match="median"):
        aggregate.song_probabilities(CLIP_PROBS, method="median")


@pytest.mark.parametrize(
    "probs, expected",
    [
        ([0.9, 0.09, 0.01], 1.0),
        ([0.5, 0.05, 0.45], np.log10(0.5 / 0.45)),
        ([0.25, 0.25, 0.5], np.log10(2.0)),
        ([0.4, 0.4, 0.2], 0.0),
        ([1.0, 0.0, 0.0], 12.0),  # p2 is floored at 1e-12
    ],
)
def test_certainty(probs, expected):
    assert aggregate.certainty(np.array(probs)) == pytest.approx(expected)


def test_certainty_of_rows():
    got = aggregate.certainty(np.array([[0.9, 0.09, 0.01], [0.25, 0.25, 0.5]]))
    np.testing.assert_allclose(got, [1.0, np.log10(2.0)])


def _object_array(items):
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def test_explode_clips():
    feats = [np.full((n, 4, 5), i, np.float32) for i, n in enumerate([2, 0, 3, 1])]
    batch = {
        "path": np.array(["a", "b", "c", "d"], dtype=object),
        "song_id": np.array(["sa", "sb", "sc", "sd"], dtype=object),
        "status": np.array(["ok", "error", "ok", "ok"]),
        "split": np.array(["train", "train", "train", "valid"]),
        "label": np.array(["rock", "jazz", "blues", "rock"]),
        "features": _object_array(feats),
    }
    genres = ("blues", "jazz", "rock")
    train = training.explode_clips(batch, genres=genres, split="train")
    assert train["features"].shape == (5, 4, 5) and train["features"].dtype == np.float32
    np.testing.assert_array_equal(train["features"][:, 0, 0], [0, 0, 2, 2, 2])
    np.testing.assert_array_equal(train["label"], [2, 2, 0, 0, 0])
    assert train["label"].dtype == np.int64
    assert list(train["song_id"]) == ["sa", "sa", "sc", "sc", "sc"]
    np.testing.assert_array_equal(train["clip_index"], [0, 1, 0, 1, 2])

    valid = training.explode_clips(batch, genres=genres, split="valid")
    assert list(valid["song_id"]) == ["sd"] and list(valid["label"]) == [2]

    test = training.explode_clips(batch, genres=genres, split="test")
    assert test["features"].shape == (0, 4, 5)
    assert all(len(v) == 0 for v in test.values())


def test_explode_clips_keys_and_a_fixed_shape():
    batch = {
        "path": np.array(["a", "b", "c"], dtype=object),
        "song_id": np.array(["sa", "sb", "sc"], dtype=object),
        "status": np.array(["ok", "ok", "ok"]),
        "split": np.array(["train", "train", "valid"]),
        "label": np.array(["rock", "jazz", "rock"]),
        "features": _object_array([np.zeros((2, 4, 5), np.float32), np.zeros((1, 4, 5)), np.zeros((1, 4, 5))]),
    }
    train = training.explode_clips(batch, genres=("jazz", "rock"), split="train", shape=(4, 5))
    assert train["features"].shape == (3, 4, 5) and train["features"].dtype == np.float32
    assert list(train["clip_key"]) == [
        training.clip_key("sa", 0),
        training.clip_key("sa", 1),
        training.clip_key("sb", 0),
    ]
    assert list(train["song_key"]) == [training.song_key("sa")] * 2 + [training.song_key("sb")]
    assert len(set(train["clip_key"])) == 3 and (train["clip_key"] >= 0).all()
    # A batch with no row of the split still has the clips' shape (a (0, 0) block would make the column ragged).
    none = training.explode_clips(batch, genres=("jazz", "rock"), split="test", shape=(4, 5))
    assert none["features"].shape == (0, 4, 5)
    with pytest.raises(ValueError, match=r"features of a have shape \(4, 5\), not \(4, 6\)"):
        training.explode_clips(batch, genres=("jazz", "rock"), split="train", shape=(4, 6))


def test_shard_tallies_of_disjoint_parts_xor_to_the_whole():
    import torch

    keys = np.array([training.clip_key(f"s{i // 2}", i % 2) for i in range(10)], np.int64)
    songs = np.array([training.song_key(f"s{i // 2}") for i in range(10)], np.int64)
    a, b, whole = training.ShardTally(), training.ShardTally(), training.ShardTally()
    a.add(keys[:3], songs[:3])
    a.add(keys[3:6], songs[3:6])
    b.add(keys[6:], songs[6:])
    whole.add(keys, songs)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ra, rb, rw = a.record(0, net), b.record(1, net), whole.record(0, net)
    assert (ra["clips"], ra["songs"], rb["clips"], rb["songs"]) == (6, 3, 4, 2)
    assert int(ra["clips_digest"], 16) ^ int(rb["clips_digest"], 16) == int(rw["clips_digest"], 16)
    assert ra["weights"] == rb["weights"] == training.weights_digest(net) and len(ra["weights"]) == 16
    net[1].running_mean += 1  # buffers are not weights
    assert training.weights_digest(net) == ra["weights"]
    with torch.no_grad():
        net[0].weight[0, 0] += 1e-6
    assert training.weights_digest(net) != ra["weights"]


@pytest.mark.parametrize(
    "schedule, per_batch", [("cosine", False), ("constant", False), ("cyclic", True), ("onecycle", True)]
)
def test_lr_schedule_steps_per_batch_only_for_the_cyclic_ones(schedule, per_batch):
    import torch

    from mgr_batch.config import OptimConfig

    optim = OptimConfig(schedule=schedule, epochs=3, lr=1e-2)
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=optim.lr)
    sched, stepped_per_batch = training.lr_schedule(opt, optim, steps_per_epoch=4)
    assert stepped_per_batch is per_batch
    lrs = []
    for _ in range(optim.epochs * (4 if per_batch else 1)):  # a whole run never exceeds the peak lr
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) <= optim.lr * (1 + 1e-9)
    if schedule == "constant":
        assert lrs == [optim.lr] * optim.epochs


def test_epoch_line_names_the_valid_accuracies():
    line = training.epoch_line(
        {"epoch": 3, "train_loss": 1.234, "valid_song_accuracy": 0.61, "valid_clip_accuracy": 0.552, "valid_n": 9},
        10,
    )
    assert line == "epoch 3/10: train loss 1.2340, valid song accuracy 61.0%, valid clip accuracy 55.2%"


def test_select_clips_fixed_keeps_every_window_and_the_whole_song():
    y = np.ones(22050 * 10, np.float32)
    clips_, starts, spans = crops.select_clips(y, sr=22050, cfg=ClipConfig())
    assert len(clips_) == 3 and starts.tolist() == [0.0, 3.0, 6.0]
    assert spans.tolist() == [[0.0, 10.0]]


def test_select_clips_representative_keeps_one_part_of_a_three_part_song():
    from audio_factory import three_part_song

    sr = 22050
    y = three_part_song(sr=sr).astype(np.float32)
    clips_, starts, spans = crops.select_clips(y, sr=sr, cfg=ClipConfig(select="representative"))
    assert 1 <= len(clips_) < 20 and clips_.shape[1] == 3 * sr
    part = int((starts[0] + 1.5) // 20)  # each part is 20 s long
    assert all(int((s + 1.5) // 20) == part for s in starts), starts  # every clip in one part
    assert all(part * 20 - 2 <= lo and hi <= part * 20 + 22 for lo, hi in spans), spans


@pytest.mark.parametrize(
    "n_frames, step_frames, expected_frames",
    [(65, 4, [1.5 + 4 * j for j in range(16)] + [64.0]), (8, 4, [1.5, 5.5]), (5, 8, [2.0]), (3, 1, [0.0, 1.0, 2.0])],
)
def test_step_times_are_the_middle_of_each_steps_frames(n_frames, step_frames, expected_frames):
    times = predict.step_times(
        np.array([0.0, 10.0]), n_frames=n_frames, step_frames=step_frames, hop_length=512, sr=1024
    )
    np.testing.assert_allclose(times, [np.array(expected_frames) / 2, 10.0 + np.array(expected_frames) / 2])


def test_predictor_timeline_columns(tiny_crnn, featurized):
    """The crnn's belief per step: times inside each clip and increasing, rows summing to 1, means = clip probs."""
    predictor = predict.Predictor(tiny_crnn, batch_size=2, device="cpu", timeline=True)
    spec, step_frames = predictor.spec, predictor.model.step_frames
    out = predictor(dict(featurized))
    n_frames = featurized["features"][0].shape[-1]
    n_steps = -(-n_frames // step_frames)
    seconds_per_step = step_frames * spec.features.hop_length / spec.audio.sr
    plain = predict.Predictor(tiny_crnn, batch_size=64, device="cpu")(dict(featurized))
    for i in range(len(featurized["path"])):
        probs, times, starts = out["timeline_probs"][i], out["timeline_s"][i], featurized["clip_start_s"][i]
        n_clips = featurized["n_clips"][i]
        assert probs.shape == (n_clips, n_steps, len(spec.genres)) and probs.dtype == np.float32
        assert times.shape == (n_clips, n_steps)
        if not n_clips:
            continue
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
        # softmax(forward) is the time mean of the per-step softmax, also through another batch size
        np.testing.assert_allclose(probs.mean(axis=1), out["clip_probs"][i], atol=1e-5)
        np.testing.assert_allclose(out["clip_probs"][i], plain["clip_probs"][i], atol=1e-5)
        assert (np.diff(times, axis=1) > 0).all()
        assert (times >= starts[:, None]).all() and (times <= starts[:, None] + spec.clips.clip_seconds).all()
        np.testing.assert_allclose(np.diff(times[:, :-1], axis=1), seconds_per_step)
        if featurized["duration_s"][i] >= spec.clips.clip_seconds:  # no zero-padded clip: inside the song
            assert times.max() <= featurized["duration_s"][i]
    assert "timeline_probs" not in plain


def test_predictor_timeline_needs_a_model_with_one(tiny_model):
    with pytest.raises(ConfigError, match="has no timeline"):
        predict.Predictor(tiny_model, device="cpu", timeline=True)
    assert not predict.has_timeline(checkpoint.load(tiny_model)[0])


def test_call_cached_freezes_the_gc_when_it_builds_a_stage_if_asked(tiny_model, featurized, monkeypatch):
    """freeze_gc moves what is alive after a build (modules, the model) to the GC's permanent generation;
    a call that finds its stage cached, or one without freeze_gc, freezes nothing."""
    monkeypatch.setattr(cache, "_CACHED", type(cache._CACHED)())
    kw = {"model_uri": tiny_model, "device": "cpu", "batch_size": 2}
    gc.unfreeze()
    try:
        cache.call_cached(dict(featurized), stage=predict.Predictor, kwargs=kw)
        assert gc.get_freeze_count() == 0
        out = cache.call_cached(
            dict(featurized), stage=predict.Predictor, kwargs=kw | {"batch_size": 3}, freeze_gc=True
        )
        assert gc.get_freeze_count() > 1000
        assert len(out["clip_probs"]) == len(featurized["features"])
    finally:
        gc.unfreeze()
    freezes = []
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(1))
    cache.call_cached(dict(featurized), stage=predict.Predictor, kwargs=kw | {"batch_size": 3}, freeze_gc=True)
    assert freezes == []  # cached: built before
    cache.call_cached(dict(featurized), stage=predict.Predictor, kwargs=kw | {"batch_size": 4}, freeze_gc=True)
    assert freezes == [1]


def test_decoder_notes_stay_with_their_file(tmp_path, capfd):
    """What mpg123 prints to the C-level stderr while decoding a file lands in that file's row, not on the
    screen (printed once more, tagged with the path, for the worker's log)."""
    paths = [
        write_spliced_mp3(tmp_path / "resynced.mp3", garbage=300),
        write_spliced_mp3(tmp_path / "broken.mp3", garbage=3000),
        write_tone(tmp_path / "clean.wav", seconds=3.0),
    ]
    batch = {"path": np.array([str(p) for p in paths], dtype=object)}
    out = decode.featurize_batch(batch, audio=AudioConfig(), clip_cfg=ClipConfig(), feature_cfg=FEATURES)
    # mpg123 gives up on broken.mp3: FFmpeg decodes it up to the damage, and the song is reported cut.
    assert list(out["status"]) == ["ok", "ok", "ok"] and list(out["truncated"]) == [False, True, False]
    resynced, broken, clean = out["decode_notes"]
    assert "Illegal Audio-MPEG-Header" in resynced and "Trying to resync" in resynced
    assert "Illegal Audio-MPEG-Header" in broken
    assert clean == "" and out["error_message"][2] == ""
    err = capfd.readouterr().err
    assert f"decoder notes on {paths[0]}: {resynced}" in err
    assert err.count("Illegal Audio-MPEG-Header") == 2  # only the tagged copies: the raw notes were captured
