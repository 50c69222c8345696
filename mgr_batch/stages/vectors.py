"""Stored song vectors: what kind of vector a head reads, and heads applied to stored vectors (no Ray, no audio).

A model on pre-trained embeddings (``musicnn_embedding``, ``efficientat_embedding``, ``stacked_embedding``
features with a classic head) reads, per song, one vector: its clip embeddings pooled (``mean``, or ``mean_std``:
mean and standard deviation side by side). ``tag`` stores that vector in the ``embeddings`` table with its
:class:`VectorKind`'s ``feature_id``, so that a head is only ever applied to vectors of its own kind (same
networks and layers, weights, pooling, clip length and decode rate).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig, from_dict, to_dict
from mgr_batch.errors import ConfigError

#: Feature kinds whose per-clip vectors are pre-trained networks' embeddings.
EMBEDDING_KINDS = ("musicnn_embedding", "efficientat_embedding", "stacked_embedding")
#: The pooling a clip-level head's songs are stored with (the one ``train --labels`` heads read).
DEFAULT_POOLING = "mean_std"


@functools.cache
def _weights_digest(network: str) -> str:
    """12 hex digits of a pre-trained network's weights file."""
    if network == "efficientat":
        from mgr_batch.models.efficientat import DEFAULT_PRETRAINED, pretrained_path

        path = pretrained_path(DEFAULT_PRETRAINED)
    else:
        from mgr_batch.models.musicnn import pretrained_path

        path = pretrained_path(network)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def embedding_parts(features: FeatureConfig) -> tuple[str, ...] | None:
    """The ``network:layer`` parts of a clip-embedding feature config (None for other kinds)."""
    if features.kind == "stacked_embedding":
        from mgr_batch.features import stacked

        return tuple(f"{n}:{layer}" for n, layer in stacked.parts(features))
    if features.kind == "musicnn_embedding":
        from mgr_batch.features import musicnn

        return ("{}:{}".format(*musicnn.embedding_settings(features)),)
    if features.kind == "efficientat_embedding":
        from mgr_batch.features import efficientat

        return (f"efficientat:{efficientat.embedding_layer(features)}",)
    return None


