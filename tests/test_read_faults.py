"""A read that fails mid-file is never data nor a verdict on the file: ``AudioReadError`` (stage ``read``), for
every decoder, from a file object that fails after N bytes and from S3 behind a proxy that resets connections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_factory import write_aac, write_constant, write_tone
from faults import FailingReader, ResettingProxy

from mgr_batch.config import AudioConfig, ClipConfig
from mgr_batch.errors import AudioReadError, SilentAudioError
from mgr_batch.io import audio
from mgr_batch.io.storage import song_id_for
from mgr_batch.stages.decode import featurize_batch

SECONDS = 20.0
#: Every decoder: libsndfile reads WAV, FLAC and MP3; FFmpeg reads Ogg (Vorbis, Opus) and MP4/AAC.
FORMATS = {
    ".wav": "libsndfile",
    ".flac": "libsndfile",
    ".mp3": "libsndfile",
    ".ogg": "ffmpeg",
    ".opus": "ffmpeg",
    ".m4a": "ffmpeg",
}


def _song(folder: Path, ext: str) -> Path:
    if ext == ".m4a":
        return write_aac(folder / "song.m4a", seconds=SECONDS, sr=22050)
    return write_tone(folder / f"song{ext}", seconds=SECONDS, sr=48000 if ext == ".opus" else 22050, freq=330.0)


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_a_reader_that_fails_mid_file_gives_a_read_error(ext, tmp_path):
    data = _song(tmp_path, ext).read_bytes()
    whole = audio.load(FailingReader(data, fail_at=len(data) + 1), sr=22050)  # the same bytes, no fault
    assert whole.decoder == FORMATS[ext] and whole.duration == pytest.approx(SECONDS, abs=0.1)
    for fail_at in (len(data) // 3, len(data) - 100):
        with pytest.raises(AudioReadError, match="reading failed after") as info:
            audio.load(FailingReader(data, fail_at=fail_at), sr=22050)
        assert info.value.stage == "read" and "ConnectionResetError" in str(info.value)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_a_truncated_file_stays_what_it_is(ext, tmp_path):
    """No read fails here: the file itself ends early, and is decoded as far as it goes (WAV) or rejected (FLAC)."""
    data = _song(tmp_path, ext).read_bytes()
    cut = FailingReader(data[: len(data) // 3], fail_at=len(data))
    try:
        decoded = audio.load(cut, sr=22050)
    except AudioReadError:
        pytest.fail("a truncated file is not a read error")
    except audio.AudioDecodeError:
        assert ext == ".flac"
    else:
        # The header still promises the whole song: the song is reported cut, not shorter.
        assert decoded.truncated and decoded.duration == pytest.approx(SECONDS, abs=0.1)
        assert decoded.analyzed == pytest.approx(SECONDS / 3, abs=0.2)


@pytest.mark.parametrize("native_sr", [44100, 22050])
def test_a_constant_dc_offset_is_silent_before_resampling(native_sr, tmp_path):
    """A resampler's edge transients on a constant 0.25 exceed the silence threshold: the check is made on the
    decoded samples, before resampling."""
    path = write_constant(tmp_path / "dc.wav", seconds=10.0, value=0.25, sr=native_sr)
    with pytest.raises(SilentAudioError):
        audio.load(str(path), sr=22050)
    with pytest.raises(SilentAudioError):
        with open(path, "rb") as f:
            audio.load(f, sr=22050)
    y = np.full(native_sr * 10, 0.25, np.float32)
    y[native_sr] = 0.26  # one sample off the offset: not silent
    sf.write(tmp_path / "blip.wav", y, native_sr, subtype="FLOAT")
    assert audio.load(str(tmp_path / "blip.wav"), sr=22050).duration == pytest.approx(10.0)


def _featurize_one(path: str, options: dict) -> dict:
    batch = {"path": np.array([path], dtype=object), "song_id": np.array([song_id_for(path)], dtype=object)}
    out = featurize_batch(
        batch,
        audio=AudioConfig(),
        clip_cfg=ClipConfig(),
        feature_cfg=__import__("conftest").TINY_FEATURES,
        storage_options=options,
    )
    return {k: v[0] for k, v in out.items()}


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg"])
def test_s3_connection_reset_mid_file(ext, s3_server, s3_bucket, tmp_path):
    """Through a proxy in front of the S3 server that resets connections a third of the way into the file:
    a reset that happens once is retried by s3fs and the whole song is read; one that happens on every try
    becomes an ``AudioReadError`` row of stage ``read``, never a shorter song or a decode error."""
    data = _song(tmp_path, ext).read_bytes()
    key = f"{s3_bucket}/song{ext}"
    s3_server.fs.pipe(key, data)
    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    for resets, expect in ((1, "ok"), (None, "error")):
        proxy = ResettingProxy((host, int(port)), reset_after=len(data) // 3, resets=resets)
        options = dict(s3_server.options, endpoint_url=proxy.endpoint, skip_instance_cache=True)
        try:
            row = _featurize_one(key, options)
        finally:
            proxy.close()
        assert proxy.n_reset >= 1, "the proxy never reset a connection"
        assert row["status"] == expect, row["error_message"]
        if expect == "ok":
            assert row["duration_s"] == pytest.approx(SECONDS, abs=0.1) and row["n_clips"] == int(SECONDS // 3)
        else:
            assert (row["error_stage"], row["error_type"]) == ("read", "AudioReadError"), row["error_message"]
