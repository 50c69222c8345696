"""Bytes to waveform: decode (soundfile, PyAV for what libsndfile lacks), mono, resample (soxr), validate."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
import soxr

from mgr_batch.errors import (
    AudioDecodeError,
    EmptyAudioError,
    InvalidAudioError,
    SilentAudioError,
)

#: Seconds of native-rate audio decoded at a time: bounds memory to one block plus the output.
BLOCK_SECONDS = 30.0


@dataclass(frozen=True)
class Decoded:
    """A decoded song: mono float32 ``y`` of shape (n,) at ``sr`` Hz.

    ``duration`` is the whole file's length in seconds as its header says (or as decoded when the
    header does not say); ``y`` holds at most ``max_duration`` seconds of it.
    """

    y: np.ndarray
    sr: int
    native_sr: int
    channels: int
    duration: float

    @property
    def analyzed(self) -> float:
        return len(self.y) / self.sr


def load(
    source: BinaryIO | str,
    *,
    sr: int = 22050,
    max_duration: float | None = None,
    silence_threshold: float = 1e-4,
    resample_quality: str = "HQ",
) -> Decoded:
    """Decode a file (path or seekable binary file object) to mono float32 at ``sr`` Hz.

    Tries libsndfile (wav, flac, ogg/vorbis/opus, mp3, aiff, ...) first, then FFmpeg through PyAV
    (m4a/aac and anything else FFmpeg reads). Raises an ``AudioError`` leaf for files that are not
    usable audio: undecodable, empty, NaN/inf samples, or silent.
    """
    if not isinstance(source, str):
        if not source.read(1):
            raise AudioDecodeError("the file is empty (0 bytes)")
        source.seek(0)
    try:
        decoded = _load_soundfile(source, sr, max_duration, resample_quality)
    except sf.LibsndfileError as sf_exc:
        try:
            decoded = _load_pyav(_fresh(source), sr, max_duration, resample_quality)
        except (av.FFmpegError, AudioDecodeError) as av_exc:
            reason = getattr(av_exc, "strerror", None) or str(av_exc)
            raise AudioDecodeError(
                f"not decodable as audio (libsndfile: {sf_exc.error_string}; ffmpeg: {reason})"
            ) from None
    validate(decoded.y, silence_threshold=silence_threshold)
    return decoded


def _fresh(source: BinaryIO | str) -> BinaryIO | str:
    """The source again from its start, as an in-memory file (FFmpeg's seeks are not all fsspec's)."""
    if isinstance(source, str):
        return source
    source.seek(0)
    return io.BytesIO(source.read())


def validate(y: np.ndarray, *, silence_threshold: float = 1e-4) -> None:
    """Reject waveforms no genre can be read from: empty, non-finite, or silent (incl. pure DC)."""
    if y.size == 0:
        raise EmptyAudioError("the file decodes to zero samples")
    if not np.isfinite(y).all():
        raise InvalidAudioError("the samples contain NaN or infinite values")
    mean = y.mean(dtype=np.float64)
    peak = float(max(y.max() - mean, mean - y.min()))  # no full-size temporaries: y may be an hour long
    if peak < silence_threshold:
        raise SilentAudioError(f"the file is silent (peak deviation {peak:.2e} < {silence_threshold:.0e})")


def mix_down(block: np.ndarray) -> np.ndarray:
    """Mean of the channels of a (frames, channels) block as float32 (frames,), bit for bit
    ``block.mean(axis=1, dtype=np.float32)`` but about 4x faster: numpy reduces a 2-wide inner axis one
    row at a time, while adding whole columns runs at memory speed (the mono mix was ~15% of tagging CPU)."""
    channels = block.shape[1]
    if channels == 0 or channels >= 8 or block.dtype != np.float32:  # numpy sums 8+ values pairwise: keep its order
        return block.mean(axis=1, dtype=np.float32)
    out = block[:, 0].astype(np.float32)  # a copy: never write into the caller's block
    for c in range(1, channels):
        out += block[:, c]
    out /= np.float32(channels)
    return out


class _MonoResampler:
    """Streams (frames, channels) blocks at ``sr_in`` into one mono float32 array at ``sr_out``."""

    def __init__(self, sr_in: int, sr_out: int, quality: str) -> None:
        self.stream = None if sr_in == sr_out else soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality=quality)
        self.chunks: list[np.ndarray] = []

    def add(self, block: np.ndarray, *, last: bool = False) -> None:
        mono = np.ascontiguousarray(mix_down(block) if block.ndim == 2 else block, dtype=np.float32)
        if self.stream is not None:
            mono = self.stream.resample_chunk(mono, last=last)
        if mono.size:
            self.chunks.append(mono)

    def result(self) -> np.ndarray:
        if self.stream is not None:
            self.add(np.zeros((0,), np.float32), last=True)
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


def _load_soundfile(source, sr: int, max_duration: float | None, quality: str) -> Decoded:
    with sf.SoundFile(source) as f:
        native_sr, channels, frames = f.samplerate, f.channels, f.frames
        limit = frames if max_duration is None else min(frames, int(max_duration * native_sr))
        block = max(1, int(BLOCK_SECONDS * native_sr))
        resampler = _MonoResampler(native_sr, sr, quality)
        done = 0
        while done < limit:
            data = f.read(min(block, limit - done), dtype="float32", always_2d=True)
            if len(data) == 0:  # truncated data: the header promised more than the file holds
                break
            resampler.add(data)
            done += len(data)
    y = resampler.result()
    # A file that ends before its header says (a cut MP3 or WAV) reports what it really holds.
    truncated = done < limit
    duration = frames / native_sr if frames > 0 and not truncated else done / native_sr
    return Decoded(y=y, sr=sr, native_sr=native_sr, channels=channels, duration=duration)


def _load_pyav(source, sr: int, max_duration: float | None, quality: str) -> Decoded:
    with av.open(source, mode="r") as container:
        if not container.streams.audio:
            raise AudioDecodeError("the container has no audio stream")
        stream = container.streams.audio[0]
        native_sr = stream.rate or sr
        channels = stream.channels or 1
        to_float = av.AudioResampler(format="fltp", rate=native_sr)  # keeps the channels: we average them
        resampler = _MonoResampler(native_sr, sr, quality)
        limit = None if max_duration is None else int(max_duration * native_sr)
        done = 0
        for frame in container.decode(stream):
            for out in to_float.resample(frame):
                mono = out.to_ndarray().mean(axis=0, dtype=np.float32)
                if limit is not None:
                    mono = mono[: max(0, limit - done)]
                resampler.add(mono)
                done += len(mono)
            if limit is not None and done >= limit:
                break
        duration = float(stream.duration * stream.time_base) if stream.duration else done / native_sr
    return Decoded(y=resampler.result(), sr=sr, native_sr=native_sr, channels=channels, duration=duration)
