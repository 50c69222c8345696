"""Bad and unusual input, case by case: each file becomes a plausible songs row or an error row that says why.

The corpus is generated into tmp_path from the cases below. Each case states its expected outcome; the
stage function is checked row by row without Ray, then ``mgr-batch tag`` runs once over the whole corpus.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from audio_factory import (
    _truncate_to_header,
    truncate_bytes,
    truncate_wav_data,
    write_aac,
    write_constant,
    write_in_format,
    write_noise,
    write_nonfinite,
    write_random_bytes,
    write_symlink,
    write_symlink_loop,
    write_tone,
)
from conftest import TINY_FEATURES

from mgr_batch.cli import main
from mgr_batch.config import AudioConfig, ClipConfig
from mgr_batch.features import registry as features
from mgr_batch.io.storage import list_inputs
from mgr_batch.stages.decode import featurize_batch

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def file_permissions_enforced() -> Iterator[None]:
    """Within the block, this thread reads as a user whom file permissions bind, even as root: root's
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH leave this thread's effective capabilities (they stay permitted and
    come back after), so a ``chmod 000`` file gives "Permission denied" as it does to any other user."""
    if not IS_ROOT:
        yield
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3; pid 0: this thread
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    saved = data[0].effective
    data[0].effective &= ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


@dataclass(frozen=True)
class Ok:
    """A correct tagging: a songs row with these header facts and this many 3 s clips."""

    duration_s: float | tuple[float, float]  # seconds, or a (low, high) range where the encoder decides
    sample_rate: int
    channels: int
    n_clips: int
    tol: float = 0.01  # seconds of slack on durations (encoder delay and padding of compressed formats)
    #: Seconds analyzed (or a range) where the file holds less than ``duration_s``; None: all of it.
    analyzed_s: float | tuple[float, float] | None = None
    truncated: bool = False  # the file ends before it says it does


@dataclass(frozen=True)
class Err:
    """An error row: its ``error_type``, ``stage``, and a regex the message must match (case-insensitive)."""

    error_type: str
    stage: str
    message: str


@dataclass(frozen=True)
class Case:
    id: str
    name: str  # the file's path relative to the corpus folder
    make: Callable[[Path], object]  # writes the case into the corpus folder (idempotent: cases may share files)
    expect: Ok | Err
    in_e2e: bool = True  # part of the end-to-end corpus (a directory or a vanished file cannot be listed)
    marks: tuple = field(default=())


def _chmod_000(folder: Path) -> None:
    write_tone(folder / "no_read_permission.wav", seconds=3.0).chmod(0)


def _loop(folder: Path) -> None:
    if not (folder / "symlink_loop_a.wav").is_symlink():  # two cases share the loop
        write_symlink_loop(folder / "symlink_loop_a.wav", folder / "symlink_loop_b.wav")


def _outside_target(folder: Path) -> Path:
    """A good file outside the input folder, for the symlink that points at it."""
    return write_tone(folder.parent / f"{folder.name}-outside" / "target.wav", seconds=5.0)


def _directory(folder: Path) -> None:
    """A directory named like an audio file, holding a good file (two cases share it)."""
    if not (folder / "folder.wav" / "inside.wav").exists():
        write_tone(folder / "folder.wav" / "inside.wav", seconds=4.0)


NOT_DECODABLE = r"not decodable as audio"

CASES = [
    # --- empty and truncated ---------------------------------------------------------------------------
    Case(
        "zero-bytes-wav",
        "zero_bytes.wav",
        lambda d: (d / "zero_bytes.wav").write_bytes(b""),
        Err("AudioDecodeError", "decode", r"empty \(0 bytes\)"),
    ),
    Case(
        "zero-bytes-mp3",
        "zero_bytes.mp3",
        lambda d: (d / "zero_bytes.mp3").write_bytes(b""),
        Err("AudioDecodeError", "decode", r"empty \(0 bytes\)"),
    ),
    Case(
        "truncated-header-in-fmt",
        "truncated_header_fmt.wav",
        lambda d: truncate_bytes(write_tone(d / "truncated_header_fmt.wav", seconds=2.0), 20),
        Err("AudioDecodeError", "decode", NOT_DECODABLE + r".*fmt"),
    ),
    Case(
        "truncated-header-before-data",
        "truncated_header_no_data.wav",
        lambda d: truncate_bytes(write_tone(d / "truncated_header_no_data.wav", seconds=2.0), 40),
        Err("AudioDecodeError", "decode", NOT_DECODABLE + r".*data"),
    ),
    Case(
        "truncated-header-flac",
        "truncated_header.flac",
        lambda d: truncate_bytes(write_tone(d / "truncated_header.flac", seconds=2.0), 30),
        Err("AudioDecodeError", "decode", NOT_DECODABLE),
    ),
    Case(
        "header-only-wav",
        "header_only.wav",
        lambda d: _truncate_to_header(write_tone(d / "header_only.wav", seconds=2.0)),
        Err("EmptyAudioError", "decode", r"zero samples"),
    ),
    # The header promises 8 s, 4.5 s are there: what is there is read, and the song is reported cut.
    Case(
        "truncated-data-wav",
        "truncated_data.wav",
        lambda d: truncate_wav_data(write_tone(d / "truncated_data.wav", seconds=8.0), keep_seconds=4.5),
        Ok(8.0, 22050, 1, 1, analyzed_s=4.5, truncated=True),
    ),
    Case(
        "truncated-data-ogg",
        "truncated_data.ogg",
        lambda d: truncate_bytes(p := write_noise(d / "truncated_data.ogg", seconds=10.0), p.stat().st_size // 2),
        Ok((3.0, 7.0), 22050, 1, 1, tol=0.05, truncated=True),  # no end-of-stream page; no length either
    ),
    Case(
        "truncated-data-mp3",
        "truncated_data.mp3",
        lambda d: truncate_bytes(p := write_noise(d / "truncated_data.mp3", seconds=10.0), p.stat().st_size // 2),
        Ok(10.0, 22050, 1, 1, tol=0.1, analyzed_s=(3.0, 7.0), truncated=True),  # its Xing header says 10 s
    ),
    # A FLAC cut mid-frame: FFmpeg decodes up to the cut frame, and the song is reported cut.
    Case(
        "truncated-data-flac",
        "truncated_data.flac",
        lambda d: truncate_bytes(p := write_noise(d / "truncated_data.flac", seconds=10.0), p.stat().st_size // 2),
        Ok(10.0, 22050, 1, 1, analyzed_s=(3.0, 7.0), truncated=True),
    ),
    # An MP4 writes its index (moov) last: cut in half, nothing says where the samples are.
    Case(
        "truncated-data-m4a",
        "truncated_data.m4a",
        lambda d: truncate_bytes(p := write_aac(d / "truncated_data.m4a", seconds=5.0), p.stat().st_size // 2),
        Err("AudioDecodeError", "decode", NOT_DECODABLE),
    ),
    # --- not audio, or not what the extension says --------------------------------------------------------
    Case(
        "mp3-named-wav",
        "really_an_mp3.wav",
        lambda d: write_in_format(d / "really_an_mp3.wav", real_ext=".mp3", seconds=4.0, sr=44100, channels=2),
        Ok(4.0, 44100, 2, 1, tol=0.1),
    ),
    Case(
        "text-named-mp3",
        "text.mp3",
        lambda d: (d / "text.mp3").write_text("this is a text file, not an MPEG stream\n" * 40),
        Err("AudioDecodeError", "decode", NOT_DECODABLE),
    ),
    Case(
        "random-bytes-wav",
        "random_bytes.wav",
        lambda d: write_random_bytes(d / "random_bytes.wav", seed=0),
        Err("AudioDecodeError", "decode", NOT_DECODABLE),
    ),
    Case(
        "random-bytes-flac",
        "random_bytes.flac",
        lambda d: write_random_bytes(d / "random_bytes.flac", seed=1),
        Err("AudioDecodeError", "decode", NOT_DECODABLE),
    ),
    Case(
        "random-bytes-mp3",
        "random_bytes.mp3",
        lambda d: write_random_bytes(d / "random_bytes.mp3", seed=2, mpeg_sync=False),
        Err("AudioDecodeError", "decode", NOT_DECODABLE),
    ),
    # --- decodable, but no genre can be read from it ------------------------------------------------------
    Case(
        "silence",
        "silence.wav",
        lambda d: write_constant(d / "silence.wav", seconds=3.0, value=0.0),
        Err("SilentAudioError", "decode", r"silent"),
    ),
    Case(
        "silence-8bit",
        "silence_u8.wav",
        lambda d: write_constant(d / "silence_u8.wav", seconds=3.0, value=0.0, subtype="PCM_U8"),
        Err("SilentAudioError", "decode", r"silent"),
    ),
    Case(
        "dc-offset",
        "dc_offset.wav",
        lambda d: write_constant(d / "dc_offset.wav", seconds=3.0, value=0.5),
        Err("SilentAudioError", "decode", r"silent"),
    ),
    Case(
        "dc-offset-negative-24bit-flac",
        "dc_offset_negative.flac",
        lambda d: write_constant(d / "dc_offset_negative.flac", seconds=3.0, value=-0.25, subtype="PCM_24"),
        Err("SilentAudioError", "decode", r"silent"),
    ),
    Case(
        "nan-float-wav",
        "nan.wav",
        lambda d: write_nonfinite(d / "nan.wav", seconds=3.0, value=np.nan),
        Err("InvalidAudioError", "decode", r"NaN or infinite"),
    ),
    Case(
        "inf-float-wav",
        "inf.wav",
        lambda d: write_nonfinite(d / "inf.wav", seconds=3.0, value=np.inf),
        Err("InvalidAudioError", "decode", r"NaN or infinite"),
    ),
    Case(
        "minus-inf-double-wav",
        "minus_inf_double.wav",
        lambda d: write_nonfinite(d / "minus_inf_double.wav", seconds=3.0, value=-np.inf, subtype="DOUBLE"),
        Err("InvalidAudioError", "decode", r"NaN or infinite"),
    ),
    # --- unusual but valid formats: tagged ----------------------------------------------------------------
    Case(
        "pcm-8bit",
        "pcm_u8.wav",
        lambda d: write_tone(d / "pcm_u8.wav", seconds=7.0, subtype="PCM_U8"),
        Ok(7.0, 22050, 1, 2),
    ),
    Case(
        "pcm-24bit",
        "pcm_24.wav",
        lambda d: write_tone(d / "pcm_24.wav", seconds=7.0, subtype="PCM_24"),
        Ok(7.0, 22050, 1, 2),
    ),
    Case(
        "float-32bit",
        "float_32.wav",
        lambda d: write_tone(d / "float_32.wav", seconds=7.0, subtype="FLOAT"),
        Ok(7.0, 22050, 1, 2),
    ),
    Case(
        "six-channels",
        "six_channels_48k.wav",
        lambda d: write_tone(d / "six_channels_48k.wav", seconds=6.0, sr=48000, channels=6),
        Ok(6.0, 48000, 6, 2),
    ),
    Case("rate-8k", "rate_8k.wav", lambda d: write_tone(d / "rate_8k.wav", seconds=9.5, sr=8000), Ok(9.5, 8000, 1, 3)),
    Case(
        "rate-96k",
        "rate_96k.wav",
        lambda d: write_tone(d / "rate_96k.wav", seconds=4.0, sr=96000, freq=1000.0),
        Ok(4.0, 96000, 1, 1),
    ),
    Case(
        "short-0.2s", "short_0.2s.wav", lambda d: write_tone(d / "short_0.2s.wav", seconds=0.2), Ok(0.2, 22050, 1, 1)
    ),  # shorter than a clip: one zero-padded clip, never dropped
    Case("aac-m4a", "aac.m4a", lambda d: write_aac(d / "aac.m4a", seconds=5.0), Ok(5.0, 44100, 1, 1, tol=0.05)),
    # --- names -------------------------------------------------------------------------------------------
    Case(
        "name-spaces",
        "with spaces in the name.wav",
        lambda d: write_tone(d / "with spaces in the name.wav", seconds=3.0),
        Ok(3.0, 22050, 1, 1),
    ),
    Case(
        "name-unicode",
        "Ünïcødé – 曲名 ♫.flac",
        lambda d: write_tone(d / "Ünïcødé – 曲名 ♫.flac", seconds=3.0, sr=44100, channels=2),
        Ok(3.0, 44100, 2, 1),
    ),
    Case(
        "name-single-quotes",
        "it's a 'quoted' name.wav",
        lambda d: write_tone(d / "it's a 'quoted' name.wav", seconds=3.0),
        Ok(3.0, 22050, 1, 1),
    ),
    Case(
        "name-double-quotes",
        'a "double-quoted" name.wav',
        lambda d: write_tone(d / 'a "double-quoted" name.wav', seconds=3.0),
        Ok(3.0, 22050, 1, 1),
    ),
    Case(
        "name-both-quotes",
        "both 'single' and \"double\".ogg",
        lambda d: write_tone(d / "both 'single' and \"double\".ogg", seconds=3.0),
        Ok(3.0, 22050, 1, 1, tol=0.05),
    ),
    Case(
        "name-glob-characters",
        "song [live] * ?.wav",
        lambda d: write_tone(d / "song [live] * ?.wav", seconds=3.0),
        Ok(3.0, 22050, 1, 1),
    ),
    Case(
        "name-double-colon",
        "artist :: title.wav",
        lambda d: write_tone(d / "artist :: title.wav", seconds=3.0),
        Ok(3.0, 22050, 1, 1),
        in_e2e=False,
    ),
    # --- the file system ---------------------------------------------------------------------------------
    Case(
        "directory-named-like-a-file",
        "folder.wav",
        _directory,
        Err("AudioReadError", "read", r"cannot read .*folder\.wav: Is a directory"),
        in_e2e=False,
    ),
    Case("good-file-inside-that-directory", "folder.wav/inside.wav", _directory, Ok(4.0, 22050, 1, 1)),
    Case(
        "vanished-after-listing",
        "vanished.wav",
        lambda d: None,
        Err("AudioReadError", "read", r"cannot read .*vanished\.wav: No such file or directory"),
        in_e2e=False,
    ),
    Case(
        "no-read-permission",
        "no_read_permission.wav",
        _chmod_000,
        Err("AudioReadError", "read", r"Permission denied"),
        in_e2e=not IS_ROOT,  # Ray's workers read as the run's user: as root, the file is readable there
    ),
    Case(
        "dangling-symlink",
        "dangling_symlink.wav",
        lambda d: write_symlink(d / "dangling_symlink.wav", d / "deleted_long_ago.wav"),
        Err("AudioReadError", "read", r"cannot read .*dangling_symlink\.wav: No such file or directory"),
    ),
    Case(
        "symlink-to-a-file-outside",
        "symlink_to_outside.wav",
        lambda d: write_symlink(d / "symlink_to_outside.wav", _outside_target(d)),
        Ok(5.0, 22050, 1, 1),
    ),
    Case(
        "symlink-loop-a",
        "symlink_loop_a.wav",
        _loop,
        Err("AudioReadError", "read", r"Too many levels of symbolic links"),
    ),
    Case(
        "symlink-loop-b",
        "symlink_loop_b.wav",
        _loop,
        Err("AudioReadError", "read", r"Too many levels of symbolic links"),
    ),
]

AUDIO = AudioConfig()
CLIPS = ClipConfig()
N_MELS, N_FRAMES = features.feature_shape(sr=AUDIO.sr, clip_seconds=CLIPS.clip_seconds, cfg=TINY_FEATURES)


def featurize_one(path: Path) -> dict:
    out = featurize_batch(
        {"path": np.array([str(path)], dtype=object), "song_id": np.array(["x"], dtype=object)},
        audio=AUDIO,
        clip_cfg=CLIPS,
        feature_cfg=TINY_FEATURES,
    )
    assert all(len(v) == 1 for v in out.values())
    return {k: v[0] for k, v in out.items()}


def check_ok(row: dict, expect: Ok, *, where: str) -> None:
    assert row["status"] == "ok", f"{where}: {row['error_type']}: {row['error_message']}"
    if isinstance(expect.duration_s, tuple):
        lo, hi = expect.duration_s
        assert lo <= row["duration_s"] <= hi, where
    else:
        assert row["duration_s"] == pytest.approx(expect.duration_s, abs=expect.tol), where
    # Every file here is far shorter than max_duration, so all it holds is analyzed: the two lengths agree
    # unless the file is cut short of what its header promises.
    if expect.analyzed_s is None:
        assert row["analyzed_s"] == pytest.approx(row["duration_s"], abs=expect.tol), where
    elif isinstance(expect.analyzed_s, tuple):
        assert expect.analyzed_s[0] <= row["analyzed_s"] <= expect.analyzed_s[1], where
    else:
        assert row["analyzed_s"] == pytest.approx(expect.analyzed_s, abs=expect.tol), where
    assert bool(row["truncated"]) == expect.truncated, where
    assert (row["sample_rate"], row["channels"], row["n_clips"]) == (
        expect.sample_rate,
        expect.channels,
        expect.n_clips,
    ), where


def check_error(row: dict, expect: Err, *, message_key: str, stage_key: str, where: str) -> None:
    assert row["status"] == "error", where
    assert (row["error_type"], row[stage_key]) == (expect.error_type, expect.stage), f"{where}: {row[message_key]}"
    assert re.search(expect.message, row[message_key], re.IGNORECASE | re.DOTALL), f"{where}: {row[message_key]!r}"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_featurize_batch_row_by_row(case: Case, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    case.make(folder)
    with file_permissions_enforced():
        row = featurize_one(folder / case.name)
    if isinstance(case.expect, Ok):
        check_ok(row, case.expect, where=case.id)
        assert row["features"].shape == (case.expect.n_clips, N_MELS, N_FRAMES)
        assert np.isfinite(row["features"]).all()
        assert row["clip_start_s"].tolist() == pytest.approx([3.0 * i for i in range(case.expect.n_clips)])
    else:
        check_error(row, case.expect, message_key="error_message", stage_key="error_stage", where=case.id)
        assert (row["duration_s"], row["n_clips"], row["sample_rate"], row["channels"]) == (0.0, 0, 0, 0)
        assert row["features"].shape == (0, N_MELS, N_FRAMES) and row["clip_start_s"].shape == (0,)


def test_one_batch_of_every_case_keeps_rows_in_order(tmp_path):
    """Good and bad files mixed in one batch: one output row per input, in input order, none dropped."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    cases = [c for c in CASES if c.in_e2e and not c.marks]
    for c in cases:
        c.make(folder)
    paths = [str(folder / c.name) for c in cases]
    out = featurize_batch(
        {"path": np.array(paths, dtype=object)}, audio=AUDIO, clip_cfg=CLIPS, feature_cfg=TINY_FEATURES
    )
    assert out["path"].tolist() == paths
    assert out["status"].tolist() == ["ok" if isinstance(c.expect, Ok) else "error" for c in cases]
    assert out["error_type"].tolist() == [getattr(c.expect, "error_type", "") for c in cases]
    assert [len(f) for f in out["features"]] == out["n_clips"].tolist()