@dataclass(frozen=True)
class VectorKind:
    """What one stored song vector is: clip embeddings of ``features`` (at ``audio.sr`` Hz, clips of
    ``clips.clip_seconds``) pooled by ``pooling`` over the song's clips."""

    audio: AudioConfig
    clips: ClipConfig
    features: FeatureConfig
    pooling: str

    @property
    def parts(self) -> tuple[str, ...]:
        parts = embedding_parts(self.features)
        if parts is None:
            raise ConfigError(f"{self.features.kind!r} features are not pre-trained embeddings")
        return parts

    @property
    def feature_id(self) -> str:
        """12 hex digits of the parts (with their weights' digests), pooling, clip length and decode rate."""
        key = {
            "parts": [f"{p}@{_weights_digest(p.split(':')[0])}" for p in self.parts],
            "pooling": self.pooling,
            "clip_seconds": float(self.clips.clip_seconds),
            "sr": int(self.audio.sr),
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def description(self) -> str:
        """e.g. ``MSD_musicnn:penultimate+efficientat:embedding mean_std of 3 s clips at 32000 Hz``."""
        return f"{'+'.join(self.parts)} {self.pooling} of {self.clips.clip_seconds:g} s clips at {self.audio.sr} Hz"

    def to_json(self) -> str:
        """The kind as one JSON string (what the embeddings parts' metadata keep, to rebuild a head's spec)."""
        return json.dumps(
            {
                "audio": to_dict(self.audio),
                "clips": to_dict(self.clips),
                "features": to_dict(self.features),
                "pooling": self.pooling,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> VectorKind:
        data = json.loads(text)
        return cls(
            audio=from_dict(AudioConfig, data["audio"]),
            clips=from_dict(ClipConfig, data["clips"]),
            features=from_dict(FeatureConfig, data["features"]),
            pooling=str(data["pooling"]),
        )


def stored_kind(spec: Any) -> VectorKind | None:
    """The vector ``tag`` stores for a model of ``spec`` (a :class:`~mgr_batch.models.checkpoint.ModelSpec`):
    a classic head on pre-trained embeddings stores its pooled row (``mean_std`` for a clip-level head);
    None for any other model."""
    if spec.features.kind not in EMBEDDING_KINDS or spec.family != "classic":
        return None
    pooling = spec.model.params.get("pooling", "clip")
    return VectorKind(
        audio=spec.audio,
        clips=ClipConfig(clip_seconds=spec.clips.clip_seconds, hop_seconds=spec.clips.hop_seconds),
        features=spec.features,
        pooling=DEFAULT_POOLING if pooling == "clip" else pooling,
    )


def head_kind(spec: Any) -> VectorKind | None:
    """The kind of vector a model's head reads whole (a song-level classic head on embeddings), else None."""
    kind = stored_kind(spec)
    return kind if kind is not None and spec.model.params.get("pooling", "clip") == kind.pooling else None


def musicnn_kind(audio: AudioConfig, clip_seconds: float) -> VectorKind:
    """The ``tag --embeddings`` vector of a model not on pre-trained embeddings: MSD_musicnn's penultimate
    layer of the model's own clips (``audio.sr`` Hz), the mean over the song's clips."""
    from mgr_batch.features import musicnn

    features = FeatureConfig(
        kind="musicnn_embedding", params={"pretrained": musicnn.DEFAULT_PRETRAINED, "layer": musicnn.DEFAULT_LAYER}
    )
    return VectorKind(audio=audio, clips=ClipConfig(clip_seconds=clip_seconds), features=features, pooling="mean")


def kind_columns(kind: VectorKind, n: int) -> dict[str, np.ndarray]:
    """The batch columns that name ``n`` songs' stored vectors of ``kind`` for the writer: ``embedding_kind``
    (JSON), ``embedding_feature_id`` and ``embedding_feature`` (its description)."""
    return {
        "embedding_kind": np.full(n, kind.to_json()),
        "embedding_feature_id": np.full(n, kind.feature_id),
        "embedding_feature": np.full(n, kind.description),
    }


def pool(clip_vectors: np.ndarray, pooling: str) -> np.ndarray:
    """One song's clip vectors (n_clips, d) -> its stored vector (d or 2d,) float32 (``mean`` or ``mean_std``,
    computed in float64 as the heads pool); empty for a song with no clips."""
    if not len(clip_vectors):
        return np.zeros(0, np.float32)
    x = np.asarray(clip_vectors, np.float64).reshape(len(clip_vectors), -1)
    mean = x.mean(axis=0)
    return (mean if pooling == "mean" else np.concatenate([mean, x.std(axis=0)])).astype(np.float32)


def song_predictions(probs: np.ndarray, *, genres: tuple[str, ...], uncertain_below: float | None) -> dict[str, Any]:
    """The songs table's prediction columns of song probabilities (n, n_genres): ``genre``, ``confidence``,
    ``certainty``, ``uncertain`` (null without a threshold), ``top3`` and each ``p_<genre>``."""
    from mgr_batch.io.aggregate import certainty
    from mgr_batch.io.schemas import probability_columns

    probs = np.asarray(probs, np.float32).reshape(-1, len(genres))
    g = np.asarray(genres)
    order = np.argsort(-probs, axis=1, kind="stable")
    c = certainty(probs) if len(probs) else np.zeros(0, np.float32)
    out: dict[str, Any] = {
        "genre": g[order[:, 0]] if len(probs) else np.zeros(0, str),
        "confidence": probs[np.arange(len(probs)), order[:, 0]] if len(probs) else np.zeros(0, np.float32),
        "certainty": c,
        "uncertain": [None] * len(probs) if uncertain_below is None else (c < uncertain_below).tolist(),
        "top3": [list(g[o[:3]]) for o in order],
    }
    for j, column in enumerate(probability_columns(tuple(genres))):
        out[column] = probs[:, j]
    return out


class VectorHead:
    """A classic head of a checkpoint applied to stored song vectors (n, dims) -> song probabilities (n, n_genres),
    calibrated by the checkpoint's temperature as ``tag`` calibrates songs."""

    def __init__(self, model_uri: str | None, *, storage_options: dict[str, Any] | None = None) -> None:
        from mgr_batch.models import checkpoint

        self.model, self.spec = checkpoint.load(model_uri, storage_options)
        self.kind = head_kind(self.spec)
        if self.kind is None:
            raise ConfigError(f"model {self.spec.model_id} does not read one stored vector per song")

    def song_proba(self, vectors: np.ndarray) -> np.ndarray:
        from mgr_batch.models.temperature import apply_temperature

        probs = self.model.predict_rows(np.asarray(vectors, np.float64))
        t = self.spec.temperature
        return probs if t is None else apply_temperature(probs, t)


def vectors_of(column: Any) -> np.ndarray:
    """A ``vector`` column (Arrow list array, any float type) as one (n, dims) float64 array; every row must
    have the same length."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0))
    offsets = np.asarray(arr.offsets)
    dims = np.diff(offsets)
    if (dims != dims[0]).any():
        raise ConfigError(f"stored vectors of different lengths ({sorted(set(dims.tolist()))[:5]})")
    flat = np.asarray(arr.values.to_numpy(zero_copy_only=False))[offsets[0] : offsets[-1]]
    return flat.astype(np.float64).reshape(n, int(dims[0]))


class RetagStage:
    """:class:`VectorHead` over an Arrow batch of stored vectors (``song_id``, ``vector``) -> the songs
    table's prediction columns (:func:`song_predictions`) with ``song_id`` and ``model_id``."""

    def __init__(self, *, model_uri: str | None, storage_options: dict[str, Any] | None = None) -> None:
        self.head = VectorHead(model_uri, storage_options=storage_options)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        spec = self.head.spec
        probs = self.head.song_proba(vectors_of(batch.column("vector")))
        cols = {"song_id": batch.column("song_id")}
        cols |= song_predictions(probs, genres=spec.genres, uncertain_below=spec.uncertain_below)
        cols["model_id"] = [spec.model_id] * len(probs)
        return pa.table({k: v if isinstance(v, pa.ChunkedArray) else pa.array(v) for k, v in cols.items()})
