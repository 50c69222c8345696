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
    header does not say); ``y`` holds at most ``max_duration`` seconds of it. ``decoder`` names the
    library that decoded it: ``"libsndfile"`` or ``"ffmpeg"``.
    """

    y: np.ndarray
    sr: int
    native_sr: int
    channels: int
    duration: float
    decoder: str

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

    Ogg files (Vorbis, Opus) go to FFmpeg through PyAV first: decoding, mixing and resampling them took
    0.57x libsndfile's CPU time on the throughput benchmark's Ogg catalog (README, Throughput). Everything
    else goes to libsndfile first (wav, flac, mp3, aiff, ...: faster there), and then to FFmpeg (m4a/aac
    and anything else FFmpeg reads). Raises an ``AudioError`` leaf for files that are not usable audio: undecodable,
    empty, NaN/inf samples, or silent.
    """
    if isinstance(source, str):
        head = _head(source)
    else:
        head = source.read(len(OGG_MAGIC))
        source.seek(0)
        if not head:
            raise AudioDecodeError("the file is empty (0 bytes)")
    args = (sr, max_duration, resample_quality)
    reasons: dict[str, str] = {}
    decoded = None
    for decoder in ("ffmpeg", "libsndfile") if head == OGG_MAGIC else ("libsndfile", "ffmpeg"):
        try:
            if decoder == "libsndfile":
                decoded = _load_soundfile(_rewound(source), *args)
            else:
                decoded = _load_pyav(_fresh(source), *args)
            break
        except sf.LibsndfileError as exc:
            reasons[decoder] = exc.error_string
        except (av.FFmpegError, AudioDecodeError) as exc:
            reasons[decoder] = getattr(exc, "strerror", None) or str(exc)
    if decoded is None:
        raise AudioDecodeError(
            f"not decodable as audio (libsndfile: {reasons['libsndfile']}; ffmpeg: {reasons['ffmpeg']})"
        )
    validate(decoded.y, silence_threshold=silence_threshold)
    return decoded


#: The first bytes of an Ogg container (Vorbis, Opus, FLAC in Ogg).
OGG_MAGIC = b"OggS"


def _head(path: str) -> bytes:
    """The first bytes of the file at ``path`` (none if it cannot be opened: the decoders will say why)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(OGG_MAGIC))
    except OSError:
        return b""


def _rewound(source: BinaryIO | str) -> BinaryIO | str:
    if not isinstance(source, str):
        source.seek(0)
    return source


def _fresh(source: BinaryIO | str) -> BinaryIO | str:
    """The source again from its start for FFmpeg: a path or a local file as it is (streamed, so a long
    file is never held whole), anything else (fsspec's remote files, whose seeks are not all FFmpeg's)
    read into memory."""
    if isinstance(source, str):
        return source
    source.seek(0)
    if isinstance(source, io.BufferedReader):  # what storage.open_input gives for a local path
        return source
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
    return Decoded(y=y, sr=sr, native_sr=native_sr, channels=channels, duration=duration, decoder="libsndfile")


def _load_pyav(source, sr: int, max_duration: float | None, quality: str) -> Decoded:
    # metadata_errors: a tag that is not UTF-8 must not make a playable file undecodable.
    with av.open(source, mode="r", metadata_errors="replace") as container:
        if not container.streams.audio:
            raise AudioDecodeError("the container has no audio stream")
        stream = container.streams.audio[0]
        native_sr = stream.rate or sr
        channels = stream.channels or 1
        resampler = _MonoResampler(native_sr, sr, quality)
        limit = None if max_duration is None else int(max_duration * native_sr)
        done = 0
        for block in pyav_blocks(container.decode(stream), native_sr, stream.codec_context.layout, limit):
            resampler.add(block)
            done += len(block)
        stopped_early = limit is not None and done >= limit
        # The header's length where we stopped early, else what was decoded (Opus headers count the
        # encoder's pre-skip; a cut file holds less than its header says).
        duration = float(stream.duration * stream.time_base) if stopped_early and stream.duration else done / native_sr
    return Decoded(y=resampler.result(), sr=sr, native_sr=native_sr, channels=channels, duration=duration,
                   decoder="ffmpeg")  # fmt: skip


def pyav_blocks(frames, sr: int, layout: av.AudioLayout, limit: int | None):
    """PyAV's decoded ``frames`` as (n, channels) float32 blocks of about :data:`BLOCK_SECONDS`, at most
    ``limit`` samples in all (None: every sample)."""
    planes: list[list[np.ndarray]] = []  # per frame, one (samples,) view per channel
    block, pending, done = max(1, int(BLOCK_SECONDS * sr)), 0, 0
    for out in _float_frames(frames, sr, layout):
        n = out.samples if limit is None else min(out.samples, limit - done)
        # np.frombuffer per plane: 3x cheaper than to_ndarray's vstack, which Ogg's 1-20 ms frames felt.
        planes.append([np.frombuffer(p, np.float32, n) for p in out.planes])
        pending += n
        done += n
        if pending >= block:
            yield _stack_planes(planes)
            planes, pending = [], 0
        if limit is not None and done >= limit:
            break
    if planes:
        yield _stack_planes(planes)


def _float_frames(frames, sr: int, layout: av.AudioLayout):
    """``frames`` as float planes (``fltp``) at ``sr`` Hz in channel ``layout``. Frames already in that form
    pass as they are (Vorbis, Opus, MP3, AAC); from the first one that is not (FLAC, PCM, a chained stream
    that changes), all go through FFmpeg's converter, which is flushed at the end."""
    to_float, channels = None, len(layout.channels)
    for frame in frames:
        if to_float is None and frame.format.name == "fltp" and frame.rate == sr and len(frame.planes) == channels:
            yield frame
            continue
        if to_float is None:
            to_float = av.AudioResampler(format="fltp", layout=layout, rate=sr)
        yield from to_float.resample(frame)
    if to_float is not None:
        yield from to_float.resample(None)


def _stack_planes(planes: list[list[np.ndarray]]) -> np.ndarray:
    """Per-frame channel planes as one (frames, channels) float32 block: a transposed view of
    (channels, frames), so that each channel is contiguous for :func:`mix_down`."""
    out = np.empty((len(planes[0]), sum(len(f[0]) for f in planes)), np.float32)
    for c, row in enumerate(out):
        np.concatenate([f[c] for f in planes], out=row)
    return out.T
