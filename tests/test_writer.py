"""mgr_batch.io.writer: predicted batches to songs/clips/errors tables that match the JSON schemas."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from audio_factory import write_broken_corpus, write_catalog

from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig
from mgr_batch.io import schemas, storage, writer
from mgr_batch.stages import decode, predict

GENRES = ("blues", "jazz", "rock")
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
JSON_TYPES = {
    "string": "string",
    "binary": "binary",
    "int32": "int32",
    "int64": "int64",
    "float32": "float",
    "float64": "double",
    "list<string>": "list<item: string>",
    "list<float64>": "list<item: double>",
    "bool": "bool",
}


def _objects(items):
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def hand_batch() -> dict[str, np.ndarray]:
    """Three songs: two tagged (2 clips and 1 clip) around one that failed to decode."""
    clip_probs = [
        np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], np.float32),
        np.zeros((0, 3), np.float32),
        np.array([[0.2, 0.2, 0.6]], np.float32),
    ]
    return {
        "path": np.array(["/m/a.wav", "/m/b.mp3", "/m/c.flac"], dtype=object),
        "song_id": np.array(["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"], dtype=object),
        "size": np.array([100, 0, 300], np.int64),
        "mtime": np.array([1.5, 2.5, 3.5]),
        "status": np.array(["ok", "error", "ok"]),
        "duration_s": np.array([6.2, 0.0, 2.0]),
        "analyzed_s": np.array([6.2, 0.0, 2.0]),
        "sample_rate": np.array([44100, 0, 22050], np.int32),
        "channels": np.array([2, 0, 1], np.int32),
        "n_clips": np.array([2, 0, 1], np.int32),
        "clip_start_s": _objects([np.array([0.0, 3.0]), np.zeros(0), np.array([0.0])]),
        "used_start_s": _objects([np.array([0.0]), np.zeros(0), np.array([0.0])]),
        "used_end_s": _objects([np.array([6.2]), np.zeros(0), np.array([2.0])]),
        "error_stage": np.array(["", "decode", ""]),
        "error_type": np.array(["", "AudioDecodeError", ""]),
        "error_message": np.array(["", "not decodable audio", ""]),
        "clip_probs": _objects(clip_probs),
    }


def json_columns(name: str, genres: tuple[str, ...]) -> list[tuple[str, str]]:
    doc = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    cols = [(c["name"], JSON_TYPES[c["type"]]) for c in doc["columns"]]
    if "genre_columns" in doc:
        cols += [(f"p_{g}", JSON_TYPES[doc["genre_columns"]["type"]]) for g in genres]
    return cols


@pytest.fixture
def tables():
    return writer.build_tables(hand_batch(), genres=GENRES, model_id="cnn-123", clip_seconds=3.0)


@pytest.mark.parametrize("name", schemas.TAG_TABLES)
def test_tables_equal_the_json_schemas(tables, name):
    table = tables[name]
    assert [(f.name, str(f.type)) for f in table.schema] == json_columns(name, GENRES)
    assert table.schema.equals(schemas.arrow_schema(name, GENRES))


def test_songs_table(tables):
    songs = tables["songs"].to_pydict()
    assert songs["song_id"] == ["aaaaaaaaaaaaaaaa", "cccccccccccccccc"]
    assert songs["path"] == ["/m/a.wav", "/m/c.flac"]
    assert songs["size"] == [100, 300] and songs["mtime"] == [1.5, 3.5]
    assert songs["sample_rate"] == [44100, 22050] and songs["channels"] == [2, 1] and songs["n_clips"] == [2, 1]
    np.testing.assert_allclose(songs["p_blues"], [0.4, 0.2], atol=1e-6)
    np.testing.assert_allclose(songs["p_jazz"], [0.4, 0.2], atol=1e-6)
    np.testing.assert_allclose(songs["p_rock"], [0.2, 0.6], atol=1e-6)
    assert songs["genre"] == ["blues", "rock"]  # a tie goes to the genre listed first
    assert songs["top3"] == [["blues", "jazz", "rock"], ["rock", "blues", "jazz"]]
    np.testing.assert_allclose(songs["confidence"], [0.4, 0.6], atol=1e-6)
    np.testing.assert_allclose(songs["certainty"], [0.0, np.log10(3.0)], atol=1e-6)
    assert songs["model_id"] == ["cnn-123", "cnn-123"]


def test_clips_table(tables):
    clips = tables["clips"].to_pydict()
    sa, sc = "aaaaaaaaaaaaaaaa", "cccccccccccccccc"
    assert clips["clip_id"] == [f"{sa}-00000", f"{sa}-00001", f"{sc}-00000"]
    assert clips["song_id"] == [sa, sa, sc]
    assert clips["path"] == ["/m/a.wav", "/m/a.wav", "/m/c.flac"]
    assert clips["clip_index"] == [0, 1, 0]
    assert clips["start_s"] == [0.0, 3.0, 0.0] and clips["end_s"] == [3.0, 6.0, 3.0]
    assert clips["genre"] == ["blues", "jazz", "rock"]
    np.testing.assert_allclose(clips["confidence"], [0.7, 0.6, 0.6], atol=1e-6)
    np.testing.assert_allclose(clips["p_rock"], [0.1, 0.3, 0.6], atol=1e-6)


def test_errors_table(tables):
    assert tables["errors"].to_pylist() == [
        {
            "song_id": "bbbbbbbbbbbbbbbb",
            "path": "/m/b.mp3",
            "path_bytes": None,
            "size": 0,
            "mtime": 2.5,
            "stage": "decode",
            "error_type": "AudioDecodeError",
            "message": "not decodable audio",
            "model_id": "cnn-123",
        }
    ]


@pytest.mark.parametrize("aggregation, genre", [("mean", "blues"), ("vote", "blues"), ("log", "jazz")])
def test_aggregation_choice(aggregation, genre):
    batch = hand_batch()
    batch["clip_probs"][0] = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.3, 0.2]], np.float32)
    batch["clip_start_s"][0] = np.array([0.0, 3.0, 6.0])
    songs = writer.build_tables(batch, genres=GENRES, model_id="m", clip_seconds=3.0, aggregation=aggregation)["songs"]
    assert songs.column("genre")[0].as_py() == genre


def test_all_errors_and_no_errors():
    batch = hand_batch()
    only_errors = {k: v[1:2] for k, v in batch.items()}
    tables = writer.build_tables(only_errors, genres=GENRES, model_id="m", clip_seconds=3.0)
    assert (tables["songs"].num_rows, tables["clips"].num_rows, tables["errors"].num_rows) == (0, 0, 1)
    assert tables["songs"].schema.equals(schemas.arrow_schema("songs", GENRES))
    no_errors = {k: v[[0, 2]] for k, v in batch.items()}
    tables = writer.build_tables(no_errors, genres=GENRES, model_id="m", clip_seconds=3.0)
    assert (tables["songs"].num_rows, tables["clips"].num_rows, tables["errors"].num_rows) == (2, 3, 0)


def test_part_name_is_deterministic_and_order_free():
    name = writer.part_name(np.array(["b", "a", "c"]))
    assert name == writer.part_name(np.array(["c", "b", "a"]))
    assert name != writer.part_name(np.array(["a", "b"]))
    assert name.startswith("part-") and name.endswith(".parquet") and len(name) == len("part-.parquet") + 20


def test_write_tables_round_trips_through_parquet(tmp_path):
    batch = hand_batch()
    out = tmp_path / "out"
    summary = writer.write_tables(batch, output=str(out), genres=GENRES, model_id="cnn-123", clip_seconds=3.0)
    expected = writer.build_tables(batch, genres=GENRES, model_id="cnn-123", clip_seconds=3.0)
    name = writer.part_name(batch["song_id"])
    for table in schemas.TAG_TABLES:
        assert os.listdir(out / table) == [name]  # one part, no temp file left
        back = pq.read_table(out / table / name)
        assert back.schema.equals(schemas.arrow_schema(table, GENRES))
        assert back.equals(expected[table])
    assert (
        summary["n_songs"].tolist() == [2]
        and summary["n_errors"].tolist() == [1]
        and summary["n_clips"].tolist() == [3]
    )
    assert summary["audio_s"][0] == pytest.approx(8.2)
    assert json.loads(summary["error_types"][0]) == {"AudioDecodeError": 1}
    # the same batch again lands in the same files
    writer.write_tables(batch, output=str(out), genres=GENRES, model_id="cnn-123", clip_seconds=3.0)
    assert all(os.listdir(out / t) == [name] for t in schemas.TAG_TABLES)


def test_write_tables_skips_empty_tables(tmp_path):
    batch = {k: v[[0, 2]] for k, v in hand_batch().items()}
    summary = writer.write_tables(batch, output=str(tmp_path), genres=GENRES, model_id="m", clip_seconds=3.0)
    assert sorted(os.listdir(tmp_path)) == ["clips", "songs"]
    assert summary["error_types"][0] == "{}"


def test_real_files_end_to_end_without_ray(tmp_path, tiny_model):
    """Catalog plus broken files -> featurize -> Predictor -> tables: every song in exactly one table."""
    folder = tmp_path / "in"
    durations = write_catalog(folder)
    broken = write_broken_corpus(folder)
    files = storage.list_inputs(str(folder)).files
    batch = {c: files[c].to_numpy() for c in files.columns}
    predictor = predict.Predictor(tiny_model, device="cpu")
    spec = predictor.spec
    assert spec.features == FeatureConfig(n_mels=32, hop_length=1024)
    featurized = decode.featurize_batch(batch, audio=AudioConfig(), clip_cfg=ClipConfig(), feature_cfg=spec.features)
    predicted = predictor(featurized)
    out = tmp_path / "out"
    summary = writer.write_tables(
        predicted, output=str(out), genres=spec.genres, model_id=spec.model_id, clip_seconds=spec.clips.clip_seconds
    )
    songs = pq.read_table(out / "songs").to_pandas()
    clips = pq.read_table(out / "clips").to_pandas()
    errors = pq.read_table(out / "errors").to_pandas()

    listed = set(files["song_id"])
    assert set(songs["song_id"]) | set(errors["song_id"]) == listed
    assert not set(songs["song_id"]) & set(errors["song_id"])
    assert len(songs) + len(errors) == len(listed)
    assert sorted(os.path.basename(p) for p in songs["path"]) == sorted(durations)
    assert dict(zip((os.path.basename(p) for p in errors["path"]), errors["error_type"], strict=True)) == broken
    assert int(summary["n_songs"][0]) == len(durations) and int(summary["n_errors"][0]) == len(broken)

    for row in songs.itertuples():
        assert row.duration_s == pytest.approx(durations[os.path.basename(row.path)], rel=0.01)
    assert set(songs["model_id"]) == {spec.model_id}

    p_cols = schemas.probability_columns(spec.genres)
    assert list(songs.columns) == [n for n, _ in json_columns("songs", spec.genres)]
    np.testing.assert_allclose(songs[p_cols].sum(axis=1), 1.0, atol=1e-5)
    clip_means = clips.groupby("song_id")[p_cols].mean()
    n_clips = clips.groupby("song_id").size()
    for row in songs.itertuples():
        assert n_clips[row.song_id] == row.n_clips
        np.testing.assert_allclose(
            songs.loc[row.Index, p_cols].to_numpy(float), clip_means.loc[row.song_id].to_numpy(float), atol=1e-6
        )
        assert row.genre == p_cols[int(np.argmax(songs.loc[row.Index, p_cols].to_numpy(float)))][2:]


def test_list_columns_accept_a_fixed_shape_tensor():
    """Ray hands ragged columns back as one 2-D array when every row has the same length."""
    batch = hand_batch()
    batch["used_start_s"] = np.zeros((3, 1))
    batch["used_end_s"] = np.array([[6.2], [0.0], [2.0]])
    songs = writer.build_tables(batch, genres=GENRES, model_id="m", clip_seconds=3.0)["songs"]
    assert songs.column("used_end_s").to_pylist() == [[6.2], [2.0]]


def timeline_batch() -> dict[str, np.ndarray]:
    """:func:`hand_batch` plus the Predictor's timeline columns: 2 steps per clip."""
    batch = hand_batch()
    steps = [
        np.array([[[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]], [[0.1, 0.7, 0.2], [0.1, 0.5, 0.4]]], np.float32),
        np.zeros((0, 2, 3), np.float32),
        np.array([[[0.3, 0.3, 0.4], [0.1, 0.1, 0.8]]], np.float32),
    ]
    batch["timeline_probs"] = _objects(steps)
    batch["timeline_s"] = _objects([np.array([[0.75, 2.25], [3.75, 5.25]]), np.zeros((0, 2)), np.array([[0.75, 2.25]])])
    return batch


