"""mgr_batch.io.audio: every format and rate decodes to mono float32 at the target rate; broken files raise leaves."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from audio_factory import write_aac, write_broken_corpus, write_catalog, write_noise, write_tone

from mgr_batch.errors import (
    AudioDecodeError,
    AudioError,
    EmptyAudioError,
    InvalidAudioError,
    MgrBatchError,
    SilentAudioError,
)
from mgr_batch.io import audio, ffmpeg, waveform


def peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3"])
@pytest.mark.parametrize("native_sr", [22050, 44100, 48000])
@pytest.mark.parametrize("target_sr", [16000, 22050])
def test_each_format_and_rate_decodes_to_mono_float32_at_target_rate(tmp_path, ext, native_sr, target_sr):
    path = write_tone(tmp_path / f"tone{ext}", seconds=2.0, sr=native_sr, freq=500.0)
    decoded = audio.load(str(path), sr=target_sr)
    assert decoded.y.dtype == np.float32
    assert decoded.y.ndim == 1
    assert decoded.sr == target_sr
    assert decoded.native_sr == native_sr
    assert decoded.channels == 1
    assert len(decoded.y) == pytest.approx(2.0 * target_sr, rel=0.01)
    assert decoded.duration == pytest.approx(2.0, rel=0.01)
    assert decoded.analyzed == pytest.approx(2.0, rel=0.01)
    assert peak_hz(decoded.y, target_sr) == pytest.approx(500.0, abs=3.0)


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3"])
def test_file_object_decodes_like_path(tmp_path, ext):
    path = write_noise(tmp_path / f"noise{ext}", seconds=1.5, sr=44100, channels=2)
    by_path = audio.load(str(path))
    with open(path, "rb") as f:
        by_file = audio.load(f)
    np.testing.assert_array_equal(by_path.y, by_file.y)
    assert by_file.channels == 2


def test_catalog_decodes_with_expected_lengths(tmp_path):
    durations = write_catalog(tmp_path)
    for name, seconds in durations.items():
        decoded = audio.load(str(tmp_path / name), sr=22050)
        assert decoded.y.dtype == np.float32 and decoded.y.ndim == 1, name
        assert len(decoded.y) == pytest.approx(seconds * 22050, rel=0.01), name
        assert decoded.duration == pytest.approx(seconds, rel=0.01), name


def test_stereo_is_mixed_to_mono_as_the_channel_mean(tmp_path):
    sr = 22050
    t = np.arange(sr) / sr
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    right = 0.2 * np.sin(2 * np.pi * 660 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1).astype(np.float32), sr, subtype="FLOAT")
    decoded = audio.load(str(tmp_path / "stereo.wav"), sr=sr)
    assert decoded.channels == 2
    np.testing.assert_allclose(decoded.y, ((left + right) / 2).astype(np.float32), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8, 10])
def test_mix_down_is_numpys_float32_channel_mean_bit_for_bit(channels):
    rng = np.random.default_rng(channels)
    block = (rng.standard_normal((10_007, channels)) * rng.uniform(1e-3, 3.0, size=channels)).astype(np.float32)
    block[::7] *= np.float32(1e-30)  # subnormals too
    original = block.copy()
    mixed = waveform.mix_down(block)
    assert mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed.view(np.int32), block.mean(axis=1, dtype=np.float32).view(np.int32))
    np.testing.assert_array_equal(block, original)  # the caller's block is left alone


def test_opposite_channels_cancel_to_silence(tmp_path):
    sr = 22050
    y = 0.3 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    sf.write(tmp_path / "phase.wav", np.stack([y, -y], axis=1).astype(np.float32), sr, subtype="FLOAT")
    with pytest.raises(SilentAudioError):
        audio.load(str(tmp_path / "phase.wav"), sr=sr)


@pytest.mark.parametrize("freq", [1000.0, 3000.0])
def test_resampling_keeps_a_tone_at_its_frequency(tmp_path, freq):
    path = write_tone(tmp_path / "tone.wav", seconds=2.0, sr=44100, freq=freq, subtype="FLOAT")
    decoded = audio.load(str(path), sr=22050)
    assert len(decoded.y) == 44100
    assert peak_hz(decoded.y, 22050) == pytest.approx(freq, abs=1.0)
    # soxr keeps the level of an in-band tone: RMS of a 0.3 sine is 0.3 / sqrt(2)
    assert np.sqrt(np.mean(decoded.y[2000:-2000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.01)


def test_resampling_removes_content_above_the_new_nyquist(tmp_path):
    path = write_tone(tmp_path / "high.wav", seconds=1.0, sr=44100, freq=15000.0, subtype="FLOAT")
    decoded = audio.load(str(path), sr=22050, silence_threshold=0.0)
    assert np.max(np.abs(decoded.y[1000:-1000])) < 0.01  # 15 kHz does not fold back below 11.025 kHz


def test_broken_corpus_raises_the_expected_leaf(tmp_path):
    expected = write_broken_corpus(tmp_path)
    assert len(expected) == 7
    for name, error_type in expected.items():
        with pytest.raises(AudioError) as info:
            audio.load(str(tmp_path / name))
        assert type(info.value).__name__ == error_type, name
        assert isinstance(info.value, MgrBatchError)
        with open(tmp_path / name, "rb") as f, pytest.raises(AudioError) as info:
            audio.load(f)
        assert type(info.value).__name__ == error_type, f"{name} as a file object"


@pytest.mark.parametrize(
    "y, error",
    [
        (np.zeros(0, np.float32), EmptyAudioError),
        (np.array([0.1, np.nan, 0.2], np.float32), InvalidAudioError),
        (np.array([0.1, np.inf, 0.2], np.float32), InvalidAudioError),
        (np.zeros(100, np.float32), SilentAudioError),
        (np.full(100, -0.7, np.float32), SilentAudioError),
        (np.full(100, 0.25, np.float32) + np.float32(5e-5) * (np.arange(100) % 2), SilentAudioError),
    ],
)
def test_validate_rejects(y, error):
    with pytest.raises(error):
        audio.validate(y)


@pytest.mark.parametrize("threshold, raises", [(1e-4, False), (1e-2, True)])
def test_silence_threshold_is_on_peak_deviation_from_the_mean(threshold, raises):
    y = np.full(1000, 0.5, np.float32)
    y[::2] += 1e-3  # peak deviation from the mean: 5e-4
    if raises:
        with pytest.raises(SilentAudioError):
            audio.validate(y, silence_threshold=threshold)
    else:
        audio.validate(y, silence_threshold=threshold)


@pytest.mark.parametrize("ext", [".wav", ".flac", ".mp3", ".ogg"])
@pytest.mark.parametrize("max_duration", [0.5, 2.0])
def test_max_duration_caps_decoded_length_but_not_duration(tmp_path, ext, max_duration):
    path = write_tone(tmp_path / f"long{ext}", seconds=4.0, sr=44100)
    decoded = audio.load(str(path), sr=22050, max_duration=max_duration)
    assert len(decoded.y) == pytest.approx(max_duration * 22050, rel=0.01)
    assert decoded.analyzed == pytest.approx(max_duration, rel=0.01)
    assert decoded.duration == pytest.approx(4.0, rel=0.01)


def test_max_duration_longer_than_the_file_changes_nothing(tmp_path):
    path = write_tone(tmp_path / "short.wav", seconds=1.0, sr=22050)
    assert len(audio.load(str(path), sr=22050, max_duration=60.0).y) == 22050


def test_decoding_in_blocks_matches_one_block(tmp_path, monkeypatch):
    path = write_noise(tmp_path / "noise.wav", seconds=3.0, sr=22050)
    whole = audio.load(str(path), sr=22050).y
    monkeypatch.setattr(audio, "BLOCK_SECONDS", 0.25)  # 12 blocks
    np.testing.assert_array_equal(audio.load(str(path), sr=22050).y, whole)


def test_block_resampling_is_seamless(tmp_path, monkeypatch):
    path = write_tone(tmp_path / "tone.wav", seconds=3.0, sr=44100, freq=1000.0, subtype="FLOAT")
    whole = audio.load(str(path), sr=22050).y
    monkeypatch.setattr(audio, "BLOCK_SECONDS", 0.1)
    blocks = audio.load(str(path), sr=22050).y
    assert len(blocks) == len(whole)
    np.testing.assert_allclose(blocks, whole, atol=1e-4)


def _aac_or_skip(path, **kwargs):
    from av.codec.codec import UnknownCodecError

    try:
        return write_aac(path, **kwargs)
    except UnknownCodecError as exc:  # an FFmpeg build without an AAC encoder (what add_stream raises then)
        pytest.skip(f"PyAV cannot encode AAC here: {exc}")


def test_m4a_decodes_through_the_pyav_fallback(tmp_path):
    path = _aac_or_skip(tmp_path / "tone.m4a", seconds=5.0, sr=44100, freq=1000.0)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(path))  # libsndfile cannot, so this exercises the fallback
    decoded = audio.load(str(path), sr=22050)
    assert decoded.y.dtype == np.float32 and decoded.y.ndim == 1
    assert decoded.native_sr == 44100
    assert decoded.channels == 1
    assert len(decoded.y) == pytest.approx(5.0 * 22050, rel=0.01)
    assert decoded.duration == pytest.approx(5.0, rel=0.01)
    assert peak_hz(decoded.y, 22050) == pytest.approx(1000.0, abs=1.0)
    with open(path, "rb") as f:
        assert len(audio.load(f, sr=22050).y) == len(decoded.y)


def test_m4a_max_duration(tmp_path):
    path = _aac_or_skip(tmp_path / "tone.m4a", seconds=5.0, sr=44100)
    decoded = audio.load(str(path), sr=22050, max_duration=1.0)
    assert len(decoded.y) == pytest.approx(22050, rel=0.01)
    assert decoded.duration == pytest.approx(5.0, rel=0.01)


def test_stereo_m4a_is_mixed_like_stereo_wav(tmp_path):
    path = _aac_or_skip(tmp_path / "stereo.m4a", seconds=4.0, sr=44100, channels=2, freq=1000.0)
    wav = write_tone(tmp_path / "stereo.wav", seconds=4.0, sr=44100, channels=2, freq=1000.0, amplitude=0.3)
    decoded_m4a = audio.load(str(path), sr=22050)
    decoded_wav = audio.load(str(wav), sr=22050)
    assert decoded_m4a.channels == 2
    rms = [float(np.sqrt(np.mean(d.y[22050:66150] ** 2))) for d in (decoded_m4a, decoded_wav)]
    assert rms[0] == pytest.approx(rms[1], rel=0.02)


@pytest.mark.parametrize("ext, sr, atol", [(".ogg", 44100, 1e-5), (".opus", 48000, None)])
def test_ogg_goes_to_ffmpeg_first_and_decodes_like_libsndfile(tmp_path, ext, sr, atol):
    path = write_noise(tmp_path / f"noise{ext}", seconds=4.0, sr=sr, channels=2, amplitude=0.2)
    decoded = audio.load(str(path), sr=22050)
    with open(path, "rb") as f:
        from_file = audio.load(f, sr=22050)
    by_libsndfile = audio._load_soundfile(str(path), 22050, None, "HQ")
    assert decoded.decoder == from_file.decoder == "ffmpeg"
    np.testing.assert_array_equal(decoded.y, from_file.y)
    assert (decoded.native_sr, decoded.channels) == (by_libsndfile.native_sr, by_libsndfile.channels) == (sr, 2)
    assert len(decoded.y) == len(by_libsndfile.y)
    assert decoded.duration == pytest.approx(by_libsndfile.duration, abs=1e-3)
    if atol is not None:  # Vorbis: one specified decoder, two float implementations
        np.testing.assert_allclose(decoded.y, by_libsndfile.y, atol=atol)
    else:  # Opus: FFmpeg's own decoder and libopus may differ within the format's tolerance
        error = np.sqrt(np.mean((decoded.y - by_libsndfile.y) ** 2) / np.mean(by_libsndfile.y**2))
        assert error < 1e-3


@pytest.mark.parametrize("ext", [".wav", ".flac", ".mp3"])
def test_other_formats_go_to_libsndfile_first(tmp_path, ext):
    path = write_tone(tmp_path / f"tone{ext}", seconds=1.0, sr=44100)
    assert audio.load(str(path)).decoder == "libsndfile"


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_ffmpeg_converts_integer_samples_to_the_same_waveform(tmp_path, ext, monkeypatch):
    """PCM and FLAC frames pass through FFmpeg's format converter, which must give every sample back."""
    path = write_noise(tmp_path / f"noise{ext}", seconds=3.0, sr=44100, channels=2, seed=5)
    monkeypatch.setattr(audio, "BLOCK_SECONDS", 0.7)  # several blocks, and a last one cut short
    by_ffmpeg = ffmpeg.load(str(path), 22050, None, "HQ")
    by_libsndfile = audio._load_soundfile(str(path), 22050, None, "HQ")
    assert by_ffmpeg.decoder == "ffmpeg"
    np.testing.assert_array_equal(by_ffmpeg.y, by_libsndfile.y)
    assert by_ffmpeg.duration == by_libsndfile.duration == 3.0


def test_ffmpeg_streams_local_files_and_copies_only_other_file_objects(tmp_path):
    """A long local Ogg is never read whole into memory; a remote file (no FFmpeg-safe seeks) is."""
    path = write_tone(tmp_path / "tone.ogg", seconds=1.0)
    with open(path, "rb") as f:
        f.read(10)
        assert ffmpeg.fresh(f) is f and f.tell() == 0
        other = io.BytesIO(path.read_bytes())
        other.read(10)
        fresh = ffmpeg.fresh(other)
        assert fresh is not other and fresh.read() == path.read_bytes()


def test_an_undecodable_ogg_names_both_decoders(tmp_path):
    (tmp_path / "x.ogg").write_bytes(b"OggS" + bytes(range(256)) * 8)
    with pytest.raises(AudioDecodeError, match="libsndfile.*ffmpeg"):
        audio.load(str(tmp_path / "x.ogg"))


def test_a_decode_error_message_names_both_decoders(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF????WAVEjunk")
    with pytest.raises(AudioDecodeError, match="libsndfile.*ffmpeg"):
        audio.load(str(tmp_path / "x.wav"))
