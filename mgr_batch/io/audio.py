"""Bytes to waveform: decode with libsndfile, or FFmpeg (:mod:`mgr_batch.io.ffmpeg`) where it reads the file
further; mono, resampled and checked (:mod:`mgr_batch.io.waveform`)."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from typing import BinaryIO

import av
import soundfile as sf

from mgr_batch.errors import AudioDecodeError, AudioReadError
from mgr_batch.io import ffmpeg
from mgr_batch.io import tags as file_tags
from mgr_batch.io.storage import read_errors
from mgr_batch.io.waveform import BLOCK_SECONDS, Decoded, MonoResampler, validate

#: Seconds a file may hold less than its header says without counting as cut (encoder padding, rounding).
CUT_SLACK_S = 0.05
#: A later decoder's song replaces an earlier one's only when it holds this many seconds more.
READ_ON_MARGIN_S = 0.25
#: Bytes an MPEG file may hold past what libsndfile read (tags, a partial last frame) before FFmpeg is asked
#: to read it too: libsndfile's mpg123 stops at the frame count of the first frame's Xing header, or at its
#: estimate from the first frame's bit rate, so two encodes joined (a rate change) lose their second half.
MPEG_UNREAD_BYTES = 4096


def load(
    source: BinaryIO | str,
    *,
    sr: int = 22050,
    max_duration: float | None = None,
    silence_threshold: float = 1e-4,
    resample_quality: str = "HQ",
) -> Decoded:
    """Decode a file (path or seekable binary file object) to mono float32 at ``sr`` Hz.

    The content decides, never the name. Ogg files (Vorbis, Opus) go to FFmpeg through PyAV first: decoding,
    mixing and resampling them took 0.57x libsndfile's CPU time on the throughput benchmark's Ogg catalog
    (README, Throughput). Everything else goes to libsndfile first (wav, flac, mp3, aiff, ...: faster there),
    and then to FFmpeg (mp4/m4a, wma, wavpack, matroska/webm, caf, ac3, amr, ... and the audio stream of a
    video container). When the first decoder stops before the file's end (a cut file, a damaged frame, an
    MP3 whose sample rate changes half way), the other one reads it too and the longer song is kept; one that
    no decoder reads to its end comes back ``truncated``. Raises an ``AudioError`` leaf for files that are
    not usable audio: undecodable, empty, NaN/inf samples, or silent.
    """
    if isinstance(source, str):
        try:
            f = open(source, "rb")  # read as a file object, as storage gives them (closed below)
        except OSError:
            pass  # the decoders say why
        else:
            with f:
                return load(
                    f,
                    sr=sr,
                    max_duration=max_duration,
                    silence_threshold=silence_threshold,
                    resample_quality=resample_quality,
                )
    reads = None
    if isinstance(source, str):
        head = _head(source)
    else:
        source = reads = _Reads(source)
        try:
            head = source.read(len(OGG_MAGIC))
            source.seek(0)
        except read_errors() as exc:
            raise reads.failure(exc) from exc
        if not head:
            raise AudioDecodeError("the file is empty (0 bytes)")
    args = (sr, max_duration, resample_quality)
    reasons: dict[str, str] = {}
    found: list[Decoded] = []
    for decoder in ("ffmpeg", "libsndfile") if head == OGG_MAGIC else ("libsndfile", "ffmpeg"):
        decoded = None
        try:
            if decoder == "libsndfile":
                decoded = _load_soundfile(_rewound(source), *args)
            else:
                decoded = ffmpeg.load(ffmpeg.fresh(source), *args)
                if decoded.format == "ogg" and not decoded.truncated and not _ogg_ends(_rewound(source)):
                    decoded = dataclasses.replace(decoded, truncated=True)  # no end-of-stream page: cut short
        except sf.LibsndfileError as exc:
            reasons[decoder] = exc.error_string
        except (av.FFmpegError, AudioDecodeError) as exc:
            reasons[decoder] = getattr(exc, "strerror", None) or str(exc)
        except read_errors():
            if reads is None or reads.error is None:
                raise
        # A read that failed is never data nor a verdict on the file: the decoder saw an early end of file
        # (libsndfile's callbacks run under cffi, which swallows the exception) or gave up on the bytes it had.
        if reads is not None and reads.error is not None:
            raise reads.failure(reads.error) from reads.error
        if decoded is not None:
            found.append(decoded)
            if not (decoded.truncated or (decoded.format == "MP3" and _unread(source) > MPEG_UNREAD_BYTES)):
                break
    if not found:
        raise AudioDecodeError(
            f"not decodable as audio (libsndfile: {reasons['libsndfile']}; ffmpeg: {reasons['ffmpeg']})"
        )
    decoded = _longest(found)
    validate(decoded.y, silence_threshold=silence_threshold, native_peak=decoded.native_peak)
    return decoded


def _longest(found: list[Decoded]) -> Decoded:
    """The first decoder's song unless a later one decoded :data:`READ_ON_MARGIN_S` more; a truncated song
    keeps the longest length any decoder's header gave."""
    best = found[0]
    for other in found[1:]:
        if other.analyzed > best.analyzed + READ_ON_MARGIN_S:
            best = other
    if best.truncated:
        best = dataclasses.replace(best, duration=max(d.duration for d in found))
    return best


def _unread(source: BinaryIO | str) -> int:
    """Bytes of the file the decoders have not read (0 where that is not known: a path, a size not told)."""
    if not isinstance(source, _Reads):
        return 0
    size = _size(source.f)
    return 0 if size is None else max(0, size - source.n_read)


