"""Small, deterministic, real audio files for the tests: tones, noise, chirps, broken files, a mixed catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

#: Extensions soundfile writes here, with the subtype each gets when none is given.
DEFAULT_SUBTYPES = {".wav": "PCM_16", ".flac": "PCM_16", ".ogg": "VORBIS", ".opus": "OPUS", ".mp3": "MPEG_LAYER_III"}


def _write(path: str | Path, y: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    """Write ``y`` (n,) or (n, channels) to ``path``; the format follows the extension."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in DEFAULT_SUBTYPES:
        raise ValueError(f"audio_factory writes {', '.join(DEFAULT_SUBTYPES)}, not {ext!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "OGG" if ext == ".opus" else None  # Opus in Ogg (libsndfile: 8, 12, 16, 24 or 48 kHz only)
    sf.write(str(path), y, sr, subtype=subtype or DEFAULT_SUBTYPES[ext], format=fmt)
    return path


def _times(seconds: float, sr: int) -> np.ndarray:
    return np.arange(int(round(seconds * sr)), dtype=np.float64) / sr


def _channels(y: np.ndarray, channels: int) -> np.ndarray:
    return y if channels == 1 else np.repeat(y[:, None], channels, axis=1)


def write_tone(
    path: str | Path,
    *,
    seconds: float,
    sr: int = 22050,
    channels: int = 1,
    freq: float = 440.0,
    amplitude: float = 0.3,
    subtype: str | None = None,
) -> Path:
    """A sine of ``freq`` Hz, the same in every channel."""
    y = amplitude * np.sin(2 * np.pi * freq * _times(seconds, sr))
    return _write(path, _channels(y.astype(np.float32), channels), sr, subtype)


def write_noise(
    path: str | Path, *, seconds: float, sr: int = 22050, channels: int = 1, seed: int = 0, amplitude: float = 0.1
) -> Path:
    """Gaussian white noise of standard deviation ``amplitude`` (clipped to ±0.99), independent per channel."""
    rng = np.random.default_rng(seed)
    y = np.clip(amplitude * rng.standard_normal((int(round(seconds * sr)), channels)), -0.99, 0.99)
    return _write(path, (y[:, 0] if channels == 1 else y).astype(np.float32), sr)


def write_chirp(path: str | Path, *, seconds: float, sr: int = 22050, fmin: float = 100, fmax: float = 4000) -> Path:
    """A mono exponential sweep from ``fmin`` to ``fmax`` Hz, amplitude 0.3."""
    t = _times(seconds, sr)
    k = np.log(fmax / fmin) / seconds
    y = 0.3 * np.sin(2 * np.pi * fmin * (np.exp(k * t) - 1) / k)
    return _write(path, y.astype(np.float32), sr)


def write_with_pyav(
    path: str | Path,
    *,
    muxer: str,
    codec: str,
    seconds: float,
    sr: int,
    channels: int = 1,
    freq: float = 440.0,
    tags: dict[str, str] | None = None,
    **options,
) -> Path:
    """A sine written with PyAV (FFmpeg's ``muxer`` and ``codec``, for formats libsndfile cannot write), with
    ``tags`` in the container's metadata (FFmpeg writes each format's own tag: ID3 frames, Vorbis comments,
    MP4 atoms, ASF attributes, RIFF INFO, Matroska tags)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    y = (0.3 * np.sin(2 * np.pi * freq * _times(seconds, sr))).astype(np.float32)
    planes = np.repeat(y[None, :], channels, axis=0)
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=muxer, options=options) as container:
        container.metadata.update(tags or {})
        stream = container.add_stream(codec, rate=sr)
        stream.layout = layout
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        if codec == "wmav2":
            stream.bit_rate = 64000
        for lo in range(0, planes.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planes[:, lo : lo + 1024]), format="fltp", layout=layout
            )
            frame.sample_rate = sr
            frame.pts = lo
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_aac(path: str | Path, *, seconds: float, sr: int = 44100, channels: int = 1, freq: float = 1000.0) -> Path:
    """A sine in AAC inside an MP4 container (.m4a), written with PyAV (libsndfile cannot write it)."""
    return write_with_pyav(path, muxer="mp4", codec="aac", seconds=seconds, sr=sr, channels=channels, freq=freq)


def write_tones_and_noise(root: str | Path, *, seconds: float = 2.0, noise_ext: str = "wav") -> Path:
    """Two genres of ``seconds``-long songs (tones as WAV, noise as ``noise_ext``), 3 train and 1 valid song
    each, with ``train.txt`` and ``valid.txt`` split lists (GTZAN's ``.wav`` names; see :func:`split_flags`)."""
    root = Path(root)
    for i in range(4):
        write_tone(root / "tones" / f"tones.{i:05d}.wav", seconds=seconds, freq=300.0 + 100 * i)
        write_noise(root / "noise" / f"noise.{i:05d}.{noise_ext}", seconds=seconds, seed=i)
    (root / "train.txt").write_text("\n".join(f"{g}/{g}.{i:05d}.wav" for g in ("tones", "noise") for i in range(3)))
    (root / "valid.txt").write_text("tones/tones.00003.wav\nnoise/noise.00003.wav\n")
    return root


def split_flags(root: str | Path) -> list[str]:
    """The train/valid list flags of a :func:`write_tones_and_noise` folder."""
    return ["--train-list", str(Path(root) / "train.txt"), "--valid-list", str(Path(root) / "valid.txt")]


def _truncate_to_header(path: Path) -> None:
    """Cut a WAV file right after its ``data`` chunk header: the header promises samples that are not there."""
    data = path.read_bytes()
    at = data.index(b"data")
    path.write_bytes(data[: at + 8])


def write_broken_corpus(folder: str | Path) -> dict[str, str]:
    """Files no genre can be read from; returns {file name: the ``error_type`` the decoder must give}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sr = 22050
    (folder / "empty.wav").write_bytes(b"")
    noise = np.random.default_rng(1).integers(0, 255, size=4096, dtype=np.uint8)  # no 0xFF: no MPEG frame sync
    (folder / "garbage.mp3").write_bytes(noise.tobytes())
    (folder / "text.wav").write_text("this is a text file, not a RIFF/WAVE file\n" * 20)
    _write(folder / "silent.wav", np.zeros(sr, np.float32), sr)
    _write(folder / "dc.wav", np.full(sr, 0.5, np.float32), sr)
    nan = (0.1 * np.sin(2 * np.pi * 440 * _times(1.0, sr))).astype(np.float32)
    nan[100:110] = np.nan
    _write(folder / "nan.wav", nan, sr, subtype="FLOAT")
    write_tone(folder / "truncated.wav", seconds=1.0, sr=sr)
    _truncate_to_header(folder / "truncated.wav")
    return {
        "empty.wav": "AudioDecodeError",  # libsndfile and FFmpeg both refuse zero bytes
        "garbage.mp3": "AudioDecodeError",
        "text.wav": "AudioDecodeError",
        "silent.wav": "SilentAudioError",
        "dc.wav": "SilentAudioError",
        "nan.wav": "InvalidAudioError",
        "truncated.wav": "EmptyAudioError",  # a valid header with no samples decodes to zero samples
    }


#: name -> (writer, keyword arguments) of the mixed catalog.
CATALOG = {
    "tone_22k_mono.wav": ("tone", dict(seconds=1.0, sr=22050, channels=1, freq=440.0)),
    "noise_44k_stereo.flac": ("noise", dict(seconds=4.0, sr=44100, channels=2, seed=3)),
    "chirp_48k_mono.ogg": ("chirp", dict(seconds=6.5, sr=48000)),
    "tone_44k_stereo.mp3": ("tone", dict(seconds=20.0, sr=44100, channels=2, freq=880.0)),
    "noise_22k_mono.mp3": ("noise", dict(seconds=3.0, sr=22050, channels=1, seed=4)),
    "Café del Mar – Ünïcode 01.flac": ("tone", dict(seconds=9.0, sr=48000, channels=2, freq=330.0)),
}


def write_catalog(folder: str | Path) -> dict[str, float]:
    """A small mixed catalog (wav/flac/ogg/mp3; 22.05/44.1/48 kHz; mono and stereo; 1 to 20 s).

    Returns {file name: duration in seconds}. One name holds spaces and non-ASCII letters.
    """
    folder = Path(folder)
    writers = {"tone": write_tone, "noise": write_noise, "chirp": write_chirp}
    out = {}
    for name, (kind, kwargs) in CATALOG.items():
        writers[kind](folder / name, **kwargs)
        out[name] = float(kwargs["seconds"])
    return out


# Synthetic parts for segmentation tests (arrays, not files): 11025 Hz unless told otherwise.


def noise(seconds: float, *, seed: int = 0, amplitude: float = 0.1, sr: int = 11025) -> np.ndarray:
    return amplitude * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))


def ar1(seconds: float, rho: float, *, seed: int = 0) -> np.ndarray:
    """White noise through 1 / (1 - rho z^-1): a spectral tilt that grows with rho."""
    return lfilter([1.0], [1.0, -rho], noise(seconds, seed=seed))


def chord(seconds: float, *, sr: int = 11025, seed: int = 1) -> np.ndarray:
    """A just-intonation A major triad (220, 275, 330 Hz) 40 dB above a noise floor.

    Whole numbers of cycles per second keep every window alike: the AR fit of nearly pure tones is sensitive
    to their relative phases within the window.
    """
    t = np.arange(int(round(seconds * sr))) / sr
    tones = sum(0.1 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate((220.0, 275.0, 330.0)))
    return tones + noise(seconds, seed=seed, amplitude=1e-3, sr=sr)


def drums(seconds: float, *, sr: int = 11025, seed: int = 2, bpm: float = 120.0) -> np.ndarray:
    """A kick (decaying 60 Hz sine) on every beat, a hi-hat (decaying high-passed noise) on every off-beat."""
    n, beat = int(round(seconds * sr)), int(round(60.0 / bpm * sr))
    t = np.arange(beat) / sr
    kick = 0.5 * np.sin(2 * np.pi * 60.0 * t) * np.exp(-t / 0.08)
    hat = lfilter([1.0, -1.0], [1.0], noise(beat / sr, seed=seed, amplitude=0.3, sr=sr)) * np.exp(-t / 0.02)
    y = np.zeros(n + 2 * beat)
    for start in range(0, n, beat):
        y[start : start + beat] += kick
        y[start + beat // 2 : start + beat // 2 + beat] += hat
    return y[:n] + noise(seconds, seed=seed + 1, amplitude=1e-3, sr=sr)


def three_part_song(sr: int = 11025) -> np.ndarray:
    """20 s white noise, 20 s chord, 20 s kick/hi-hat pattern: boundaries at 20 s and 40 s."""
    return np.concatenate([noise(20.0, sr=sr), chord(20.0, sr=sr), drums(20.0, sr=sr)])


# Bad and unusual input: generators for tests/test_bad_input.py and tests/test_long_audio.py.


def write_in_format(path: str | Path, *, real_ext: str, seconds: float, sr: int = 22050, channels: int = 1) -> Path:
    """A tone encoded as ``real_ext`` (e.g. ".mp3") but saved under ``path``, whose extension may say otherwise."""
    path = Path(path)
    real = write_tone(path.with_name(path.name + ".tmp" + real_ext), seconds=seconds, sr=sr, channels=channels)
    real.replace(path)
    return path


def truncate_bytes(path: str | Path, keep: int) -> Path:
    """Keep only the first ``keep`` bytes of a file (a download or copy cut short)."""
    path = Path(path)
    path.write_bytes(path.read_bytes()[:keep])
    return path


def truncate_wav_data(path: str | Path, *, keep_seconds: float) -> Path:
    """Cut a 16-bit mono WAV ``keep_seconds`` into its samples; the header still promises them all."""
    path = Path(path)
    data = path.read_bytes()
    sr = int.from_bytes(data[24:28], "little")
    at = data.index(b"data") + 8
    return truncate_bytes(path, at + 2 * int(round(keep_seconds * sr)))


def write_random_bytes(path: str | Path, *, n_bytes: int = 8192, seed: int = 0, mpeg_sync: bool = True) -> Path:
    """Uniform random bytes; ``mpeg_sync=False`` leaves out 0xFF so no MPEG frame sync can appear by chance."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    high = 256 if mpeg_sync else 255
    path.write_bytes(np.random.default_rng(seed).integers(0, high, size=n_bytes, dtype=np.uint8).tobytes())
    return path


def write_spliced_mp3(path: str | Path, *, garbage: int, seconds: float = 4.0, seed: int = 0) -> Path:
    """A tone mp3 with ``garbage`` random bytes spliced into its middle, as a damaged download: with 300,
    libsndfile's mpg123 prints notes ("Illegal Audio-MPEG-Header ... Trying to resync") and decodes it;
    with 3000 it gives up."""
    path = write_tone(path, seconds=seconds)
    data = path.read_bytes()
    middle = len(data) // 2
    noise = np.random.default_rng(seed).integers(0, 255, garbage, dtype=np.uint8).tobytes()
    path.write_bytes(data[:middle] + noise + data[middle:])
    return path


def write_constant(
    path: str | Path, *, seconds: float, value: float, sr: int = 22050, subtype: str | None = None
) -> Path:
    """Every sample equal to ``value``: digital silence (0) or a pure DC offset."""
    return _write(path, np.full(int(round(seconds * sr)), value, np.float32), sr, subtype)


def write_nonfinite(
    path: str | Path, *, seconds: float, value: float, sr: int = 22050, subtype: str = "FLOAT", n_bad: int = 10
) -> Path:
    """A tone in a float WAV (FLOAT or DOUBLE) with ``n_bad`` samples set to ``value`` (NaN, inf or -inf)."""
    y = 0.1 * np.sin(2 * np.pi * 440 * _times(seconds, sr))
    y[len(y) // 2 : len(y) // 2 + n_bad] = value
    return _write(path, y.astype(np.float32 if subtype == "FLOAT" else np.float64), sr, subtype)


def write_symlink(path: str | Path, target: str | Path) -> Path:
    """A symbolic link at ``path`` to ``target`` (which need not exist: a dangling link)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def write_symlink_loop(a: str | Path, b: str | Path) -> tuple[Path, Path]:
    """Two links pointing at each other (a -> b -> a): opening either fails with ELOOP."""
    return write_symlink(a, b), write_symlink(b, a)


def write_long_tone(
    path: str | Path, *, seconds: float, sr: int = 8000, freq: float = 440.0, block_seconds: float = 60.0
) -> Path:
    """A long mono 16-bit WAV sine written block by block, so writing it never holds the whole signal."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, block = int(round(seconds * sr)), int(round(block_seconds * sr))
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for lo in range(0, n, block):
            t = np.arange(lo, min(n, lo + block), dtype=np.float64) / sr
            f.write((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
    return path
