"""Inference stages: a checkpoint's predictions per clip (and per time step), and pre-trained embeddings per song."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from mgr_batch.config import FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.features import efficientat as fe
from mgr_batch.features import musicnn as fm
from mgr_batch.features import stacked as fs
from mgr_batch.models import checkpoint
from mgr_batch.models import precision as network_precision
from mgr_batch.models.common import fold_batch_norm
from mgr_batch.models.temperature import apply_temperature
from mgr_batch.stages import vectors as vectors_stage
from mgr_batch.stages.decode import (
    object_array,
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
    here first (on this actor's GPU when it has one; see ``InferenceConfig.embed_in_actor`` and :func:`actor_split`),
    in ``precision`` (:mod:`mgr_batch.models.precision`).

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
        precision: str = "float32",
        vectors: bool = False,
    ) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        network_precision.resolve(precision)  # checked here, resolved where each network runs
        self.precision = precision
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
        #: The stored vector's kind (:func:`mgr_batch.stages.vectors.stored_kind`), when asked to add it.
        self.vector_kind = vectors_stage.stored_kind(self.spec) if vectors else None
        if vectors and self.vector_kind is None:
            raise ConfigError(f"model {self.spec.model_id!r} is not a head on pre-trained embeddings: no stored vector")

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
        with network_precision.networks(self.precision):
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
                    apply_temperature(p, t) if len(c) else p for p, c in zip(song_probs, song_clip_probs, strict=True)
                ]
                song_clip_probs = [apply_temperature(c, t) if len(c) else c for c in song_clip_probs]
            out["song_probs"] = object_array([np.asarray(p, np.float32) for p in song_probs])
        out["clip_probs"] = object_array(song_clip_probs)
        if self.vector_kind is not None:
            out.update(self._vectors(x, counts))
        if self.timeline:
            out.update(self._timelines(feats, counts, batch["clip_start_s"] if feats else []))
        return out

    def _vectors(self, x: np.ndarray | None, counts: list[int]) -> dict[str, np.ndarray]:
        """Each song's stored vector: ``embedding[i]`` (dims,) float32, its clip embeddings pooled as the
        head pools them (see :func:`mgr_batch.stages.vectors.stored_kind`), and its kind's columns (:func:`mgr_batch.stages.vectors.kind_columns`)."""
        kind = self.vector_kind
        songs = np.split(x, np.cumsum(counts)[:-1]) if x is not None else [np.zeros((0, 0))] * len(counts)
        return {
            "embedding": object_array([vectors_stage.pool(s, kind.pooling) for s in songs]),
            **vectors_stage.kind_columns(kind, len(counts)),
        }

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
            "timeline_probs": object_array(np.split(probs, np.cumsum(counts)[:-1]) if counts else []),
            "timeline_s": object_array(times),
        }


class Embedder:
    """Loads the pre-trained musicnn once, then turns each batch's ``embedding_input`` into song vectors, for a
    model not on pre-trained embeddings (``tag --embeddings``).

    Adds, per song, ``embedding`` (200,) float32, the mean over its clips of MSD_musicnn's penultimate layer,
    and ``embedding_kind`` (:func:`mgr_batch.stages.vectors.musicnn_kind` of the model's ``sr`` and
    ``clip_seconds``, as JSON); a song with no clips gets an empty vector. ``embedding_input`` is dropped. The
    network runs in float32 whatever ``inference.precision`` says.
    """

    def __init__(self, *, sr: int, clip_seconds: float, device: str | None = None) -> None:
        from mgr_batch.config import AudioConfig

        self.kind = vectors_stage.musicnn_kind(AudioConfig(sr=sr), clip_seconds)
        self.net = fm.pretrained_network(fm.DEFAULT_PRETRAINED)
        if device:
            self.net.to(device)
        self._embed = functools.partial(fm.embed_logmel, pretrained=fm.DEFAULT_PRETRAINED, layer=fm.DEFAULT_LAYER)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = list(batch["embedding_input"])
        counts = [len(x) for x in inputs]
        flat = [np.asarray(x, np.float32) for x in inputs if len(x)]
        clip_vectors = self._embed(np.concatenate(flat)) if flat else np.zeros((0, 0), np.float32)
        songs = np.split(clip_vectors, np.cumsum(counts)[:-1]) if counts else []
        out = {k: v for k, v in batch.items() if k != "embedding_input"}
        return out | {
            "embedding": object_array([vectors_stage.pool(v, self.kind.pooling) for v in songs]),
            **vectors_stage.kind_columns(self.kind, len(songs)),
        }
