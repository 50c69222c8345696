"""A file's own tags (ID3 TCON, Vorbis GENRE, MP4 ©gen, ASF WM/Genre, ...) reach the songs table."""

from __future__ import annotations

import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from audio_factory import write_tone, write_with_pyav

from mgr_batch.cli import main
from mgr_batch.io import audio, ffmpeg

TAGS = {"genre": "Game Music", "artist": "Ann Artist", "album": "Best Album", "title": "Song Title"}

#: name -> (FFmpeg muxer, encoder, sample rate, channels, how the genre is stored in the file's bytes)
TAGGED = {
    "id3.mp3": ("mp3", "libmp3lame", 22050, 1, b"TCON"),
    "vorbis.ogg": ("ogg", "vorbis", 22050, 2, b"genre="),  # FFmpeg's Vorbis encoder writes stereo only
    "opus.opus": ("ogg", "libopus", 48000, 1, b"genre="),
    "itunes.m4a": ("ipod", "aac", 22050, 1, b"\xa9gen"),
    "windows.wma": ("asf", "wmav2", 44100, 1, "WM/Genre".encode("utf-16-le")),
    "lossless.flac": ("flac", "flac", 22050, 1, b"genre="),
    "riff.wav": ("wav", "pcm_s16le", 22050, 1, b"IGNR"),
    "matroska.mka": ("matroska", "libopus", 48000, 1, b"GENRE"),
}


def write_tagged(
    path: Path, *, muxer: str, codec: str, sr: int, channels: int, tags: dict[str, str], seconds: float = 2.0, **options
) -> Path:
    """A 440 Hz tone written with PyAV, with ``tags`` in the container's metadata."""
    return write_with_pyav(
        path, muxer=muxer, codec=codec, seconds=seconds, sr=sr, channels=channels, tags=tags, **options
    )


def write_tagged_by_name(folder: Path, name: str, tags: dict[str, str] = TAGS) -> Path:
    muxer, codec, sr, channels, _ = TAGGED[name]
    return write_tagged(folder / name, muxer=muxer, codec=codec, sr=sr, channels=channels, tags=tags)


@pytest.mark.parametrize("name", sorted(TAGGED))
def test_each_format_gives_its_tags(tmp_path, name):
    path = write_tagged_by_name(tmp_path, name)
    assert TAGGED[name][4] in path.read_bytes(), "the file must hold the format's own tag"
    assert audio.load(str(path)).tags == TAGS


@pytest.mark.parametrize("ext", [".wav", ".flac", ".mp3", ".ogg"])
def test_a_file_without_tags_has_none_and_is_opened_once(tmp_path, monkeypatch, ext):
    calls = []
    real = ffmpeg.read_tags
    monkeypatch.setattr(ffmpeg, "read_tags", lambda source: calls.append(source) or real(source))
    decoded = audio.load(str(write_tone(tmp_path / f"plain{ext}", seconds=1.0)))
    assert decoded.tags == {}
    assert not calls


@pytest.mark.parametrize("number", ["(17)", "17"])
def test_an_id3_genre_by_number_is_named(tmp_path, number):
    path = write_tagged(
        tmp_path / "old.mp3", muxer="mp3", codec="libmp3lame", sr=22050, channels=1, tags={"genre": number}
    )
    assert audio.load(str(path)).tags == {"genre": "Rock"}


def test_an_id3_chunk_in_aiff_and_wav_is_read(tmp_path):
    aiff = write_tagged(
        tmp_path / "itunes.aiff", muxer="aiff", codec="pcm_s16be", sr=22050, channels=1, tags=TAGS, write_id3v2="1"
    )
    assert b"ID3 " in aiff.read_bytes()
    assert audio.load(str(aiff)).tags == TAGS
    # the same ID3 tag as an "id3 " chunk at the end of a WAV file
    data = aiff.read_bytes()
    at = data.index(b"ID3 ")
    tag = data[at + 8 : at + 8 + struct.unpack(">I", data[at + 4 : at + 8])[0]]
    chunk = b"id3 " + struct.pack("<I", len(tag)) + tag + b"\0" * (len(tag) % 2)
    plain = write_tone(tmp_path / "plain.wav", seconds=1.0).read_bytes()
    wav = tmp_path / "id3.wav"
    wav.write_bytes(b"RIFF" + struct.pack("<I", len(plain) - 8 + len(chunk)) + plain[8:] + chunk)
    decoded = audio.load(str(wav))
    assert decoded.decoder == "libsndfile" and decoded.tags == TAGS


def test_tags_from_a_file_object_and_partial_tags(tmp_path):
    path = write_tagged_by_name(tmp_path, "itunes.m4a", tags={"genre": "  Zouk ", "title": ""})
    with open(path, "rb") as f:
        assert audio.load(f).tags == {"genre": "Zouk"}  # stripped; an empty tag is no tag


@pytest.mark.usefixtures("ray_cluster")
def test_a_tag_run_writes_the_files_tags_to_songs(tmp_path, tiny_model):
    root = tmp_path / "catalog"
    root.mkdir()
    for name in ("id3.mp3", "vorbis.ogg", "itunes.m4a", "windows.wma"):
        write_tagged_by_name(root, name, tags={**TAGS, "genre": f"genre of {name}"})
    write_tagged(root / "artist_only.flac", muxer="flac", codec="flac", sr=22050, channels=1, tags={"artist": "Solo"})
    write_tone(root / "untagged.wav", seconds=2.0)
    out = tmp_path / "out"
    assert main(["tag", str(root), "--output", str(out), "--model", tiny_model, "--songs-per-task", "2"]) == 0
    table = pq.read_table(out / "songs")
    for column in ("file_genre", "file_artist", "file_album", "file_title"):
        field = table.schema.field(column)
        assert str(field.type) == "string" and field.nullable
    songs = table.to_pandas().set_index(table.column("path").to_pandas().map(lambda p: Path(p).name))
    assert len(songs) == 6
    for name in ("id3.mp3", "vorbis.ogg", "itunes.m4a", "windows.wma"):
        assert songs.loc[name, "file_genre"] == f"genre of {name}"
        assert songs.loc[name, ["file_artist", "file_album", "file_title"]].tolist() == [
            "Ann Artist",
            "Best Album",
            "Song Title",
        ]
    assert songs.loc["artist_only.flac", "file_artist"] == "Solo"
    assert songs.loc["artist_only.flac", ["file_genre", "file_album", "file_title"]].isna().all()
    assert songs.loc["untagged.wav", ["file_genre", "file_artist", "file_album", "file_title"]].isna().all()
