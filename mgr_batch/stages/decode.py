"""Batch-in, batch-out stages of the tagging and training graphs: plain Python, no Ray.

A batch is a dict of numpy arrays, one entry per column. Per-song arrays of varying length
(``clip_start_s``, ``features``, ``clip_probs``) are object arrays holding one ndarray per song.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mgr_batch.clips import segmentation
from mgr_batch.clips import windows as clips
from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig, SegmentationConfig
from mgr_batch.errors import AudioError, AudioReadError, ConfigError, error_type
from mgr_batch.evaluation import calibration
from mgr_batch.features import efficientat as fe
from mgr_batch.features import musicnn as fm
from mgr_batch.features import registry as features
from mgr_batch.features import stacked as fs
from mgr_batch.io import audio as audio_io
from mgr_batch.io import storage
from mgr_batch.models import checkpoint
from mgr_batch.models.common import fold_batch_norm
from mgr_batch.plots.segmentation import segmentation_png

#: Columns a listing gives the first stage.
LISTING_COLUMNS = ("path", "song_id", "size", "mtime")
#: Columns :func:`featurize_batch` adds.
FEATURE_COLUMNS = (
    "status",
    "duration_s",
    "analyzed_s",
    "sample_rate",
    "channels",
    "n_clips",
    "clip_start_s",
    "features",
    "used_start_s",
    "used_end_s",
    "decode_notes",
    "error_stage",
    "error_type",
    "error_message",
)


def _objects(items: list[np.ndarray]) -> np.ndarray:
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
) -> dict[str, np.ndarray]:
    """Read, decode, resample, cut and featurize each listed file of the batch.

    Needs ``path`` (other columns pass through). Adds :data:`FEATURE_COLUMNS`; a file that fails gets
    ``status="error"``, zero clips and the stage, type and message of its expected audio error.
    ``features[i]`` has shape (n_clips, n_mels, n_frames); ``clip_start_s[i]`` has shape (n_clips,).
    With ``embedding_input`` it also adds ``embedding_input[i]``, musicnn's input for the same clips
    (n_clips, 96, frames at 16 kHz), for :class:`Embedder`.
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
            sample_rate=decoded.native_sr,
            channels=decoded.channels,
            n_clips=len(starts),
            clip_start_s=starts,
            features=features.featurize(song_clips, sr=audio.sr, cfg=feature_cfg),
            used_start_s=spans[:, 0],
            used_end_s=spans[:, 1],
            **({"embedding_input": fm.musicnn_input(song_clips, sr=audio.sr)} if embedding_input else {}),
        )

    failed = dict(
        duration_s=0.0,
        analyzed_s=0.0,
        sample_rate=0,
        channels=0,
        n_clips=0,
        clip_start_s=np.zeros(0),
        features=np.zeros((0, n_mels, n_frames), np.float32),
        used_start_s=np.zeros(0),
        used_end_s=np.zeros(0),
    )
    if embedding_input:
        failed["embedding_input"] = np.zeros((0, 96, 0), np.float32)
    return _per_song(
        batch,
        audio,
        storage_options,
        ok,
        failed,
        typed={
            "duration_s": np.float64,
            "analyzed_s": np.float64,
            "sample_rate": np.int32,
            "channels": np.int32,
            "n_clips": np.int32,
        },
    )


def _per_song(
    batch: dict[str, np.ndarray],
    audio: AudioConfig,
    storage_options: dict[str, Any] | None,
    ok: Callable[[audio_io.Decoded, int], dict[str, Any]],
    failed: dict[str, Any],
    *,
    typed: dict[str, type],
) -> dict[str, np.ndarray]:
    """Decode each listed file and turn it into one row: ``ok(decoded, row)``, or ``failed`` plus the error.

    Every row gets ``status``, ``decode_notes`` (what the native decoders printed to stderr about the file,
    see :class:`captured_stderr`; also in the message of an error row) and ``error_stage/_type/_message``;
    columns named in ``typed`` become arrays of that dtype, the others per-song object arrays (ragged
    arrays, bytes).
    """
    rows = []
    for i, path in enumerate(batch["path"]):
        try:
            with captured_stderr() as captured:
                decoded = _read_and_decode(str(path), audio, storage_options)
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
    out = dict(batch)
    for c in failed:
        out[c] = np.asarray([r[c] for r in rows], dtype=typed[c]) if c in typed else _objects([r[c] for r in rows])
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


