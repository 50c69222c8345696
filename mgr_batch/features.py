"""Features as pure functions over batches of clips (numpy in, numpy out; torch does the FFTs)."""

from __future__ import annotations

import functools

import librosa
import numpy as np
import torch

from mgr_batch.config import FeatureConfig

#: Floor of the power spectrum before the log (librosa's ``amin``): -100 dB.
AMIN = 1e-10


@functools.lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> torch.Tensor:
    return torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))


@functools.lru_cache(maxsize=16)
def _window(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True)


def n_frames(n_samples: int, *, hop_length: int) -> int:
    """Frames of a centred STFT over ``n_samples``."""
    return 1 + n_samples // hop_length


def log_mel(
    y: np.ndarray | torch.Tensor,
    *,
    sr: int,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray | torch.Tensor:
    """Log-power mel spectrogram in dB, as ``librosa.power_to_db(librosa.feature.melspectrogram(...))``.

    ``y`` has shape (..., n_samples); the result has shape (..., n_mels, n_frames), float32, with
    n_frames = 1 + n_samples // hop_length (centred frames, zero padding, periodic Hann window).
    A torch tensor stays on its device (so the GPU path is the same code); numpy in gives numpy out.
    """
    as_numpy = not isinstance(y, torch.Tensor)
    x = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)) if as_numpy else y.float()
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop_length,
        window=_window(n_fft).to(x.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    mel = torch.matmul(_mel_basis(sr, n_fft, n_mels, fmin, fmax).to(x.device), power)
    out = 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
    out = out.reshape(*lead, n_mels, out.shape[-1])
    return out.numpy() if as_numpy else out


def featurize(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    """Features of a batch of clips (n_clips, clip_samples) -> (n_clips, n_mels, n_frames) float32."""
    if cfg.kind != "logmel":
        raise ValueError(f"unknown feature kind {cfg.kind!r}")
    return log_mel(
        clips, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
    )


def feature_shape(*, sr: int, clip_seconds: float, cfg: FeatureConfig) -> tuple[int, int]:
    """(n_mels, n_frames) of one clip's features."""
    return cfg.n_mels, n_frames(int(round(clip_seconds * sr)), hop_length=cfg.hop_length)
