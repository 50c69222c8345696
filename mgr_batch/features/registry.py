"""Features as pure functions over batches of clips (numpy in, numpy out; torch does the FFTs).

Every feature kind turns clips (n_clips, clip_samples) into (n_clips, n_features, n_steps) float32:
frequency bins or feature dimensions first, time steps second, so every model sees one layout.
:data:`FEATURES` names them; :data:`PRESETS` holds the seed studies' settings (sample rate, clip length
and feature parameters together).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import librosa
import numpy as np
import scipy.fft
import torch

from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig
from mgr_batch.errors import ConfigError

#: Floor of the power spectrum before the log (librosa's ``amin``): -100 dB.
AMIN = 1e-10
#: Clips featurized at a time by :func:`featurize` (bounds the memory of a kind's intermediates).
CHUNK_CLIPS = 64
#: Bytes of complex STFT computed at a time on CPU (one 3 s clip's is 1 MB at n_fft 2048): chunks that stay
#: in cache ran the 128-band log-mel of 3 s clips 2.6x faster than 64 clips at once (4x with the banded
#: mel product of :func:`mel_power`).
STFT_CHUNK_BYTES = 4 << 20
#: Mel filters per band of the CPU mel product (:func:`_mel_bands`).
MEL_BAND_FILTERS = 16


@functools.lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> torch.Tensor:
    return torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))


@functools.lru_cache(maxsize=16)
def _mel_bands(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None
) -> tuple[tuple[int, int, torch.Tensor], ...]:
    """The mel basis cut into bands of :data:`MEL_BAND_FILTERS` filters: ``(first_bin, end_bin, weights)``,
    weights (filters, end_bin - first_bin) covering the bins where any filter of the band is non-zero."""
    basis = _mel_basis(sr, n_fft, n_mels, fmin, fmax)
    bands = []
    for lo in range(0, n_mels, MEL_BAND_FILTERS):
        nonzero = torch.nonzero(basis[lo : lo + MEL_BAND_FILTERS].abs().sum(0)).flatten()
        first, end = (int(nonzero[0]), int(nonzero[-1]) + 1) if len(nonzero) else (0, 1)
        bands.append((first, end, basis[lo : lo + MEL_BAND_FILTERS, first:end].contiguous()))
    return tuple(bands)


def mel_power(
    power: torch.Tensor, *, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """Mel filter bank applied to a power spectrogram (..., 1 + n_fft // 2, n_frames) -> (..., n_mels, n_frames).

    On CPU, band by band over the bins each band's filters cover (about a tenth of the dense product's
    work, 4x faster for 128 bands of n_fft 2048); elsewhere one dense product.
    """
    if power.device.type != "cpu":
        return torch.matmul(_mel_basis(sr, n_fft, n_mels, fmin, fmax).to(power.device), power)
    bands = _mel_bands(sr, n_fft, n_mels, fmin, fmax)
    return torch.cat([torch.matmul(w, power[..., first:end, :]) for first, end, w in bands], dim=-2)


@functools.lru_cache(maxsize=16)
def _window(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True)


@functools.lru_cache(maxsize=8)
def _dct(n_mels: int, n_mfcc: int) -> torch.Tensor:
    """(n_mfcc, n_mels) orthonormal DCT-II, librosa.feature.mfcc's."""
    return torch.from_numpy(scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc].astype(np.float32))


def n_frames(n_samples: int, *, hop_length: int) -> int:
    """Frames of a centred STFT over ``n_samples``."""
    return 1 + n_samples // hop_length


def _as_tensor(y: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    if isinstance(y, torch.Tensor):
        return y.float(), False
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), True


