"""Batch-in, batch-out stages of the tagging and training graphs: plain Python, no Ray.

A batch is a dict of numpy arrays, one entry per column. Per-song arrays of varying length
(``clip_start_s``, ``features``, ``clip_probs``) are object arrays holding one ndarray per song.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from mgr_batch.clips.crops import select_clips
from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig
from mgr_batch.errors import AudioError, AudioReadError, error_type
from mgr_batch.features import musicnn as fm
from mgr_batch.features import registry as features
from mgr_batch.io import audio as audio_io
from mgr_batch.io import storage
from mgr_batch.io.tags import FILE_TAG_COLUMNS, TAG_NAMES
from mgr_batch.models import precision as network_precision

#: Columns a listing gives the first stage.
LISTING_COLUMNS = storage.LISTING_COLUMNS
#: Columns :func:`featurize_batch` adds.
FEATURE_COLUMNS = (
    "status",
    "duration_s",
    "analyzed_s",
    "truncated",
    "sample_rate",
    "channels",
    "n_clips",
    "clip_start_s",
    "features",
    "used_start_s",
    "used_end_s",
    "decode_notes",
    *FILE_TAG_COLUMNS,
    "error_stage",
    "error_type",
    "error_message",
)


def object_array(items: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):  # assign one by one so equal shapes don't fuse into one array
        out[i] = item
    return out


def featurize_batch(
    batch: dict[str, np.ndarray],
    *,
    audio: AudioConfig,
    clip_cfg: ClipConfig,
    feature_cfg: FeatureConfig,
    storage_options: dict[str, Any] | None = None,
    embedding_input: bool = False,
    precision: str = "float32",
    on_song: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Read, decode, resample, cut and featurize each listed file of the batch (``on_song(row)`` after each:
    a progress report; see :func:`per_song`).

    Needs ``path`` (other columns pass through). Adds :data:`FEATURE_COLUMNS`; a file that fails gets
    ``status="error"``, zero clips and the stage, type and message of its expected audio error.
    ``features[i]`` has shape (n_clips, n_mels, n_frames); ``clip_start_s[i]`` has shape (n_clips,).
    ``file_genre``, ``file_artist``, ``file_album`` and ``file_title`` are the file's own tags ("" when absent).
    With ``embedding_input`` it also adds ``embedding_input[i]``, musicnn's input for the same clips
    (n_clips, 96, frames at 16 kHz), for :class:`Embedder`. Pre-trained networks among the features run in
    ``precision`` (:mod:`mgr_batch.models.precision`).
    """
    n_mels, n_frames = features.feature_shape(sr=audio.sr, clip_seconds=clip_cfg.clip_seconds, cfg=feature_cfg)

    def ok(decoded: audio_io.Decoded, i: int) -> dict[str, Any]:
        # Random crops are a training augmentation: songs being tagged or scored get fixed windows.
        training = "split" in batch and str(batch["split"][i]) == "train"
        song_clips, starts, spans = select_clips(
            decoded.y,
            sr=audio.sr,
            cfg=clip_cfg,
            training=training,
            song_id=str(batch["song_id"][i]) if "song_id" in batch else "",
        )
        return dict(
            duration_s=decoded.duration,
            analyzed_s=decoded.analyzed,
            truncated=decoded.truncated,
            sample_rate=decoded.native_sr,
            channels=decoded.channels,
            n_clips=len(starts),
            clip_start_s=starts,
            features=features.featurize(song_clips, sr=audio.sr, cfg=feature_cfg),
            used_start_s=spans[:, 0],
            used_end_s=spans[:, 1],
            **file_tags(decoded),
            **({"embedding_input": fm.musicnn_input(song_clips, sr=audio.sr)} if embedding_input else {}),
        )

    failed = dict(
        duration_s=0.0,
        analyzed_s=0.0,
        truncated=False,
        sample_rate=0,
        channels=0,
        n_clips=0,
        clip_start_s=np.zeros(0),
        features=np.zeros((0, n_mels, n_frames), np.float32),
        used_start_s=np.zeros(0),
        used_end_s=np.zeros(0),
        **dict.fromkeys(FILE_TAG_COLUMNS, ""),
    )
    if embedding_input:
        failed["embedding_input"] = np.zeros((0, 96, 0), np.float32)
    with network_precision.networks(precision):
        return per_song(
            batch,
            audio,
            storage_options,
            ok,
            failed,
            typed={
                "duration_s": np.float64,
                "analyzed_s": np.float64,
                "truncated": np.bool_,
                "sample_rate": np.int32,
                "channels": np.int32,
                "n_clips": np.int32,
                **dict.fromkeys(FILE_TAG_COLUMNS, np.str_),
            },
            on_song=on_song,
        )