def select_clips(
    y: np.ndarray, *, sr: int, cfg: ClipConfig, training: bool = False, song_id: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a song into clips: all windows, those in its representative segment, or random crops.

    Returns ``(clips (n_clips, clip_samples), starts (n_clips,) s, spans (n_spans, 2) s)``, where
    ``spans`` are the parts of the song the clips were taken from. A representative segment shorter
    than half a clip still yields one clip: the one nearest its middle. ``select="random"`` applies only
    when ``training``: ``cfg.crops`` crops at offsets drawn from a generator seeded by ``song_id``
    (the same crops on every run); otherwise it falls back to fixed windows.
    """
    if cfg.select == "random" and training:
        return random_crops(y, sr=sr, clip_seconds=cfg.clip_seconds, crops=cfg.crops, song_id=song_id)
    song_clips, starts = clips.cut(y, sr=sr, clip_seconds=cfg.clip_seconds, hop_seconds=cfg.hop)
    if cfg.select != "representative":
        return song_clips, starts, np.array([[0.0, len(y) / sr]])
    seg = segmentation.representative(y, sr, cfg.segmentation)
    keep = seg.clip_mask(starts, cfg.clip_seconds)
    if not keep.any():
        middle = 0.5 * (seg.spans[0][0] + seg.spans[0][1])
        keep[np.argmin(np.abs(starts + cfg.clip_seconds / 2 - middle))] = True
    return song_clips[keep], starts[keep], np.array(seg.spans, dtype=np.float64).reshape(-1, 2)


def random_crops(
    y: np.ndarray, *, sr: int, clip_seconds: float, crops: int, song_id: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``crops`` windows of ``clip_seconds`` at random sample offsets (sorted), seeded by ``song_id``.

    Returns ``(clips (crops, clip_samples), starts (crops,) s, spans (1, 2) s)``; a song shorter than
    one clip gives its one zero-padded clip.
    """
    n = int(round(clip_seconds * sr))
    if len(y) <= n:
        song_clips, starts = clips.cut(y, sr=sr, clip_seconds=clip_seconds, hop_seconds=clip_seconds)
        return song_clips, starts, np.array([[0.0, len(y) / sr]])
    seed = int.from_bytes(hashlib.sha1(song_id.encode()).digest()[:8], "little")
    offsets = np.sort(np.random.default_rng(seed).integers(0, len(y) - n + 1, size=crops))
    song_clips = np.stack([y[o : o + n] for o in offsets]).astype(np.float32, copy=False)
    return song_clips, offsets / sr, np.array([[0.0, len(y) / sr]])


def _read_and_decode(path: str, audio: AudioConfig, storage_options: dict[str, Any] | None) -> audio_io.Decoded:
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


def has_timeline(model: Any) -> bool:
    """Whether ``model`` (a model or its class) gives a genre belief per time step (a ``timeline`` method)."""
    return callable(getattr(model, "timeline", None))


def step_times(starts: np.ndarray, *, n_frames: int, step_frames: int, hop_length: int, sr: int) -> np.ndarray:
    """Centres (s, from the start of the song) of the timeline steps of clips starting at ``starts`` (n_clips,).

    Step ``j`` covers feature frames ``[j * step_frames, min((j + 1) * step_frames, n_frames))`` (the last
    may be shorter); frame ``f`` is centred on sample ``f * hop_length``, so a step's centre is the
    middle of its first and last frames. Returns (n_clips, n_steps), ``n_steps = ceil(n_frames / step_frames)``.
    """
    lo = np.arange(0, n_frames, step_frames)
    hi = np.minimum(lo + step_frames, n_frames)
    centres = 0.5 * (lo + hi - 1) * hop_length / sr
    return np.asarray(starts, dtype=np.float64)[:, None] + centres[None, :]


#: Clips per forward pass when none is configured. On CPU, 8 clips of channels-last convolutions ran
#: 2.4x (loaded machine) to 4.8x (idle) faster per clip than 64 in plain layout (benchmarks/results/throughput.md).
CPU_BATCH_SIZE = 8
GPU_BATCH_SIZE = 64


def actor_split(cfg: FeatureConfig, *, sr: int):
    """The feature module (:mod:`mgr_batch.features.musicnn`, :mod:`mgr_batch.features.efficientat` or
    :mod:`mgr_batch.features.stacked`) whose pre-trained network features ``cfg`` at ``sr`` Hz can leave to the
    inference actor (the decode tasks compute the module's ``INPUT_FEATURES``, the actor its ``embed_inputs``;
    a stack's decoded clips), or None when they cannot split."""
    for module in (fm, fe, fs):
        if module.splits_into_actor(cfg, sr=sr):
            return module
    return None


class Predictor:
    """Loads a checkpoint once, then turns each batch's ``features`` into ``clip_probs``.

    ``clip_probs[i]`` has shape (n_clips, n_genres). Clips of all songs in the batch are pooled and run
    through the model ``batch_size`` at a time (default: :data:`CPU_BATCH_SIZE` on CPU, where small
    batches stay in cache, and :data:`GPU_BATCH_SIZE` on a GPU). ``features`` is dropped from the output.
    On CPU, a torch model's 4-D weights are kept channels-last, which oneDNN's convolutions run fastest, and
    its BatchNorms are folded into the convolutions before them (:func:`~mgr_batch.models.common.fold_batch_norm`).
    A model on ``musicnn_embedding`` (``efficientat_embedding``) features also takes musicnn's log-mel
    (n_clips, 96, n_frames) (EfficientAT's, (n_clips, 128, n_frames)), and then runs the pre-trained network
    here first (on this actor's GPU when it has one; see ``InferenceConfig.embed_in_actor`` and :func:`actor_split`).

    With ``timeline`` (models with a ``timeline`` method, e.g. ``crnn``) it also adds, per song,
    ``timeline_probs`` (n_clips, n_steps, n_genres), the per-step probabilities, and ``timeline_s``
    (n_clips, n_steps), the step centres in song seconds (:func:`step_times`; needs ``clip_start_s``).
    """

    def __init__(
        self,
        model_uri: str | None,
        *,
        storage_options: dict[str, Any] | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        timeline: bool = False,
    ) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.spec = checkpoint.load(model_uri, storage_options, device=self.device)
        on_cpu = torch.device(self.device).type == "cpu"
        #: What ``predict_proba`` calls: the model, on CPU with BatchNorms folded into the convolutions before them.
        self.forward = self.model
        if on_cpu and isinstance(self.model, torch.nn.Module):
            self.model = self.model.to(memory_format=torch.channels_last)
            self.forward = fold_batch_norm(self.model).to(memory_format=torch.channels_last)
        self.batch_size = batch_size or (CPU_BATCH_SIZE if on_cpu else GPU_BATCH_SIZE)
        if timeline and not has_timeline(self.model):
            raise ConfigError(
                f"model {self.spec.model_id!r} ({self.spec.model.name}) has no timeline (a belief per time step)"
            )
        self.timeline = timeline

    def predict_timeline(self, x: np.ndarray) -> np.ndarray:
        """Per-step probabilities (n, n_steps, n_genres) of features (n, n_features, n_frames)."""
        n_steps = -(-x.shape[-1] // self.model.step_frames)
        out = np.zeros((len(x), n_steps, len(self.spec.genres)), np.float32)
        with torch.inference_mode():
            for lo in range(0, len(x), self.batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[lo : lo + self.batch_size])).to(self.device)
                out[lo : lo + len(xb)] = self.model.timeline(xb).float().cpu().numpy()
        return out

    def embedded(self, x: np.ndarray) -> np.ndarray:
        """The model's features of ``x``: as they are, or, when the decode tasks sent the pre-trained networks'
        inputs instead (musicnn's log-mel, or a stack's decoded clips (n, 1, samples)), their embeddings."""
        feats, sr = self.spec.features, self.spec.audio.sr
        if x.shape[1:] == self.spec.input_shape:
            return x
        split = actor_split(feats, sr=sr)
        if split is fs:
            return fs.embed_inputs(x, feats, sr=sr)  # decoded clips from the decode tasks
        if split is not None:
            return split.embed_inputs(x, feats)  # a network's log-mel from the decode tasks
        return x

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (n, n_genres) of features (n, n_features, n_steps): the model's ``activation``
        (softmax over genres, or sigmoid per tag) of a torch model's outputs, or a classic model's own."""
        x = self.embedded(x)
        if not isinstance(self.model, torch.nn.Module):  # a fitted scikit-learn pipeline
            return self.model.predict_proba(x)
        activate = torch.sigmoid if self.spec.activation == "sigmoid" else functools.partial(torch.softmax, dim=-1)
        out = np.zeros((len(x), len(self.spec.genres)), np.float32)
        with torch.inference_mode():
            for lo in range(0, len(x), self.batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[lo : lo + self.batch_size])).to(self.device)
                out[lo : lo + len(xb)] = activate(self.forward(xb).float()).cpu().numpy()
        return out

    @property
    def song_level(self) -> bool:
        """Whether songs get their own probabilities (``song_probs``): a song-level head, or a calibrated model."""
        return bool(getattr(self.model, "song_level", False)) or self.spec.temperature is not None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats = list(batch["features"])
        counts = [len(f) for f in feats]
        flat = [f for f in feats if len(f)]
        x = self.embedded(np.concatenate(flat)) if flat else None
        probs = self.predict_proba(x) if flat else np.zeros((0, len(self.spec.genres)), np.float32)
        out = {k: v for k, v in batch.items() if k != "features"}
        song_clip_probs = np.split(probs, np.cumsum(counts)[:-1]) if counts else []
        if self.song_level:
            # A song-level head scores each song from its pooled clips; a calibrated model's probabilities
            # (songs and clips) go through its temperature (mgr_batch.evaluation.calibration).
            song_x = np.split(x, np.cumsum(counts)[:-1]) if flat else [np.zeros((0,))] * len(counts)
            pooled = getattr(self.model, "predict_song_proba", None)
            song_probs = [
                (pooled(sx) if pooled is not None else cp.mean(axis=0)) if len(cp) else cp.sum(axis=0)
                for sx, cp in zip(song_x, song_clip_probs, strict=True)
            ]
            t = self.spec.temperature
            if t is not None:
                song_probs = [
                    calibration.apply_temperature(p, t) if len(c) else p
                    for p, c in zip(song_probs, song_clip_probs, strict=True)
                ]
                song_clip_probs = [calibration.apply_temperature(c, t) if len(c) else c for c in song_clip_probs]
            out["song_probs"] = _objects([np.asarray(p, np.float32) for p in song_probs])
        out["clip_probs"] = _objects(song_clip_probs)
        if self.timeline:
            out.update(self._timelines(feats, counts, batch["clip_start_s"] if feats else []))
        return out

    def _timelines(self, feats: list[np.ndarray], counts: list[int], starts: Any) -> dict[str, np.ndarray]:
        """``timeline_probs`` and ``timeline_s`` of the songs whose features are ``feats`` (see the class)."""
        n_frames = feats[0].shape[-1] if feats else 0
        n_steps = -(-n_frames // self.model.step_frames)
        flat = [f for f in feats if len(f)]
        shape = (0, n_steps, len(self.spec.genres))
        probs = self.predict_timeline(np.concatenate(flat)) if flat else np.zeros(shape, np.float32)
        times = [
            step_times(
                s,
                n_frames=n_frames,
                step_frames=self.model.step_frames,
                hop_length=self.spec.features.hop_length,
                sr=self.spec.audio.sr,
            )
            for s in starts
        ]
        return {
            "timeline_probs": _objects(np.split(probs, np.cumsum(counts)[:-1]) if counts else []),
            "timeline_s": _objects(times),
        }


def song_probabilities(clip_probs: np.ndarray, *, method: str = "mean") -> np.ndarray:
    """Aggregate one song's clip probabilities (n_clips, n_genres) into (n_genres,).

    ``mean``: mean probability; ``vote``: share of clips whose top-1 is each genre;
    ``log``: softmax of the summed log-probabilities (product of clip probabilities).
    """
    if method == "mean":
        return clip_probs.mean(axis=0)
    if method == "vote":
        votes = np.bincount(clip_probs.argmax(axis=1), minlength=clip_probs.shape[1]).astype(np.float64)
        return votes / votes.sum()
    if method == "log":
        s = np.log(np.clip(clip_probs, 1e-12, None)).sum(axis=0)
        e = np.exp(s - s.max())
        return e / e.sum()
    raise ValueError(f"unknown aggregation {method!r} (mean, vote, log)")


def certainty(probs: np.ndarray) -> np.ndarray:
    """log10(p1 / p2) of probability rows (..., n_genres): how far the top genre leads the second."""
    top2 = np.sort(probs, axis=-1)[..., -2:]
    return np.log10(np.clip(top2[..., 1], 1e-12, None) / np.clip(top2[..., 0], 1e-12, None))


def explode_clips(batch: dict[str, np.ndarray], *, genres: tuple[str, ...], split: str) -> dict[str, np.ndarray]:
    """Per-song featurized rows of ``split`` -> one row per clip for training.

    Keeps songs with ``status == "ok"``; returns ``features`` (n, n_mels, n_frames) float32, ``label``
    (n,) int64 (index into ``genres``), ``song_id`` and ``clip_index``.
    """
    index = {g: i for i, g in enumerate(genres)}
    keep = [i for i in range(len(batch["path"])) if batch["status"][i] == "ok" and batch["split"][i] == split]
    feats = [batch["features"][i] for i in keep]
    counts = [len(f) for f in feats]
    if not keep:
        shape = np.asarray(batch["features"][0]).shape[1:] if len(batch["features"]) else (0, 0)
        return {
            "features": np.zeros((0, *shape), np.float32),
            "label": np.zeros(0, np.int64),
            "song_id": np.zeros(0, dtype=str),
            "clip_index": np.zeros(0, np.int32),
        }
    return {
        "features": np.concatenate(feats).astype(np.float32, copy=False),
        "label": np.repeat([index[str(batch["label"][i])] for i in keep], counts).astype(np.int64),
        "song_id": np.repeat([str(batch["song_id"][i]) for i in keep], counts),
        "clip_index": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
    }


#: Columns :func:`segment_batch` adds.
SEGMENT_COLUMNS = (
    "status",
    "duration_s",
    "seg_start_s",
    "seg_end_s",
    "seg_cluster",
    "seg_representative",
    "plot_png",
    "error_stage",
    "error_type",
    "error_message",
)


def segment_batch(
    batch: dict[str, np.ndarray],
    *,
    audio: AudioConfig,
    seg_cfg: SegmentationConfig,
    plot: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Decode each listed file and segment it (:func:`mgr_batch.clips.segmentation.representative`).

    Adds :data:`SEGMENT_COLUMNS`: per song, its segments' starts, ends (s), clusters and whether each is
    representative (ragged, one entry per segment), and with ``plot`` the figure as PNG bytes.
    """

    def ok(decoded: audio_io.Decoded, i: int) -> dict[str, Any]:
        seg = segmentation.representative(decoded.y, audio.sr, seg_cfg)
        spans = np.array(seg.spans).reshape(-1, 2)
        bounds = np.array([(lo, hi) for lo, hi, _ in seg.segments]).reshape(-1, 2)
        inside = [bool(((spans[:, 0] < hi) & (spans[:, 1] > lo)).any()) for lo, hi in bounds]
        return dict(
            duration_s=decoded.duration,
            seg_start_s=bounds[:, 0],
            seg_end_s=bounds[:, 1],
            seg_cluster=np.array([c for _, _, c in seg.segments], np.int32),
            seg_representative=np.array(inside, bool),
            plot_png=segmentation_png(seg, decoded.y, audio.sr) if plot else b"",
        )

    failed = dict(
        duration_s=0.0,
        seg_start_s=np.zeros(0),
        seg_end_s=np.zeros(0),
        seg_cluster=np.zeros(0, np.int32),
        seg_representative=np.zeros(0, bool),
        plot_png=b"",
    )
    return _per_song(batch, audio, storage_options, ok, failed, typed={"duration_s": np.float64})


class Embedder:
    """Loads the pre-trained musicnn once, then turns each batch's ``embedding_input`` into song embeddings.

    Adds, per song, ``embedding`` (dims,) float32, the mean over its clips of the ``layer`` embedding
    (see :mod:`mgr_batch.features.musicnn`), ``embedding_layer`` and ``embedding_model_id`` (the
    embedding space); a song with no clips gets an empty vector. ``embedding_input`` is dropped.
    """

    def __init__(self, *, layer: str | None = None, device: str | None = None) -> None:
        self.layer = layer or fm.DEFAULT_LAYER
        self.model_id = fm.embedding_model_id(fm.DEFAULT_PRETRAINED, self.layer)
        self.net = fm.pretrained_network(fm.DEFAULT_PRETRAINED)
        if device:
            self.net.to(device)
        self._embed = functools.partial(fm.embed_logmel, pretrained=fm.DEFAULT_PRETRAINED, layer=self.layer)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = list(batch["embedding_input"])
        counts = [len(x) for x in inputs]
        flat = [np.asarray(x, np.float32) for x in inputs if len(x)]
        clip_vectors = self._embed(np.concatenate(flat)) if flat else np.zeros((0, 0), np.float32)
        songs = np.split(clip_vectors, np.cumsum(counts)[:-1]) if counts else []
        out = {k: v for k, v in batch.items() if k != "embedding_input"}
        return out | _song_embeddings(songs, layer=self.layer, model_id=self.model_id)


#: Stage objects :func:`call_cached` built in this process, least recently used first.
_CACHED: OrderedDict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = OrderedDict()
#: How many a process keeps (a worker process of a long Ray session may serve several runs).
CACHED_STAGES = 2


def call_cached(
    batch: dict[str, np.ndarray], *, stage: type, kwargs: dict[str, Any] | None = None, freeze_gc: bool = False
) -> dict[str, np.ndarray]:
    """``stage(**kwargs)(batch)``, building the stage object (e.g. a :class:`Predictor`, which loads a model)
    once per process and keeping it for the next batches, as an actor would: plain tasks can then run the
    model where they decode.

    With ``freeze_gc`` (for worker processes that only run such tasks), every object alive once the stage is
    built, the imported modules and the model among them, moves to the cyclic GC's permanent generation
    (``gc.freeze``): full collections stop walking them again and again. The GC had taken 8% of the decode
    workers' CPU time on the throughput benchmark's Ogg catalog, 2% after. Reference counting still frees
    them; only cycles among them would outlive their use.
    """
    kwargs = kwargs or {}
    key = f"{stage.__module__}.{stage.__qualname__}:{json.dumps(kwargs, sort_keys=True, default=repr)}"
    obj = _CACHED.pop(key, None)
    if obj is None:
        obj = stage(**kwargs)
        if freeze_gc:
            gc.freeze()
        while len(_CACHED) >= CACHED_STAGES:
            _CACHED.popitem(last=False)
    _CACHED[key] = obj
    return obj(batch)


def _song_embeddings(clip_vectors: list[np.ndarray], *, layer: str, model_id: str) -> dict[str, np.ndarray]:
    """:class:`Embedder`'s columns from each song's clip embeddings (n_clips, dims): ``embedding`` (their
    mean; empty for a song with no clips), ``embedding_layer`` and ``embedding_model_id``."""
    n = len(clip_vectors)
    return {
        "embedding": _objects([v.mean(axis=0) if len(v) else np.zeros(0, np.float32) for v in clip_vectors]),
        "embedding_layer": np.full(n, layer),
        "embedding_model_id": np.full(n, model_id),
    }


def embeddings_from_features(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:class:`Embedder`'s columns without running the network again, for a genre model whose ``features``
    already are the default embedding of each clip (``musicnn_embedding``, MSD_musicnn, default layer):
    ``features[i]`` (n_clips, dims, 1) -> ``embedding[i]`` (dims,), their mean. ``features`` is kept."""
    songs = [np.asarray(f, np.float32)[:, :, 0] for f in batch["features"]]
    model_id = fm.embedding_model_id(fm.DEFAULT_PRETRAINED, fm.DEFAULT_LAYER)
    return dict(batch) | _song_embeddings(songs, layer=fm.DEFAULT_LAYER, model_id=model_id)