def power_spectrogram(y: torch.Tensor, *, n_fft: int, hop_length: int) -> torch.Tensor:
    """|STFT|^2 of ``y`` (..., n_samples) -> (..., 1 + n_fft // 2, n_frames): centred, zero padded, Hann."""
    lead = y.shape[:-1]
    spec = torch.stft(
        y.reshape(-1, y.shape[-1]),
        n_fft=n_fft,
        hop_length=hop_length,
        window=_window(n_fft).to(y.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real.square().addcmul_(spec.imag, spec.imag)
    return power.reshape(*lead, *power.shape[-2:])


def _per_chunk(
    x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], *, n_fft: int, hop_length: int
) -> torch.Tensor:
    """``fn`` (power spectrogram -> features) over the rows of ``x`` (..., n_samples), on CPU a few rows at
    a time (at most :data:`STFT_CHUNK_BYTES` of STFT, at least one row) so the STFT stays in cache."""
    lead, flat = x.shape[:-1], x.reshape(-1, x.shape[-1])
    rows = max(len(flat), 1)
    if x.device.type == "cpu":
        rows = max(1, STFT_CHUNK_BYTES // (8 * (1 + n_fft // 2) * n_frames(x.shape[-1], hop_length=hop_length)))
    parts = [
        fn(power_spectrogram(flat[i : i + rows], n_fft=n_fft, hop_length=hop_length))
        for i in range(0, max(len(flat), 1), rows)
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.reshape(*lead, *out.shape[-2:])


def scale_power(power: torch.Tensor, scale: str) -> torch.Tensor:
    """Power to model input: ``db`` 10 log10, ``log`` ln, ``log1p`` log10(1 + 10000 P), ``linear`` sqrt."""
    if scale == "db":
        return 10.0 * torch.log10(torch.clamp(power, min=AMIN))
    if scale == "log":
        return torch.log(torch.clamp(power, min=AMIN))
    if scale == "log1p":
        return torch.log10(1.0 + 10000.0 * power)
    if scale == "linear":
        return power.sqrt()
    raise ConfigError(f"unknown feature scale {scale!r}")


def log_mel(
    y: np.ndarray | torch.Tensor,
    *,
    sr: int,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    scale: str = "db",
) -> np.ndarray | torch.Tensor:
    """Log-power mel spectrogram, in dB as ``librosa.power_to_db(librosa.feature.melspectrogram(...))``.

    ``y`` has shape (..., n_samples); the result has shape (..., n_mels, n_frames), float32, with
    n_frames = 1 + n_samples // hop_length (centred frames, zero padding, periodic Hann window).
    A torch tensor stays on its device (so the GPU path is the same code); numpy in gives numpy out.
    """
    x, as_numpy = _as_tensor(y)
    mel = functools.partial(mel_power, sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    out = _per_chunk(x, lambda power: scale_power(mel(power), scale), n_fft=n_fft, hop_length=hop_length)
    return out.numpy() if as_numpy else out


def stft_spectrogram(
    y: np.ndarray | torch.Tensor, *, n_fft: int = 1024, hop_length: int = 512, scale: str = "db"
) -> np.ndarray | torch.Tensor:
    """Scaled STFT spectrogram: (..., n_samples) -> (..., 1 + n_fft // 2, n_frames) float32."""
    x, as_numpy = _as_tensor(y)
    out = _per_chunk(x, lambda power: scale_power(power, scale), n_fft=n_fft, hop_length=hop_length)
    return out.numpy() if as_numpy else out


def mfcc(
    y: np.ndarray | torch.Tensor,
    *,
    sr: int,
    n_mfcc: int = 20,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray | torch.Tensor:
    """MFCCs as ``librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None))``: (..., n_mfcc, n_frames)."""
    x, as_numpy = _as_tensor(y)
    db = log_mel(x, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax)
    out = torch.matmul(_dct(n_mels, n_mfcc).to(db.device), db)
    return out.numpy() if as_numpy else out


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


def feature_kind(name: str) -> FeatureKind:
    """The registered kind ``name``; a clear error for an unknown one."""
    if name not in FEATURES and name.startswith("musicnn"):
        import mgr_batch.features.musicnn  # noqa: F401  (registers the musicnn kinds on first use)
    if name not in FEATURES and name.startswith("stacked"):
        import mgr_batch.features.stacked  # noqa: F401
    if name not in FEATURES and name.startswith("efficientat"):
        import mgr_batch.features.efficientat  # noqa: F401  (registers the EfficientAT kinds on first use)
    if name not in FEATURES:
        raise ConfigError(f"unknown feature kind {name!r} (known: {', '.join(sorted(FEATURES))})")
    return FEATURES[name]


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


@dataclass(frozen=True)
class Preset:
    """Named settings: the sample rate, clips and features a study used."""

    name: str
    study: str
    audio: dict[str, Any]
    clips: dict[str, Any]
    features: dict[str, Any]

    def apply(
        self, audio: AudioConfig, clips: ClipConfig, features: FeatureConfig
    ) -> tuple[AudioConfig, ClipConfig, FeatureConfig]:
        """The three configs with this preset's values put in (other fields are kept)."""
        return (
            dataclasses.replace(audio, **self.audio),
            dataclasses.replace(clips, **self.clips),
            dataclasses.replace(FeatureConfig(), **self.features),
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("logmel", "mgr-batch default", {"sr": 22050}, {"clip_seconds": 3.0}, {"kind": "logmel"}),
        Preset(
            "stft4k",
            "4 kHz spectrogram study: 5 s clips, 513 bins x 22 steps",
            {"sr": 4000},
            {"clip_seconds": 5.0},
            {"kind": "stft", "n_fft": 1024, "hop_length": 920},
        ),
        Preset(
            "logmel64_2s",
            "2 s crop study: 64-bin log(X^2) mel, window 512, 50% overlap, 2 s windows",
            {"sr": 22050},
            {"clip_seconds": 2.0},
            {"kind": "logmel", "n_fft": 512, "hop_length": 256, "n_mels": 64, "scale": "log"},
        ),
        Preset(
            "raw2s",
            "2 s crop study: raw amplitude of 2 s windows (at 8 kHz)",
            {"sr": 8000},
            {"clip_seconds": 2.0},
            {"kind": "raw"},
        ),
        Preset(
            "logmel128",
            "transfer study: 128-bin mel images, n_fft 2048, hop 1024 at 22.05 kHz",
            {"sr": 22050},
            {"clip_seconds": 3.0},
            {"kind": "logmel", "n_fft": 2048, "hop_length": 1024},
        ),
        Preset(
            "mfcc",
            "transfer study: 20 MFCCs per frame for the GRU",
            {"sr": 22050},
            {"clip_seconds": 3.0},
            {"kind": "mfcc", "n_mfcc": 20},
        ),
        Preset(
            "classic58_30s",
            "58-value vector of whole 30 s songs",
            {"sr": 22050},
            {"clip_seconds": 30.0},
            {"kind": "classic58"},
        ),
        Preset(
            "classic58_3s",
            "58-value vector of 3 s segments (voting)",
            {"sr": 22050},
            {"clip_seconds": 3.0},
            {"kind": "classic58"},
        ),
        *(
            Preset(
                f"classic58_seq{w}",
                f"LSTM study: sequences of {w} s feature vectors over 30 s",
                {"sr": 22050},
                {"clip_seconds": 30.0},
                {"kind": "classic58_seq", "window_seconds": float(w)},
            )
            for w in (3, 6, 9)
        ),
        Preset(
            "musicnn",
            "musicnn's input: 96-band log10(1 + 10000 mel) at 16 kHz, 3 s patches",
            {"sr": 16000},
            {"clip_seconds": 3.0},
            {"kind": "logmel", "n_fft": 512, "hop_length": 256, "n_mels": 96, "scale": "log1p"},
        ),
    )
}
#: The preset a model gets when none is named, by the feature kind its registry entry declares.
DEFAULT_PRESET = {
    "logmel": "logmel",
    "stft": "stft4k",
    "mfcc": "mfcc",
    "raw": "raw2s",
    "classic58": "classic58_30s",
    "classic58_seq": "classic58_seq3",
    "musicnn": "musicnn",
    "musicnn_embedding": "musicnn_embedding",
    "efficientat": "efficientat",
    "efficientat_logmel": "efficientat",
    "efficientat_embedding": "efficientat_embedding",
    "stacked_embedding": "musicnn_efficientat",
}


#: Models whose study used other settings than their feature kind's default preset.
MODEL_PRESET = {
    "cnn3": "logmel64_2s",
    "ffnn": "logmel64_2s",
    "vgg": "logmel128",
    "resnet": "logmel128",
    "crnn": "logmel128",
}


def default_preset(model: str, kind: str) -> str:
    """The preset model type ``model`` (whose registry entry declares feature kind ``kind``) trains with by default."""
    return MODEL_PRESET.get(model) or DEFAULT_PRESET.get(kind, "logmel")


def preset(name: str) -> Preset:
    """The preset ``name``; a clear error for an unknown one."""
    if name not in PRESETS and name.startswith("musicnn"):
        try:
            import mgr_batch.features.musicnn  # noqa: F401  (adds its presets)
            import mgr_batch.features.stacked  # noqa: F401
        except ImportError:  # not built yet in this checkout
            pass
    if name not in PRESETS and name.startswith("efficientat"):
        import mgr_batch.features.efficientat  # noqa: F401  (adds its presets)
    if name not in PRESETS:
        raise ConfigError(f"unknown feature preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name]