def test_timeline_table():
    tables = writer.build_tables(timeline_batch(), genres=GENRES, model_id="crnn-1", clip_seconds=3.0)
    assert list(tables) == ["clips", "errors", "timeline", "songs"]  # songs last: a songs row implies the rest
    timeline = tables["timeline"]
    assert [(f.name, str(f.type)) for f in timeline.schema] == [
        (c["name"], JSON_TYPES.get(c["type"], "list<item: float>")) for c in schemas.spec("timeline")["columns"]
    ]
    assert timeline.schema.equals(schemas.arrow_schema("timeline"))
    t = timeline.to_pydict()
    sa, sc = "aaaaaaaaaaaaaaaa", "cccccccccccccccc"
    assert t["song_id"] == [sa] * 4 + [sc] * 2 and t["path"] == ["/m/a.wav"] * 4 + ["/m/c.flac"] * 2
    assert t["clip_index"] == [0, 0, 1, 1, 0, 0] and t["step_index"] == [0, 1, 0, 1, 0, 1]
    assert t["time_s"] == [0.75, 2.25, 3.75, 5.25, 0.75, 2.25]
    assert t["genre"] == ["blues", "blues", "jazz", "jazz", "rock", "rock"]
    np.testing.assert_allclose(t["probabilities"][2], [0.1, 0.7, 0.2], atol=1e-7)
    assert t["model_id"] == ["crnn-1"] * 6
    assert "timeline" not in writer.build_tables(hand_batch(), genres=GENRES, model_id="m", clip_seconds=3.0)


def test_write_tables_writes_the_timeline_part(tmp_path):
    batch = timeline_batch()
    summary = writer.write_tables(batch, output=str(tmp_path), genres=GENRES, model_id="crnn-1", clip_seconds=3.0)
    assert os.listdir(tmp_path / "timeline") == [writer.part_name(batch["song_id"])]
    assert pq.read_table(tmp_path / "timeline").num_rows == summary["n_timeline_steps"][0] == 6
    plain = writer.write_tables(
        hand_batch(), output=str(tmp_path / "plain"), genres=GENRES, model_id="m", clip_seconds=3.0
    )
    assert plain["n_timeline_steps"].tolist() == [0] and not (tmp_path / "plain" / "timeline").exists()
