"""File names as catalogs hold them: bytes that are not UTF-8, two spellings of one path in a manifest, object
keys with spaces, ``+``, ``%``, ``#``, ``?``, ``=``, ``&`` and non-ASCII characters. Each is listed once,
tagged, written and recognised as done by a rerun."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from audio_factory import write_tone

from mgr_batch.cli import main
from mgr_batch.io import storage

LATIN1 = "café".encode("latin-1")  # b"caf\xe9": not UTF-8, as old Samba shares and zip archives leave names


def _latin1_file(folder: Path) -> bytes:
    """A 3 s tone under a name whose bytes are not UTF-8; returns the name's bytes."""
    tmp = write_tone(folder / "tmp.wav", seconds=3.0, freq=440.0)
    raw = os.fsencode(folder) + b"/" + LATIN1 + b".wav"
    os.rename(os.fsencode(tmp), raw)
    return raw


def test_a_name_that_is_not_utf8_is_listed_readably_with_its_exact_bytes(tmp_path):
    raw = _latin1_file(tmp_path)
    write_tone(tmp_path / "plain.wav", seconds=1.0)
    files = storage.list_inputs(str(tmp_path)).files
    assert len(files) == 2
    row = files[files["path"].str.contains("caf")].iloc[0]
    assert row["path"] == os.fsdecode(os.fsencode(tmp_path)) + "/caf\\xe9.wav"  # readable, valid UTF-8
    assert row["path_bytes"] == raw
    assert open(storage.openable(row["path"], row["path_bytes"]), "rb").read(4) == b"RIFF"
    assert row["song_id"] == storage.song_id_for(os.fsdecode(raw))
    plain = files[files["path"].str.endswith("plain.wav")].iloc[0]
    assert plain["path_bytes"] is None or pd.isna(plain["path_bytes"])


def test_a_manifest_naming_a_file_twice_lists_it_once(tmp_path):
    write_tone(tmp_path / "a.wav", seconds=1.0)
    write_tone(tmp_path / "b.wav", seconds=1.0)
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\na.wav\n./a.wav\nsub/../a.wav\nb.wav\nb.wav\n")
    files = storage.list_inputs(str(manifest)).files
    assert sorted(Path(p).name for p in files["path"]) == ["a.wav", "b.wav"]
    assert files["song_id"].is_unique


@pytest.mark.usefixtures("ray_cluster")
def test_a_run_over_such_names_tags_each_file_once_and_a_rerun_does_nothing(tmp_path, tiny_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    raw = _latin1_file(inputs)
    write_tone(inputs / "plain.wav", seconds=3.0, freq=880.0)
    (inputs / "notes.txt").write_text("liner notes")
    (inputs / "._plain.wav").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble metadata, not audio
    (inputs / ".DS_Store").write_bytes(b"\x00")
    out = tmp_path / "out"
    assert main(["tag", str(inputs), "--output", str(out), "--model", tiny_model]) == 0
    songs = pd.read_parquet(out / "songs")
    errors = pd.read_parquet(out / "errors")
    assert len(songs) == 2 and errors.empty
    latin = songs[songs["path"].str.contains("caf")].iloc[0]
    assert latin["path_bytes"] == raw and latin["path"].endswith("caf\\xe9.wav")
    assert latin["duration_s"] == pytest.approx(3.0, abs=0.01)
    run = json.loads((out / "run.json").read_text())
    assert run["ignored_by_kind"] == {"system": 2, "text": 1}
    assert main(["tag", str(inputs), "--output", str(out), "--model", tiny_model, "--json"]) == 0
    again = json.loads((out / "run.json").read_text())
    assert (again["n_skipped"], again["n_processed"]) == (2, 0)


S3_NAMES = ["a b.wav", "a+b.wav", "100%.wav", "c#1.wav", "why?.wav", "k=v&x=y.wav", "café.wav", "日本.wav", "z.wav"]


@pytest.mark.usefixtures("ray_cluster")
def test_object_keys_with_any_character_are_tagged_and_a_rerun_does_nothing(s3_server, s3_bucket, tiny_model, tmp_path):
    local = tmp_path / "one.wav"
    write_tone(local, seconds=3.0)
    data = local.read_bytes()
    s3_server.fs.pipe({f"{s3_bucket}/in/{name}": data for name in S3_NAMES})
    out = f"{s3_bucket}/out"
    args = ["tag", f"{s3_bucket}/in", "--output", out, "--model", tiny_model, *s3_server.cli_options()]
    assert main(args) == 0
    fs = s3_server.fs
    songs = pd.read_parquet(fs._strip_protocol(f"{out}/songs"), filesystem=fs)
    errors = pd.read_parquet(fs._strip_protocol(f"{out}/errors"), filesystem=fs)
    assert errors.empty
    assert sorted(p.rsplit("/", 1)[1] for p in songs["path"]) == sorted(S3_NAMES)
    assert main([*args, "--json"]) == 0
    run = json.loads(fs.cat_file(f"{out}/run.json"))
    assert (run["n_skipped"], run["n_processed"]) == (len(S3_NAMES), 0)
