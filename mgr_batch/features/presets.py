"""Named settings of the seed studies and the pre-trained networks: sample rate, clips and features together."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mgr_batch.config import AudioConfig, ClipConfig, FeatureConfig, merge
from mgr_batch.errors import ConfigError


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
            dataclasses.replace(features, **self.features),
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
        Preset(
            "musicnn_embedding",
            "transfer: pre-trained MSD_musicnn embeddings of 3 s clips at 16 kHz, for a classic head",
            {"sr": 16000},  # musicnn's own rate
            {"clip_seconds": 3.0},
            {"kind": "musicnn_embedding"},
        ),
        Preset(
            "efficientat",
            "EfficientAT's input: 128-band Kaldi log-mel at 32 kHz, 10 s clips (what mn04_as was trained on)",
            {"sr": 32000},  # EfficientAT's own rate
            {"clip_seconds": 10.0},
            {"kind": "efficientat_logmel"},
        ),
        Preset(
            "efficientat_embedding",
            "transfer: pre-trained EfficientAT mn04_as embeddings of 10 s clips at 32 kHz, for a classic head",
            {"sr": 32000},
            {"clip_seconds": 10.0},
            {"kind": "efficientat_embedding"},
        ),
        Preset(
            "musicnn_efficientat",
            "transfer: MSD_musicnn penultimate + EfficientAT mn04_as embedding of 3 s clips, one decode at 32 kHz",
            {"sr": 32000},
            {"clip_seconds": 3.0},
            {"kind": "stacked_embedding", "params": {"parts": ["MSD_musicnn:penultimate", "efficientat:embedding"]}},
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
    if name not in PRESETS:
        raise ConfigError(f"unknown feature preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name]


def with_preset(train: dict[str, Any]) -> dict[str, Any]:
    """A train config dict with its preset's sample rate, clips and features under the values it sets.

    The preset is ``train["preset"]``, else the default one of the model type's feature kind. Training
    settings the model type's registry entry gives (``ModelInfo.optim``) go under those ``train`` sets.
    """
    from mgr_batch.models import model_info  # the model modules (torch), only when a train config is built

    info = model_info((train.get("model") or {}).get("name") or "cnn")
    p = preset(train.get("preset") or default_preset(info.name, info.features))
    set_clips = {k: v for k, v in (train.get("clips") or {}).items() if v is not None}
    return train | {
        "preset": p.name,
        "audio": p.audio | (train.get("audio") or {}),
        "optim": merge(info.optim, train.get("optim") or {}),
        "clips": p.clips | set_clips,
        "features": p.features | (train.get("features") or {}),
    }
