"""A file's own text tags (genre, artist, album, title) as libsndfile and FFmpeg read them."""

from __future__ import annotations

import re

import av
import soundfile as sf

#: The file tags :class:`mgr_batch.io.waveform.Decoded` keeps, by the names libsndfile and FFmpeg both give
#: them (ID3 TCON, TPE1, TALB, TIT2; Vorbis GENRE, ARTIST, ALBUM, TITLE; MP4 ©gen, ©ART, ©alb, ©nam; ASF
#: WM/Genre, Author, WM/AlbumTitle, Title).
TAG_NAMES = ("genre", "artist", "album", "title")
#: The songs columns that hold them.
FILE_TAG_COLUMNS = tuple(f"file_{name}" for name in TAG_NAMES)


#: An ID3 genre that refers to ID3v1's numbered list ("(17)", "17") rather than naming it ("Rock").
_ID3_GENRE_NUMBER = re.compile(r"\(\d{1,3}\).*|\d{1,3}")
#: A line of libsndfile's log on an ID3 chunk of a WAV or AIFF file, whose tags it does not read.
_ID3_CHUNK = re.compile(r"^\W*id3 *:", re.MULTILINE | re.IGNORECASE)


def soundfile_tags(f: sf.SoundFile) -> tuple[dict[str, str], bool]:
    """The :data:`TAG_NAMES` tags libsndfile read from an open file (ID3v1/v2 of an MP3, Vorbis comments, RIFF
    INFO, AIFF's NAME), and whether FFmpeg should be asked too: the file has an ID3 chunk libsndfile skips (a
    WAV or AIFF tagged by iTunes and others), or an ID3 genre by number, which libsndfile does not name."""
    tags = {}
    for name in TAG_NAMES:
        value = getattr(f, name).strip()  # soundfile's string properties: "" when absent
        if value:
            tags[name] = value
    elsewhere = bool(_ID3_GENRE_NUMBER.fullmatch(tags.get("genre", "")))
    if f.format in ("WAV", "WAVEX", "RF64", "AIFF"):
        elsewhere = elsewhere or bool(_ID3_CHUNK.search(f.extra_info))
    return tags, elsewhere


def merged_tags(tags: dict[str, str], ffmpeg: dict[str, str]) -> dict[str, str]:
    """libsndfile's ``tags`` completed by FFmpeg's, whose genre replaces one given by ID3v1 number."""
    merged = {**ffmpeg, **tags}
    if _ID3_GENRE_NUMBER.fullmatch(tags.get("genre", "")) and ffmpeg.get("genre"):
        merged["genre"] = ffmpeg["genre"]
    return {name: merged[name] for name in TAG_NAMES if name in merged}


def pyav_tags(container: av.container.InputContainer, stream: av.AudioStream | None) -> dict[str, str]:
    """The :data:`TAG_NAMES` tags FFmpeg read from an open container: the audio stream's own first (Ogg keeps
    its comments there), then the container's; keys in any case (Matroska's are upper case)."""
    tags: dict[str, str] = {}
    for metadata in (stream.metadata if stream is not None else {}, container.metadata):
        for key, value in metadata.items():
            name, value = key.lower(), str(value).strip()
            if name in TAG_NAMES and value and name not in tags:
                tags[name] = value
    return tags
