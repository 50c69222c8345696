"""Bytes to waveform: decode (soundfile, PyAV for what libsndfile lacks), mono, resample (soxr), validate."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
import soxr

from mgr_batch.errors import (
    AudioDecodeError,
    AudioReadError,
    EmptyAudioError,
    InvalidAudioError,
    SilentAudioError,
)
from mgr_batch.io.storage import read_errors

#: Seconds of native-rate audio decoded at a time: bounds memory to one block plus the output.
BLOCK_SECONDS = 30.0


@dataclass(frozen=True)
class Decoded:
    """A decoded song: mono float32 ``y`` of shape (n,) at ``sr`` Hz.

    ``duration`` is the whole file's length in seconds: as its header says where it says (also when the
    file holds less: see ``truncated``), else as decoded; ``y`` holds at most ``max_duration`` seconds of it.
    ``decoder`` names the library that decoded it: ``"libsndfile"`` or ``"ffmpeg"``; ``format`` the
    container as that library names it (``"WAV"``, ``"MP3"``, ``"ogg"``, ``"matroska,webm"``, ...).

    ``truncated``: the file's audio ends before the file says it does (a download cut short, a damaged frame
    that no decoder reads past), so ``y`` is all that could be decoded; ``duration`` is the header's length
    where there is one (then ``analyzed < duration``). A song cut on purpose at ``max_duration`` is not
    truncated.

    ``tags``: the file's own text tags among :data:`TAG_NAMES` (ID3, Vorbis comments, MP4 and ASF atoms, RIFF
    INFO, Matroska tags), as the decoder that opened it read them; a tag the file lacks or leaves empty is absent.
    """

    y: np.ndarray
    sr: int
    native_sr: int
    channels: int
    duration: float
    decoder: str
    #: Peak deviation from their mean of the decoded samples before resampling (None: not measured; then
    #: :func:`validate` measures ``y``, where a resampler's edge transients can hide a constant DC offset).
    native_peak: float | None = None
    truncated: bool = False
    format: str = ""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def analyzed(self) -> float:
        return len(self.y) / self.sr


#: The file tags :class:`Decoded` keeps, by the names libsndfile and FFmpeg both give them (ID3 TCON, TPE1,
#: TALB, TIT2; Vorbis GENRE, ARTIST, ALBUM, TITLE; MP4 ©gen, ©ART, ©alb, ©nam; ASF WM/Genre, Author,
#: WM/AlbumTitle, Title).
TAG_NAMES = ("genre", "artist", "album", "title")
#: The songs columns that hold them.
FILE_TAG_COLUMNS = tuple(f"file_{name}" for name in TAG_NAMES)

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
                decoded = _load_pyav(_fresh(source), *args)
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


#: An ID3 genre that refers to ID3v1's numbered list ("(17)", "17") rather than naming it ("Rock").
_ID3_GENRE_NUMBER = re.compile(r"\(\d{1,3}\).*|\d{1,3}")
#: A line of libsndfile's log on an ID3 chunk of a WAV or AIFF file, whose tags it does not read.
_ID3_CHUNK = re.compile(r"^\W*id3 *:", re.MULTILINE | re.IGNORECASE)


def _soundfile_tags(f: sf.SoundFile) -> tuple[dict[str, str], bool]:
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


def _merged_tags(tags: dict[str, str], ffmpeg: dict[str, str]) -> dict[str, str]:
    """libsndfile's ``tags`` completed by FFmpeg's, whose genre replaces one given by ID3v1 number."""
    merged = {**ffmpeg, **tags}
    if _ID3_GENRE_NUMBER.fullmatch(tags.get("genre", "")) and ffmpeg.get("genre"):
        merged["genre"] = ffmpeg["genre"]
    return {name: merged[name] for name in TAG_NAMES if name in merged}


def _pyav_tags(container: av.container.InputContainer, stream: av.AudioStream | None) -> dict[str, str]:
    """The :data:`TAG_NAMES` tags FFmpeg read from an open container: the audio stream's own first (Ogg keeps
    its comments there), then the container's; keys in any case (Matroska's are upper case)."""
    tags: dict[str, str] = {}
    for metadata in (stream.metadata if stream is not None else {}, container.metadata):
        for key, value in metadata.items():
            name, value = key.lower(), str(value).strip()
            if name in TAG_NAMES and value and name not in tags:
                tags[name] = value
    return tags


def _ffmpeg_tags(source: BinaryIO | str) -> dict[str, str]:
    """The tags FFmpeg reads from the file's header, without decoding it ({} where it cannot open it)."""
    try:
        with av.open(_fresh(source), mode="r", metadata_errors="replace") as container:
            return _pyav_tags(container, container.streams.audio[0] if container.streams.audio else None)
    except (av.FFmpegError, *read_errors()):
        return {}


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


