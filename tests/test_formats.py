"""Every container a catalog holds decodes by its content, whole; a file no decoder reads to its end says so."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from audio_factory import truncate_bytes, truncate_wav_data, write_noise, write_tone

from mgr_batch.cli import main
from mgr_batch.config import AUDIO_EXTENSIONS
from mgr_batch.io import audio
from mgr_batch.io.storage import list_inputs

SECONDS = 5.0

#: name -> (FFmpeg muxer, encoder, sample rate, channels, with a video stream)
PYAV_FILES = {
    "song.wma": ("asf", "wmav2", 44100, 2, False),
    "song.wv": ("wv", "wavpack", 44100, 2, False),
    "song.mka": ("matroska", "flac", 48000, 2, False),
    "song.caf": ("caf", "alac", 44100, 2, False),
    "song.mp2": ("mp2", "mp2", 44100, 2, False),
    "song.ac3": ("ac3", "ac3", 48000, 2, False),
    "song.webm": ("webm", "libopus", 48000, 2, False),
    "song.amr": ("amr", "libopencore_amrnb", 8000, 1, False),
    "song.mp4": ("mp4", "aac", 44100, 2, False),
    "song.m4b": ("ipod", "aac", 22050, 1, False),
    "song.aifc": ("aiff", "pcm_f32be", 22050, 1, False),
    "video.mp4": ("mp4", "aac", 44100, 2, True),
    "video.mkv": ("matroska", "libopus", 48000, 2, True),
}
#: Seconds a decoded length may differ from the samples encoded: about two codec frames of encoder delay and
#: padding (WMA's 2048-sample frames trim 47 ms, AC3's 1536 add 11 ms).
TOLERANCE_S = 0.06


def write_av(path: Path, *, muxer: str, codec: str, sr: int, channels: int, video: bool = False) -> float:
    """A chirp of about :data:`SECONDS` written with PyAV (and a small grey video beside it with ``video``);
    returns its length in seconds (whole codec frames)."""
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=sr)
        stream.layout = layout
        stream.bit_rate = 12200 if codec == "libopencore_amrnb" else 128000
        if video:
            picture = container.add_stream("mpeg4", rate=5)
            picture.width = picture.height = 64
            picture.pix_fmt = "yuv420p"
        step = stream.codec_context.frame_size or 1024
        n = -(-int(SECONDS * sr) // step) * step
        t = np.arange(n) / sr
        k = np.log(40.0) / (n / sr)
        y = (0.3 * np.sin(2 * np.pi * 100.0 * (np.exp(k * t) - 1) / k)).astype(np.float32)  # 100 Hz to 4 kHz
        planes = np.repeat(y[None], channels, axis=0)
        to_codec = av.AudioResampler(format=stream.codec_context.format, layout=layout, rate=sr)
        for lo in range(0, n, step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes[:, lo : lo + step]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = sr, lo
            for converted in to_codec.resample(frame):
                for packet in stream.encode(converted):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if video:
            for i in range(int(SECONDS * 5)):
                image = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 10 * i, np.uint8), format="rgb24")
                image.pts = i
                for packet in picture.encode(image):
                    container.mux(packet)
            for packet in picture.encode(None):
                container.mux(packet)
    return n / sr


def write_rate_change_mp3(path: Path) -> Path:
    """Two 10 s MP3 encodes at 44.1 and 22.05 kHz joined as bytes, as radio rips are: libsndfile's mpg123 stops
    at the first one's Xing frame count."""
    first = write_tone(path.with_name("first.tmp.mp3"), seconds=10.0, sr=44100, freq=440.0)
    second = write_tone(path.with_name("second.tmp.mp3"), seconds=10.0, sr=22050, freq=660.0)
    path.write_bytes(first.read_bytes() + second.read_bytes())
    first.unlink()
    second.unlink()
    return path


def write_cut_wav(path: Path) -> Path:
    """An 8 s WAV whose data ends at 4.5 s: the header still promises 8 s."""
    return truncate_wav_data(write_tone(path, seconds=8.0), keep_seconds=4.5)