def file_tags(decoded: audio_io.Decoded) -> dict[str, str]:
    """The songs columns of the file's own tags (:data:`mgr_batch.io.tags.FILE_TAG_COLUMNS`), "" when absent."""
    return {f"file_{name}": decoded.tags.get(name, "") for name in TAG_NAMES}


def per_song(
    batch: dict[str, np.ndarray],
    audio: AudioConfig,
    storage_options: dict[str, Any] | None,
    ok: Callable[[audio_io.Decoded, int], dict[str, Any]],
    failed: dict[str, Any],
    *,
    typed: dict[str, type],
    on_song: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Decode each listed file and turn it into one row: ``ok(decoded, row)``, or ``failed`` plus the error;
    ``on_song(row)`` is called with each row as it is made (it reads ``status`` and ``analyzed_s``).

    Every row gets ``status``, ``decode_notes`` (what the native decoders printed to stderr about the file,
    see :class:`captured_stderr`; also in the message of an error row) and ``error_stage/_type/_message``;
    columns named in ``typed`` become arrays of that dtype, the others per-song object arrays (ragged
    arrays, bytes).
    """
    rows = []
    exact = batch.get("path_bytes")
    for i, path in enumerate(batch["path"]):
        try:
            with captured_stderr() as captured:
                decoded = read_and_decode(
                    storage.openable(str(path), exact[i] if exact is not None else None), audio, storage_options
                )
        except AudioError as exc:
            notes = captured.text
            message = f"{exc} (decoder notes: {notes})" if notes else str(exc)
            rows.append(
                {
                    **failed,
                    "status": "error",
                    "error_stage": exc.stage,
                    "error_type": error_type(exc),
                    "error_message": message,
                    "decode_notes": notes,
                }
            )
        else:
            notes = captured.text
            rows.append(
                {
                    **ok(decoded, i),
                    "status": "ok",
                    "error_stage": "",
                    "error_type": "",
                    "error_message": "",
                    "decode_notes": notes,
                }
            )
        if notes:  # still in the worker's log (on the screen with `-v`), now with the file they are about
            print(f"decoder notes on {path}: {notes}", file=sys.stderr, flush=True)
        if on_song is not None:
            on_song(rows[-1])
    out = dict(batch)
    for c in failed:
        out[c] = np.asarray([r[c] for r in rows], dtype=typed[c]) if c in typed else object_array([r[c] for r in rows])
    for c in ("status", "decode_notes", "error_stage", "error_type", "error_message"):
        out[c] = np.array([r[c] for r in rows], dtype=str) if rows else np.zeros(0, dtype=str)
    return out


class captured_stderr:  # noqa: N801  (used as a context manager, like contextlib's)
    """What C code (libsndfile's mpg123, FFmpeg) writes to this process's stderr (fd 2) inside the block,
    as ``.text`` (stripped, notes on separate lines joined by "; ") once the block ends.

    The file descriptor itself is redirected into a temporary file (``os.dup2``), so notes printed by
    native decoders land there instead of on the worker's stderr, and stay with the file they are about.
    """

    text = ""

    def __enter__(self) -> captured_stderr:
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        with self._tmp:
            self._tmp.seek(0)
            raw = self._tmp.read(MAX_NOTES_BYTES + 1).decode(errors="replace")
        lines = [line.strip() for line in raw.splitlines() if line.strip()]
        self.text = "; ".join(lines)
        if len(raw) > MAX_NOTES_BYTES:
            self.text += " ... (more notes cut)"


#: Decoder notes kept per file: a badly damaged file can make the decoder print a note per frame.
MAX_NOTES_BYTES = 4000


def read_and_decode(path: str, audio: AudioConfig, storage_options: dict[str, Any] | None) -> audio_io.Decoded:
    try:
        f = storage.open_input(path, storage_options)
    except storage.read_errors() as exc:  # missing, permission denied, a directory, a symlink loop, network
        raise AudioReadError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    with f:
        return audio_io.load(
            f,
            sr=audio.sr,
            max_duration=audio.max_duration,
            silence_threshold=audio.silence_threshold,
            resample_quality=audio.resample_quality,
        )
