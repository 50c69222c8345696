"""mgr_batch.io.storage (local paths): listing folders, globs, single files and manifests; ids; atomic writes."""

from __future__ import annotations

import os
import re

import pandas as pd
import pytest
from audio_factory import write_tone

from mgr_batch.errors import ConfigError, InputNotFoundError, MgrBatchError
from mgr_batch.io import storage


@pytest.fixture
def tree(tmp_path):
    """A folder with audio at three depths, plus files that are not audio."""
    root = tmp_path / "music"
    write_tone(root / "a.wav", seconds=0.1)
    write_tone(root / "rock" / "b.flac", seconds=0.1)
    write_tone(root / "rock" / "live" / "c.mp3", seconds=0.2)
    write_tone(root / "jazz" / "D.WAV", seconds=0.1)  # upper-case extension is still audio
    (root / "notes.txt").write_text("not audio")
    (root / "rock" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def test_folder_listing_is_recursive_and_keeps_only_audio(tree):
    listing = storage.list_inputs(str(tree))
    files = listing.files
    assert list(files.columns) == list(storage.LISTING_COLUMNS)
    expected = sorted(str(tree / p) for p in ("a.wav", "rock/b.flac", "rock/live/c.mp3", "jazz/D.WAV"))
    assert list(files["path"]) == expected  # absolute, sorted
    assert sorted(listing.ignored) == sorted(str(tree / p) for p in ("notes.txt", "rock/cover.jpg", ".DS_Store"))
    for row in files.itertuples():
        assert row.size == os.path.getsize(row.path)
        assert row.mtime == pytest.approx(os.path.getmtime(row.path))
        assert row.song_id == storage.song_id_for(row.path)


def test_folder_listing_with_chosen_extensions(tree):
    listing = storage.list_inputs(str(tree), extensions=(".flac", ".MP3"))
    assert [os.path.basename(p) for p in listing.files["path"]] == ["b.flac", "c.mp3"]
    assert len(listing.ignored) == 5


def test_folder_without_audio_raises(tmp_path):
    (tmp_path / "readme.md").write_text("# nothing here")
    with pytest.raises(InputNotFoundError, match="no audio"):
        storage.list_inputs(str(tmp_path))


def test_glob_keeps_exactly_what_it_matches(tree):
    files = storage.list_inputs(str(tree / "rock" / "*")).files
    # a glob names files itself: the jpg is kept, the sub-folder is not
    assert [os.path.basename(p) for p in files["path"]] == ["b.flac", "cover.jpg"]
    files = storage.list_inputs(str(tree / "**" / "*.mp3")).files
    assert list(files["path"]) == [str(tree / "rock" / "live" / "c.mp3")]


def test_glob_matching_nothing_raises(tree):
    with pytest.raises(InputNotFoundError, match="glob"):
        storage.list_inputs(str(tree / "*.opus"))


def test_single_file(tree):
    path = tree / "rock" / "b.flac"
    listing = storage.list_inputs(str(path))
    assert list(listing.files["path"]) == [str(path)]
    assert listing.files["size"][0] == path.stat().st_size
    assert listing.ignored == ()


def test_relative_single_file_becomes_absolute(tree, monkeypatch):
    monkeypatch.chdir(tree)
    files = storage.list_inputs("a.wav").files
    assert list(files["path"]) == [str(tree / "a.wav")]


@pytest.mark.parametrize("uri", ["missing.wav", "missing_dir", "missing.csv", "missing.parquet"])
def test_missing_input_raises(tmp_path, uri):
    with pytest.raises(InputNotFoundError) as info:
        storage.list_inputs(str(tmp_path / uri))
    assert isinstance(info.value, MgrBatchError)
    assert isinstance(info.value, FileNotFoundError)


def _manifest_frame(tree) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": ["music/rock/b.flac", "music/a.wav", str(tree / "jazz" / "D.WAV")],
            "label": ["rock", "pop", "jazz"],
            "song_id": ["stale", "stale", "stale"],  # listing columns in a manifest are replaced
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_paths_resolve_against_its_folder(tree, tmp_path, monkeypatch, suffix):
    manifest = tmp_path / f"manifest{suffix}"
    frame = _manifest_frame(tree)
    if suffix == ".csv":
        frame.to_csv(manifest, index=False)
    else:
        frame.to_parquet(manifest, index=False)
    monkeypatch.chdir(tree / "rock")  # the working directory must not matter
    files = storage.list_inputs(str(manifest)).files
    assert list(files.columns[: len(storage.LISTING_COLUMNS)]) == list(storage.LISTING_COLUMNS)
    assert "label" in files.columns
    by_path = dict(zip(files["path"], files["label"], strict=True))
    assert by_path == {
        str(tree / "rock" / "b.flac"): "rock",
        str(tree / "a.wav"): "pop",
        str(tree / "jazz" / "D.WAV"): "jazz",
    }
    assert list(files["path"]) == sorted(files["path"])
    assert all(files["song_id"] == [storage.song_id_for(p) for p in files["path"]])
    # size and mtime as a folder listing gives them (resume notices a changed file); 0 for a path not there
    for row in files.itertuples():
        there = os.path.exists(row.path)
        assert row.size == (os.path.getsize(row.path) if there else 0)
        assert row.mtime == (pytest.approx(os.path.getmtime(row.path)) if there else 0.0)


def test_manifest_without_path_column_raises(tmp_path):
    pd.DataFrame({"file": ["a.wav"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ConfigError, match="path"):
        storage.list_inputs(str(tmp_path / "m.csv"))


def test_manifest_keeps_empty_strings(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.wav,\nb.wav,NA\n")
    files = storage.list_inputs(str(tmp_path / "m.csv")).files
    assert list(files["label"]) == ["", "NA"]


@pytest.mark.parametrize("path", ["/data/a.wav", "s3://bucket/x/y.mp3", "relative/ü n i.flac", ""])
def test_song_id_is_stable_16_hex(path):
    sid = storage.song_id_for(path)
    assert re.fullmatch(r"[0-9a-f]{16}", sid)
    assert sid == storage.song_id_for(path)


def test_song_ids_differ_per_path():
    paths = [f"/data/{i}.wav" for i in range(200)]
    assert len({storage.song_id_for(p) for p in paths}) == 200


def test_song_id_known_value():
    assert storage.song_id_for("/data/a.wav") == "83cf89c5c294fc84"  # sha1 of the path, first 16 hex digits


def test_write_bytes_atomic_leaves_only_the_file(tmp_path):
    target = tmp_path / "out" / "deep" / "part.parquet"
    storage.write_bytes_atomic(str(target), b"first")
    storage.write_bytes_atomic(str(target), b"second")  # overwrite
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["part.parquet"]


def test_read_text(tmp_path):
    (tmp_path / "list.txt").write_text("a\nb\n")
    assert storage.read_text(str(tmp_path / "list.txt")) == "a\nb\n"
    with pytest.raises(InputNotFoundError):
        storage.read_text(str(tmp_path / "nope.txt"))


def test_open_input_reads_bytes(tree):
    with storage.open_input(str(tree / "a.wav")) as f:
        assert f.read(4) == b"RIFF"
        f.seek(0)
        assert len(f.read()) == (tree / "a.wav").stat().st_size


@pytest.mark.parametrize(
    "uri, parts, expected",
    [
        ("s3://bucket/out", ("songs", "p.parquet"), "s3://bucket/out/songs/p.parquet"),
        ("/tmp/out", ("songs", "p.parquet"), os.path.join("/tmp/out", "songs", "p.parquet")),
    ],
)
def test_join(uri, parts, expected):
    assert storage.join(uri, *parts) == expected


@pytest.mark.parametrize(
    "uri, remote",
    [("s3://b/k", True), ("gs://b/k", True), ("file:///tmp/x", False), ("/tmp/x", False), ("x.wav", False)],
)
def test_is_remote(uri, remote):
    assert storage.is_remote(uri) is remote


@pytest.mark.parametrize("name", ["Artist - Song [Live].wav", "Best of [2001]"])
def test_existing_paths_with_brackets_are_listed(tmp_path, name):
    target = tmp_path / name
    audio = write_tone(target if target.suffix == ".wav" else target / "a.wav", seconds=0.1)
    files = storage.list_inputs(str(target)).files
    assert list(files["path"]) == [str(audio)]


@pytest.mark.parametrize("nested", [False, True])
def test_folder_listing_is_sorted_by_path_across_folders(tmp_path, nested):
    """Folders are read in any order: the listing is still sorted by path, where a folder's name sorts before or
    after its sibling's files (``a.b/`` before ``a/``) and, with ``nested``, where a folder's files and its
    subfolder's files interleave."""
    names = ["x/a b/1.wav", "x/a-b/2.wav", "x/a/3.wav", "x/a.b/4.wav", "x/ä/5.wav", "x/ab/6.wav", "y/7.wav"]
    if nested:
        names += ["x/a/z.wav", "x/a/m/8.wav", "x/0.wav"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    paths = list(storage.list_inputs(str(tmp_path)).files["path"])
    assert paths == sorted(str(tmp_path / n) for n in names)