def write_cut_ogg(path: Path) -> Path:
    """A 10 s Ogg Vorbis cut mid-stream: no end-of-stream page."""
    path = write_noise(path, seconds=10.0)
    return truncate_bytes(path, path.stat().st_size // 2)


@pytest.mark.parametrize("name", sorted(PYAV_FILES))
def test_each_container_decodes_whole(name, tmp_path):
    muxer, codec, sr, channels, video = PYAV_FILES[name]
    seconds = write_av(tmp_path / name, muxer=muxer, codec=codec, sr=sr, channels=channels, video=video)
    decoded = audio.load(str(tmp_path / name), sr=22050)
    assert (decoded.native_sr, decoded.channels, decoded.truncated) == (sr, channels, False)
    assert decoded.duration == pytest.approx(seconds, abs=TOLERANCE_S)
    assert decoded.analyzed == pytest.approx(seconds, abs=TOLERANCE_S)
    assert np.sqrt(np.mean(decoded.y**2)) > 0.1  # the chirp, not silence


def test_every_written_extension_is_taken_by_a_folder_walk(tmp_path):
    for name in PYAV_FILES:
        (tmp_path / name.upper()).write_bytes(b"listed by name only")
    (tmp_path / "cover.jpg").write_bytes(b"\xff\xd8")
    listed = {Path(p).name for p in list_inputs(str(tmp_path)).files["path"]}
    assert listed == {name.upper() for name in PYAV_FILES}
    assert {".wma", ".wv", ".mka", ".caf", ".mp2", ".ac3", ".webm", ".amr", ".m4b", ".aifc"} <= set(AUDIO_EXTENSIONS)


def test_an_mp3_whose_rate_changes_half_way_decodes_whole(tmp_path):
    path = write_rate_change_mp3(tmp_path / "joined.mp3")
    decoded = audio.load(str(path), sr=22050)
    assert decoded.decoder == "ffmpeg" and decoded.native_sr == 44100 and not decoded.truncated
    assert decoded.duration == pytest.approx(20.0, abs=0.1)
    assert decoded.analyzed == pytest.approx(20.0, abs=0.1)
    # Both halves, each at its own pitch: 440 Hz in the first 10 s, 660 Hz in the last.
    for (lo, hi), freq in (((1.0, 9.0), 440.0), ((11.0, 19.0), 660.0)):
        part = decoded.y[int(lo * 22050) : int(hi * 22050)]
        spectrum = np.abs(np.fft.rfft(part))
        assert np.fft.rfftfreq(len(part), 1 / 22050)[np.argmax(spectrum)] == pytest.approx(freq, abs=2.0)


def test_a_cut_wav_is_reported_cut_with_the_length_its_header_promised(tmp_path):
    decoded = audio.load(str(write_cut_wav(tmp_path / "cut.wav")), sr=22050)
    assert decoded.truncated
    assert decoded.duration == pytest.approx(8.0) and decoded.analyzed == pytest.approx(4.5, abs=1e-3)


def test_a_cut_ogg_is_reported_cut(tmp_path):
    decoded = audio.load(str(write_cut_ogg(tmp_path / "cut.ogg")), sr=22050)
    assert decoded.truncated and 3.0 < decoded.analyzed < 7.0
    whole = audio.load(str(write_noise(tmp_path / "whole.ogg", seconds=10.0)), sr=22050)
    assert not whole.truncated and whole.duration == pytest.approx(10.0, abs=0.01)


def test_a_song_cut_at_max_duration_is_not_truncated(tmp_path):
    decoded = audio.load(str(write_tone(tmp_path / "long.wav", seconds=6.0)), sr=22050, max_duration=2.0)
    assert not decoded.truncated
    assert decoded.duration == pytest.approx(6.0) and decoded.analyzed == pytest.approx(2.0)


@pytest.mark.parametrize("value", ["wav", "*.wav", ".", "", ".wav,mp3"])
def test_bad_extensions_are_one_line_and_exit_2(value, tmp_path, capsys):
    code = main(["tag", str(tmp_path), "--output", str(tmp_path / "out"), "--extensions", value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "extension" in err


def test_extensions_replace_the_list(tmp_path):
    from mgr_batch.cli import build_parser, tag_config

    args = build_parser().parse_args(["tag", str(tmp_path), "-o", str(tmp_path / "o"), "--extensions", ".wav,.XYZ"])
    assert tag_config(args).extensions == (".wav", ".XYZ")
    write_tone(tmp_path / "a.wav", seconds=1.0)
    write_tone(tmp_path / "b.flac", seconds=1.0)
    (tmp_path / "c.xyz").write_bytes((tmp_path / "a.wav").read_bytes())
    listed = {Path(p).name for p in list_inputs(str(tmp_path), extensions=(".wav", ".XYZ")).files["path"]}
    assert listed == {"a.wav", "c.xyz"}


@pytest.mark.usefixtures("ray_cluster")
def test_tag_puts_every_file_in_exactly_one_table_with_its_length(tmp_path, tiny_model):
    root = tmp_path / "catalog"
    root.mkdir()
    expected = {}  # name -> (duration_s, analyzed_s, truncated)
    for name, (muxer, codec, sr, channels, video) in PYAV_FILES.items():
        seconds = write_av(root / name, muxer=muxer, codec=codec, sr=sr, channels=channels, video=video)
        expected[name] = (seconds, seconds, False)
    write_rate_change_mp3(root / "joined.mp3")
    expected["joined.mp3"] = (20.0, 20.0, False)
    write_cut_wav(root / "cut.wav")
    expected["cut.wav"] = (8.0, 4.5, True)
    (root / "text.wav").write_text("this is a text file, not a RIFF/WAVE file\n" * 20)
    out = tmp_path / "out"
    assert main(["tag", str(root), "--output", str(out), "--model", tiny_model, "--songs-per-task", "4"]) == 0
    songs = pq.read_table(out / "songs").to_pandas()
    errors = pq.read_table(out / "errors").to_pandas()
    assert sorted(Path(p).name for p in songs["path"]) == sorted(expected)
    assert [(Path(p).name, t) for p, t in zip(errors["path"], errors["error_type"], strict=True)] == [
        ("text.wav", "AudioDecodeError")
    ]
    for _, row in songs.iterrows():
        duration, analyzed, truncated = expected[Path(row["path"]).name]
        where = Path(row["path"]).name
        assert row["duration_s"] == pytest.approx(duration, abs=0.1), where
        assert row["analyzed_s"] == pytest.approx(analyzed, abs=0.1), where
        assert row["truncated"] == truncated, where
