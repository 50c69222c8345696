"""Decoding through FFmpeg (PyAV): the formats libsndfile lacks, and Ogg first; the tags FFmpeg reads."""

from __future__ import annotations

import io
from typing import BinaryIO

import av
import numpy as np

from mgr_batch.errors import AudioDecodeError
from mgr_batch.io import tags as file_tags
from mgr_batch.io.storage import read_errors
from mgr_batch.io.waveform import BLOCK_SECONDS, Decoded, MonoResampler


def fresh(source: BinaryIO | str) -> BinaryIO | str:
    """The source again from its start for FFmpeg: a path or a local file as it is (streamed, so a long
    file is never held whole), anything else (fsspec's remote files, whose seeks are not all FFmpeg's)
    read into memory."""
    if isinstance(source, str):
        return source
    source.seek(0)
    if isinstance(getattr(source, "f", source), io.BufferedReader):  # what storage.open_input gives for a local path
        return source
    return io.BytesIO(source.read())


def read_tags(source: BinaryIO | str) -> dict[str, str]:
    """The tags FFmpeg reads from the file's header, without decoding it ({} where it cannot open it)."""
    try:
        with av.open(fresh(source), mode="r", metadata_errors="replace") as container:
            return file_tags.pyav_tags(container, container.streams.audio[0] if container.streams.audio else None)
    except (av.FFmpegError, *read_errors()):
        return {}


#: FFmpeg demuxers of raw elementary streams, whose length FFmpeg may only estimate from the bit rate
#: (an MP3 without a Xing header, joined encodes, ADTS AAC): no promise a cut could be measured against.
_ESTIMATED_LENGTH = frozenset({"mp3", "aac", "ac3", "eac3", "amr", "dts", "loas", "mpegts"})


def load(source, sr: int, max_duration: float | None, quality: str) -> Decoded:
    """The first audio stream of ``source`` decoded by FFmpeg to mono float32 at ``sr`` Hz (not validated)."""
    # metadata_errors: a tag that is not UTF-8 must not make a playable file undecodable.
    with av.open(source, mode="r", metadata_errors="replace") as container:
        if not container.streams.audio:
            raise AudioDecodeError("the container has no audio stream")
        stream = container.streams.audio[0]  # a video container's first audio stream; its video is not decoded
        native_sr = stream.rate or sr
        channels = stream.channels or 1
        resampler = MonoResampler(native_sr, sr, quality)
        limit = None if max_duration is None else int(max_duration * native_sr)
        done, errors = 0, []
        frames = _until_error(container.decode(stream), errors)
        for block in pyav_blocks(frames, native_sr, stream.codec_context.layout, limit):
            resampler.add(block)
            done += len(block)
        if errors and not done:
            raise errors[0]
        stopped_early = limit is not None and done >= limit
        said = _header_seconds(container, stream)
        fmt = container.format.name
        tags = file_tags.pyav_tags(container, stream)
    y = resampler.result()
    decoded = done / native_sr
    # Where the header gives the length and the decoding ends well short of it, the file is cut (Opus headers
    # count the encoder's pre-skip, AAC's priming: a few ms either way).
    promised = said is not None and fmt not in _ESTIMATED_LENGTH and said > decoded + max(0.1, 0.01 * said)
    truncated = not stopped_early and (bool(errors) or promised)
    if stopped_early:
        duration = said if said else decoded
    else:
        duration = said if promised else decoded
    return Decoded(
        y=y,
        sr=sr,
        native_sr=native_sr,
        channels=channels,
        duration=duration,
        decoder="ffmpeg",
        native_peak=resampler.native_peak(),
        truncated=truncated,
        format=fmt,
        tags=tags,
    )


def _header_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The audio stream's length as the container says (None where it does not)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _until_error(frames, errors: list[av.FFmpegError]):
    """PyAV's decoded ``frames`` until FFmpeg fails on one (a damaged or cut last packet), whose error goes to
    ``errors``: what was decoded before it is kept."""
    try:
        yield from frames
    except av.FFmpegError as exc:
        errors.append(exc)


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