def _fresh(source: BinaryIO | str) -> BinaryIO | str:
    """The source again from its start for FFmpeg: a path or a local file as it is (streamed, so a long
    file is never held whole), anything else (fsspec's remote files, whose seeks are not all FFmpeg's)
    read into memory."""
    if isinstance(source, str):
        return source
    source.seek(0)
    if isinstance(getattr(source, "f", source), io.BufferedReader):  # what storage.open_input gives for a local path
        return source
    return io.BytesIO(source.read())


def validate(y: np.ndarray, *, silence_threshold: float = 1e-4, native_peak: float | None = None) -> None:
    """Reject waveforms no genre can be read from: empty, non-finite, or silent (incl. pure DC).

    ``native_peak``: the peak deviation of the samples before resampling (see :class:`Decoded`), which
    decides silence when given.
    """
    if y.size == 0:
        raise EmptyAudioError("the file decodes to zero samples")
    if not np.isfinite(y).all():
        raise InvalidAudioError("the samples contain NaN or infinite values")
    peak = native_peak if native_peak is not None else _peak_deviation(y)
    if peak < silence_threshold:
        raise SilentAudioError(f"the file is silent (peak deviation {peak:.2e} < {silence_threshold:.0e})")


def _peak_deviation(y: np.ndarray) -> float:
    """max |y - mean(y)| without full-size temporaries (y may be an hour long)."""
    mean = y.mean(dtype=np.float64)
    return float(max(y.max() - mean, mean - y.min()))


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
        self.stream = (
            None if sr_in == sr_out else soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality=quality)
        )
        self.chunks: list[np.ndarray] = []
        # Sum, least and greatest of the mono samples before resampling, for the silence check.
        self.n, self.total, self.lo, self.hi = 0, 0.0, np.inf, -np.inf

    def add(self, block: np.ndarray, *, last: bool = False) -> None:
        mono = np.ascontiguousarray(mix_down(block) if block.ndim == 2 else block, dtype=np.float32)
        if mono.size:
            self.n += mono.size
            self.total += float(mono.sum(dtype=np.float64))
            self.lo, self.hi = min(self.lo, float(mono.min())), max(self.hi, float(mono.max()))
        if self.stream is not None:
            mono = self.stream.resample_chunk(mono, last=last)
        if mono.size:
            self.chunks.append(mono)

    def result(self) -> np.ndarray:
        if self.stream is not None:
            self.add(np.zeros((0,), np.float32), last=True)
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    def native_peak(self) -> float | None:
        """Peak deviation from their mean of the samples added (before resampling); None for none."""
        if not self.n:
            return None
        mean = self.total / self.n
        return max(self.hi - mean, mean - self.lo)


def _load_soundfile(source, sr: int, max_duration: float | None, quality: str) -> Decoded:
    with sf.SoundFile(source) as f:
        native_sr, channels, frames = f.samplerate, f.channels, f.frames
        # libsndfile counts the frames a cut file holds; its log keeps what the header promised.
        promised = frames + _missing_frames(f)
        limit = frames if max_duration is None else min(frames, int(max_duration * native_sr))
        block = max(1, int(BLOCK_SECONDS * native_sr))
        resampler = _MonoResampler(native_sr, sr, quality)
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
        tags, tags_elsewhere = _soundfile_tags(f)
    if tags_elsewhere:  # only such files are opened a second time, for their header
        tags = _merged_tags(tags, _ffmpeg_tags(source))
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


#: FFmpeg demuxers of raw elementary streams, whose length FFmpeg may only estimate from the bit rate
#: (an MP3 without a Xing header, joined encodes, ADTS AAC): no promise a cut could be measured against.
_ESTIMATED_LENGTH = frozenset({"mp3", "aac", "ac3", "eac3", "amr", "dts", "loas", "mpegts"})


def _load_pyav(source, sr: int, max_duration: float | None, quality: str) -> Decoded:
    # metadata_errors: a tag that is not UTF-8 must not make a playable file undecodable.
    with av.open(source, mode="r", metadata_errors="replace") as container:
        if not container.streams.audio:
            raise AudioDecodeError("the container has no audio stream")
        stream = container.streams.audio[0]  # a video container's first audio stream; its video is not decoded
        native_sr = stream.rate or sr
        channels = stream.channels or 1
        resampler = _MonoResampler(native_sr, sr, quality)
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
        tags = _pyav_tags(container, stream)
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
