"""The feature kinds: each turns clips (n_clips, clip_samples) into (n_clips, n_features, n_steps) float32.

Frequency bins or feature dimensions come first, time steps second, so every model sees one layout.
:data:`FEATURES` holds the kinds loaded so far; the classic vectors and the pre-trained networks' kinds
load their modules on first use (:data:`PRETRAINED`), so this module imports none of them.
:mod:`mgr_batch.features.presets` holds the named settings (sample rate, clips and features together).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mgr_batch.config import FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.features.spectral import log_mel, mfcc, n_frames, stft_spectrogram

#: Clips featurized at a time by :func:`featurize` (bounds the memory of a kind's intermediates).
CHUNK_CLIPS = 64


# --- the registry of feature kinds ------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureKind:
    """A feature kind: ``compute(clips, sr=, cfg=)`` (n_clips, clip_samples) -> (n_clips, *shape(...)),
    and ``shape(clip_samples, sr=, cfg=)`` -> (n_features, n_steps)."""

    name: str
    compute: Callable[..., np.ndarray]
    shape: Callable[..., tuple[int, int]]
    description: str
    #: Clips per call of ``compute`` (bounds the intermediates' memory).
    chunk: int = CHUNK_CLIPS


FEATURES: dict[str, FeatureKind] = {}


def register_feature(name: str, *, shape: Callable[..., tuple[int, int]], description: str, chunk: int = CHUNK_CLIPS):
    """Decorator adding ``compute`` to :data:`FEATURES` under ``name``."""

    def deco(compute: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        FEATURES[name] = FeatureKind(name, compute, shape, description, chunk)
        return compute

    return deco


def _spectral_steps(n: int, sr: int, cfg: FeatureConfig) -> int:
    return n_frames(n, hop_length=cfg.hop_length)


@register_feature(
    "logmel",
    shape=lambda n, *, sr, cfg: (cfg.n_mels, _spectral_steps(n, sr, cfg)),
    description="mel spectrogram (n_mels x frames), scaled by `scale` (dB by default)",
)
def _logmel(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    return log_mel(
        clips,
        sr=sr,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        scale=cfg.scale,
    )


@register_feature(
    "stft",
    shape=lambda n, *, sr, cfg: (1 + cfg.n_fft // 2, _spectral_steps(n, sr, cfg)),
    description="STFT spectrogram (1 + n_fft/2 bins x frames), scaled by `scale`",
)
def _stft(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    return stft_spectrogram(clips, n_fft=cfg.n_fft, hop_length=cfg.hop_length, scale=cfg.scale)


@register_feature(
    "mfcc",
    shape=lambda n, *, sr, cfg: (cfg.n_mfcc, _spectral_steps(n, sr, cfg)),
    description="MFCC sequence (n_mfcc x frames) from the dB log-mel",
)
def _mfcc(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    return mfcc(
        clips,
        sr=sr,
        n_mfcc=cfg.n_mfcc,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
    )


@register_feature("raw", shape=lambda n, *, sr, cfg: (1, n), description="the waveform itself (1 x samples)")
def _raw(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    return np.ascontiguousarray(clips, dtype=np.float32)[:, None, :]


@register_feature(
    "classic58",
    shape=lambda n, *, sr, cfg: (58, 1),
    description="the 58-value GTZAN feature vector of the whole clip, zero padding left out (58 x 1)",
    chunk=1,
)
def _classic58(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    from mgr_batch.features.classic import gtzan_features

    # A song shorter than its clip arrives zero-padded: describe the audio, not the padding.
    return np.stack([gtzan_features(_trim_padding(c), sr=sr) for c in clips]).astype(np.float32)[:, :, None]


def _trim_padding(clip: np.ndarray, min_samples: int = 2048) -> np.ndarray:
    """``clip`` without its trailing run of exact zeros (keeping at least ``min_samples``)."""
    nonzero = np.flatnonzero(clip)
    end = int(nonzero[-1]) + 1 if nonzero.size else 0
    return clip[: max(end, min(min_samples, len(clip)))]


def _seq_steps(n: int, *, sr: int, cfg: FeatureConfig) -> tuple[int, int]:
    from mgr_batch.clips.windows import clip_starts

    return 58, len(clip_starts(n / sr, clip_seconds=cfg.window_seconds, hop_seconds=cfg.window_seconds))


@register_feature(
    "classic58_seq",
    shape=_seq_steps,
    description="58-value vectors of consecutive window_seconds windows of the clip, padding windows first "
    "(58 x windows)",
    chunk=1,
)
def _classic58_seq(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    return np.stack([_window_sequence(c, sr=sr, window_seconds=cfg.window_seconds) for c in clips])


def _window_sequence(clip: np.ndarray, *, sr: int, window_seconds: float) -> np.ndarray:
    """One clip (clip_samples,) -> its windows' 58-value vectors (58, n_windows), float32, pre-padded.

    A song shorter than its clip arrives with trailing zeros. The windows that hold none of its audio go
    first (as Keras's pre-padding), so the sequence ends with the song's last window, which is what a
    recurrent model reads. Column ``length`` is the window's samples of audio (0 for a padding window),
    not the window's constant size: a constant column has no variance for a BatchNorm to divide by.
    """
    from mgr_batch.clips.windows import clip_starts
    from mgr_batch.features.classic import gtzan_features_windows

    vectors = gtzan_features_windows(clip, sr=sr, window_seconds=window_seconds, hop_seconds=window_seconds)
    starts = clip_starts(len(clip) / sr, clip_seconds=window_seconds, hop_seconds=window_seconds)
    nonzero = np.flatnonzero(clip)
    end = int(nonzero[-1]) + 1 if nonzero.size else 0
    offsets = np.round(starts * sr).astype(np.int64)
    vectors[:, 0] = np.clip(end - offsets, 0, int(round(window_seconds * sr)))
    audio = offsets < end
    return np.concatenate([vectors[~audio], vectors[audio]]).T.astype(np.float32)


#: Feature kinds of the pre-trained networks -> the module that defines them in its ``KINDS``
#: (name -> (compute, shape, description)); loaded on first use, as they load the networks' code.
PRETRAINED = {
    "musicnn_embedding": "mgr_batch.features.musicnn",
    "efficientat_logmel": "mgr_batch.features.efficientat",
    "efficientat_embedding": "mgr_batch.features.efficientat",
    "stacked_embedding": "mgr_batch.features.stacked",
}


def feature_kind(name: str) -> FeatureKind:
    """The registered kind ``name``; a clear error for an unknown one."""
    if name not in FEATURES and name in PRETRAINED:
        for kind, (compute, shape, description) in importlib.import_module(PRETRAINED[name]).KINDS.items():
            FEATURES[kind] = FeatureKind(kind, compute, shape, description)
    if name not in FEATURES:
        raise ConfigError(f"unknown feature kind {name!r} (known: {', '.join(sorted({*FEATURES, *PRETRAINED}))})")
    return FEATURES[name]


def all_kinds() -> dict[str, FeatureKind]:
    """Every feature kind, the pre-trained ones loaded."""
    for name in PRETRAINED:
        feature_kind(name)
    return dict(FEATURES)


def featurize(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    """Features of a batch of clips (n_clips, clip_samples) -> (n_clips, n_features, n_steps) float32.

    Works through a few clips at a time, so an hour-long song costs its output, not its STFT.
    """
    kind = feature_kind(cfg.kind)
    if len(clips) <= kind.chunk:
        return np.asarray(kind.compute(clips, sr=sr, cfg=cfg), dtype=np.float32)
    out = np.empty((len(clips), *kind.shape(clips.shape[-1], sr=sr, cfg=cfg)), np.float32)
    for i in range(0, len(clips), kind.chunk):
        out[i : i + kind.chunk] = kind.compute(clips[i : i + kind.chunk], sr=sr, cfg=cfg)
    return out


def feature_shape(*, sr: int, clip_seconds: float, cfg: FeatureConfig) -> tuple[int, int]:
    """(n_features, n_steps) of one clip's features."""
    return tuple(feature_kind(cfg.kind).shape(int(round(clip_seconds * sr)), sr=sr, cfg=cfg))


# --- the seed studies' settings ---------------------------------------------------------------------