def test_a_fifo_named_like_audio_is_skipped_or_an_error_never_a_hang(tmp_path):
    """Either fix passes: the listing leaves the FIFO out, or reading it gives an AudioReadError at once."""
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    write_tone(tmp_path / "good.wav", seconds=3.0)
    if "pipe.wav" not in [Path(p).name for p in list_inputs(str(tmp_path)).files["path"]]:
        return
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(featurize_one(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=5)
    blocked = reader.is_alive()
    if blocked:  # unblock the reader: open the write end, then close it (the reader sees 0 bytes)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=30)
    assert not blocked, "featurize_batch blocked on a FIFO for 5 s"
    expect = Err("AudioReadError", "read", r"regular file|fifo|pipe|special file")
    check_error(result, expect, message_key="error_message", stage_key="error_stage", where="fifo")


def test_a_double_colon_name_never_reads_another_file(tmp_path):
    # A 1 s WAV named without an extension: not listed, but it exists.
    write_tone(tmp_path / "artist.wav", seconds=1.0).rename(tmp_path / "artist")
    write_tone(tmp_path / "artist::title.wav", seconds=7.0)
    assert [Path(p).name for p in list_inputs(str(tmp_path)).files["path"]] == ["artist::title.wav"]
    row = featurize_one(tmp_path / "artist::title.wav")
    check_ok(row, Ok(7.0, 22050, 1, 2), where="artist::title.wav")


# --- end to end --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e2e_corpus(tmp_path_factory) -> tuple[Path, dict[str, Case]]:
    """Every e2e case in one folder (plus one ignored text file); returns the folder and {path: case}."""
    folder = tmp_path_factory.mktemp("bad_input") / "corpus"
    folder.mkdir()
    cases = [c for c in CASES if c.in_e2e]
    for c in cases:
        c.make(folder)
    (folder / "README.txt").write_text("not audio: ignored and counted")
    return folder, {str(folder / c.name): c for c in cases}


@pytest.mark.usefixtures("ray_cluster")
def test_tag_over_the_whole_corpus(e2e_corpus, tiny_model, tmp_path):
    folder, expected = e2e_corpus
    out = tmp_path / "out"
    assert main(["tag", str(folder), "--output", str(out), "--model", tiny_model, "--songs-per-task", "4"]) == 0

    listed = set(list_inputs(str(folder)).files["path"])
    assert listed == set(expected)  # the directory folder.wav/ is not listed, the file inside it is
    songs, clips, errors = (pq.read_table(out / t).to_pandas() for t in ("songs", "clips", "errors"))
    assert set(songs["path"]) | set(errors["path"]) == listed
    assert not set(songs["path"]) & set(errors["path"])
    assert songs["path"].is_unique and errors["path"].is_unique
    assert songs["song_id"].is_unique and errors["song_id"].is_unique

    for _, row in songs.iterrows():
        case = expected[row["path"]]
        assert isinstance(case.expect, Ok), f"{case.id} was tagged"
        check_ok(row.to_dict() | {"status": "ok"}, case.expect, where=case.id)
    for _, row in errors.iterrows():
        case = expected[row["path"]]
        assert isinstance(case.expect, Err), f"{case.id}: {row['error_type']}: {row['message']}"
        check_error(
            row.to_dict() | {"status": "error"}, case.expect, message_key="message", stage_key="stage", where=case.id
        )

    per_song = clips.groupby("song_id").size()
    assert per_song.reindex(songs["song_id"]).tolist() == songs["n_clips"].tolist()
    run = json.loads((out / "run.json").read_text())
    assert run["n_files"] == len(listed) == run["n_songs"] + run["n_errors"]
    assert (run["n_songs"], run["n_clips"], run["n_errors"]) == (len(songs), len(clips), len(errors))
    assert run["errors_by_type"] == {k: int(v) for k, v in errors["error_type"].value_counts().items()}
    assert run["ignored_non_audio_files"] == 1
    assert run["audio_seconds"] == pytest.approx(songs["analyzed_s"].sum(), rel=1e-3)
    expected_types = pd.Series([c.expect.error_type for c in expected.values() if isinstance(c.expect, Err)])
    assert run["errors_by_type"] == {k: int(v) for k, v in expected_types.value_counts().items()}