def _size(f: BinaryIO) -> int | None:
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    size = getattr(f, "size", None)  # fsspec's files
    if isinstance(size, int):
        return size
    buffer = getattr(f, "getbuffer", None)  # BytesIO
    return buffer().nbytes if buffer is not None else None


#: Bytes from the end of an Ogg file that hold its last page (a page is at most 65,307 bytes).
OGG_TAIL_BYTES = 65_536


def _ogg_ends(source: BinaryIO | str) -> bool:
    """Whether the last page of an Ogg file is an end-of-stream page (flag 0x04), as a whole file's is; a
    file cut short (a download, a stream recording stopped) ends on a page without it. True when the tail
    cannot be read (the decoders have had the bytes: it is no verdict on the file)."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                tail = _tail(f)
        else:
            tail = _tail(source)
    except (OSError, *read_errors()):
        return True
    at = tail.rfind(OGG_MAGIC)
    return at < 0 or at + 5 >= len(tail) or bool(tail[at + 5] & 0x04)


def _tail(f: BinaryIO) -> bytes:
    end = f.seek(0, io.SEEK_END)
    f.seek(max(0, end - OGG_TAIL_BYTES))
    return f.read(OGG_TAIL_BYTES)


class _Reads:
    """A binary file object that keeps the first error its reads or seeks raised, and counts the bytes read.

    Decoders call it from C: libsndfile's virtual IO runs under cffi, which swallows an exception and returns
    0 (end of file), and FFmpeg may report its own error instead; the kept error tells what really happened.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.error: BaseException | None = None
        self.n_read = 0

    def _kept(self, call, *args):
        try:
            return call(*args)
        except read_errors() as exc:
            if self.error is None:
                self.error = exc
            raise

    def read(self, size: int = -1) -> bytes:
        data = self._kept(self.f.read, size)
        self.n_read += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self._kept(self.f.readinto, buffer) or 0
        self.n_read += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._kept(self.f.seek, offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def failure(self, exc: BaseException) -> AudioReadError:
        return AudioReadError(f"reading failed after {self.n_read} bytes: {type(exc).__name__}: {exc}")

    def __getattr__(self, name: str):
        return getattr(self.f, name)


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


def _load_soundfile(source, sr: int, max_duration: float | None, quality: str) -> Decoded:
    with sf.SoundFile(source) as f:
        native_sr, channels, frames = f.samplerate, f.channels, f.frames
        # libsndfile counts the frames a cut file holds; its log keeps what the header promised.
        promised = frames + _missing_frames(f)
        limit = frames if max_duration is None else min(frames, int(max_duration * native_sr))
        block = max(1, int(BLOCK_SECONDS * native_sr))
        resampler = MonoResampler(native_sr, sr, quality)
        done, damaged = 0, False
        while done < limit:
            try:
                data = f.read(min(block, limit - done), dtype="float32", always_2d=True)
            except sf.LibsndfileError:
                if not done:
                    raise
                damaged = True  # a frame it cannot decode (FLAC "lost sync"): what came before is kept
                break
            if len(data) == 0:  # the data ends before the header's frame count (a cut MP3 or FLAC)
                break
            resampler.add(data)
            done += len(data)
        fmt = f.format
        tags, tags_elsewhere = file_tags.soundfile_tags(f)
    if tags_elsewhere:  # only such files are opened a second time, for their header
        tags = file_tags.merged_tags(tags, ffmpeg.read_tags(source))
    y = resampler.result()
    # mpg123's frame count may differ from the samples it gives by a frame's padding: no sign of a cut.
    slack = CUT_SLACK_S * native_sr
    truncated = damaged or limit - done > slack or promised - frames > slack
    duration = (promised if truncated else frames) / native_sr if frames > 0 else done / native_sr
    return Decoded(
        y=y,
        sr=sr,
        native_sr=native_sr,
        channels=channels,
        duration=duration,
        decoder="libsndfile",
        native_peak=resampler.native_peak(),
        truncated=truncated,
        format=fmt,
        tags=tags,
    )


#: Bytes per sample of libsndfile's uncompressed subtypes, to turn a chunk's missing bytes into frames.
_SAMPLE_BYTES = {
    "PCM_S8": 1,
    "PCM_U8": 1,
    "ULAW": 1,
    "ALAW": 1,
    "PCM_16": 2,
    "PCM_24": 3,
    "PCM_32": 4,
    "FLOAT": 4,
    "DOUBLE": 8,
}
#: A line of libsndfile's log on a chunk whose size says more than the file holds, e.g. ``data : 352800
#: (should be 198450)`` (WAV), ``SSND : ...`` (AIFF), ``Data Size : ...`` (AU).
_SHORT_CHUNK = re.compile(r"^\s*\w[\w ]*?\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
#: Sizes a writer that did not know the length leaves in a header (0xFFFFFFFF; sox's 0x7FFFF000): no promise.
_UNKNOWN_SIZE = 0x7FFFF000


def _missing_frames(f: sf.SoundFile) -> int:
    """Frames the header of an uncompressed file promises beyond those the file holds (0 for a whole file)."""
    width = _SAMPLE_BYTES.get(f.subtype)
    if width is None or f.channels < 1:
        return 0
    short = [int(said) - int(held) for said, held in _SHORT_CHUNK.findall(f.extra_info) if int(said) < _UNKNOWN_SIZE]
    return max(0, *short) // (width * f.channels) if short else 0
