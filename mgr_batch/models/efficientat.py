"""EfficientAT's ``mn04_as`` (Schmid et al., 2023) in PyTorch: an AudioSet-trained MobileNetV3 and its front end.

A port, written for mgr-batch, of the MobileNetV3 of fschmid56/EfficientAT (MIT licence, see
``mgr_batch/assets/efficientat/``) at width 0.4, with the weights of its ``mn04_as`` release converted by
``tools/convert_efficientat.py``. Given :func:`efficientat_logmel` inputs it reproduces the original's 527
AudioSet logits and its 384-value embedding to within 1e-4 (``tests/models/test_efficientat.py``).

- :func:`efficientat_logmel`: waveform at 32 kHz (..., n_samples) -> (..., 128, 1 + (n_samples - 1) // 320).
- :class:`MobileNetAT`: the network, (batch, 1, 128, frames) -> (logits (batch, n_classes), embedding (batch, 384)).
- :class:`EfficientAT`: the registered model type ``efficientat`` (mgr-batch's (batch, n_mels, n_frames)
  layout, logits out), pre-trained or not, for fine-tuning and for the ``audioset-tags`` tagger.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mgr_batch.errors import CheckpointError, ConfigError, EmptyAudioError
from mgr_batch.models.registry import register

SR = 32000
N_FFT = 1024
HOP_LENGTH = 320
WIN_LENGTH = 800
N_MELS = 128
FMIN = 0.0
FMAX = 15000.0
PREEMPHASIS = 0.97
#: Bytes of complex STFT computed at a time on CPU (one 10 s clip's is 4 MB).
STFT_CHUNK_BYTES = 4 << 20
#: Frames of a 10 s clip, the length the network was trained on.
N_FRAMES = 1000
#: BatchNorm epsilon and momentum of the original (torch's momentum: the new value's weight).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
WIDTH = 0.4
EMBEDDING_DIMS = 384
HIDDEN_DIMS = 512
N_AUDIOSET = 527
#: Shipped pre-trained weights, by name.
PRETRAINED = ("mn04_as",)
DEFAULT_PRETRAINED = "mn04_as"
ASSETS = "efficientat"


# --- front end -------------------------------------------------------------------------------------


def _hz_to_kaldi_mel(f):
    return 1127.0 * (1.0 + f / 700.0).log() if isinstance(f, torch.Tensor) else 1127.0 * math.log(1.0 + f / 700.0)


@functools.lru_cache(maxsize=4)
def kaldi_mel_banks(*, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Kaldi's triangular mel filters (no VTLN warp) over the 1 + n_fft // 2 STFT bins: (n_mels, 1 + n_fft // 2).

    Filters are triangles in Kaldi's mel scale (1127 ln(1 + f / 700)), n_mels + 2 equally spaced edges from
    ``fmin`` to ``fmax``, evaluated at the bins' mel values; the Nyquist bin gets weight 0. Computed in
    float32 in the order Kaldi's PyTorch port does, so the filters match it to the last bit.
    """
    mel_lo, mel_hi = _hz_to_kaldi_mel(float(fmin)), _hz_to_kaldi_mel(float(fmax))
    delta = (mel_hi - mel_lo) / (n_mels + 1)
    band = torch.arange(n_mels).unsqueeze(1)
    left = mel_lo + band * delta
    centre = mel_lo + (band + 1.0) * delta
    right = mel_lo + (band + 2.0) * delta
    mel = _hz_to_kaldi_mel((sr / n_fft) * torch.arange(n_fft // 2)).unsqueeze(0)
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1)).float()


@functools.lru_cache(maxsize=2)
def _window(win_length: int) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=False)


def efficientat_logmel(y: np.ndarray | torch.Tensor, *, sr: int = SR) -> np.ndarray | torch.Tensor:
    """EfficientAT's input of waveforms ``y`` (..., n_samples) at 32 kHz: (..., 128, frames) float32.

    Pre-emphasis ``y[n] - 0.97 y[n - 1]`` (one sample shorter), STFT (n_fft 1024, hop 320, symmetric Hann
    window of 800, centred frames, reflect padding), power, the 128 Kaldi mel filters of 0-15 kHz,
    ``(ln(mel + 1e-5) + 4.5) / 5``; frames = 1 + (n_samples - 1) // 320 (1000 for 10 s). A torch tensor stays
    on its device; numpy in gives numpy out. Needs at least 514 samples (the reflect padding).
    """
    if sr != SR:
        raise ConfigError(f"EfficientAT's front end takes {SR} Hz audio, got sr={sr}")
    as_numpy = not isinstance(y, torch.Tensor)
    x = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)) if as_numpy else y.float()
    if x.shape[-1] <= N_FFT // 2 + 1:
        raise EmptyAudioError(f"EfficientAT needs more than {N_FFT // 2 + 1} samples, got {x.shape[-1]}")
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    x = x[:, 1:] - PREEMPHASIS * x[:, :-1]
    window = _window(WIN_LENGTH).to(x.device)
    banks = kaldi_mel_banks(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX).to(x.device)

    def rows_logmel(z: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            z,
            N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            window=window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            return_complex=True,
        )
        power = spec.real.square().addcmul_(spec.imag, spec.imag)
        return torch.matmul(banks, power).add_(1e-5).log_().add_(4.5).div_(5.0)

    # on CPU a few rows at a time, so that each one's STFT stays in cache (2x faster for 10 s clips)
    rows = (
        max(1, STFT_CHUNK_BYTES // (8 * (N_FFT // 2 + 1) * n_frames(x.shape[-1] + 1)))
        if x.device.type == "cpu"
        else len(x)
    )
    if len(x) == 0:
        out = x.new_zeros((0, N_MELS, n_frames(x.shape[-1] + 1)))
    else:
        parts = [rows_logmel(x[i : i + rows]) for i in range(0, len(x), rows)]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
    out = out.reshape(*lead, *out.shape[-2:])
    return out.numpy() if as_numpy else out


def n_frames(n_samples: int) -> int:
    """Frames of :func:`efficientat_logmel` for ``n_samples`` samples."""
    return 1 + (n_samples - 1) // HOP_LENGTH


# --- network ---------------------------------------------------------------------------------------


def _divisible(v: float, divisor: int = 8) -> int:
    """``v`` rounded to a multiple of ``divisor`` (at least ``divisor``), never more than 10% below ``v``:
    MobileNet's channel rounding."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


@dataclass(frozen=True)
class _Block:
    """One inverted residual block at width 1: channels in, kernel, expanded, out; SE; Hardswish; stride."""

    c_in: int
    kernel: int
    expanded: int
    c_out: int
    se: bool
    hardswish: bool
    stride: int


#: MobileNetV3-Large's 15 blocks (Howard et al. 2019, table 1), channels at width 1.
LARGE = tuple(
    _Block(*row)
    for row in (
        (16, 3, 16, 16, False, False, 1),
        (16, 3, 64, 24, False, False, 2),
        (24, 3, 72, 24, False, False, 1),
        (24, 5, 72, 40, True, False, 2),
        (40, 5, 120, 40, True, False, 1),
        (40, 5, 120, 40, True, False, 1),
        (40, 3, 240, 80, False, True, 2),
        (80, 3, 200, 80, False, True, 1),
        (80, 3, 184, 80, False, True, 1),
        (80, 3, 184, 80, False, True, 1),
        (80, 3, 480, 112, True, True, 1),
        (112, 3, 672, 112, True, True, 1),
        (112, 5, 672, 160, True, True, 2),
        (160, 5, 960, 160, True, True, 1),
        (160, 5, 960, 160, True, True, 1),
    )
)


class ConvNorm(nn.Sequential):
    """Convolution without bias, BatchNorm, then an optional activation: (batch, c_in, f, t) -> (batch, c_out, f', t')."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = None,
    ) -> None:
        layers = [
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        super().__init__(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
    """Channel squeeze-excitation: x * sigmoid(fc2(relu(fc1(mean of x over (freq, time))))), shape kept."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when not wider), depthwise kxk (with the stride), optional SE, project (1x1, linear);
    the input added back when shapes match: (batch, c_in, f, t) -> (batch, c_out, f / stride, t / stride)."""

    def __init__(self, cfg: _Block, width: float) -> None:
        super().__init__()
        c_in, expanded, c_out = (_divisible(c * width) for c in (cfg.c_in, cfg.expanded, cfg.c_out))
        act = nn.Hardswish if cfg.hardswish else nn.ReLU
        self.expand = ConvNorm(c_in, expanded, 1, act=act) if expanded != c_in else nn.Identity()
        self.depthwise = ConvNorm(expanded, expanded, cfg.kernel, stride=cfg.stride, groups=expanded, act=act)
        self.se = SqueezeExcite(expanded, _divisible(expanded // 4)) if cfg.se else nn.Identity()
        self.project = ConvNorm(expanded, c_out, 1)
        self.residual = cfg.stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.residual else out


class MobileNetAT(nn.Module):
    """EfficientAT's MobileNetV3: log-mel (batch, 1, n_mels, frames) -> (logits (batch, n_classes), embedding
    (batch, 384 at width 0.4)).

    A 3x3 stride-2 stem of one input channel, the 15 blocks of :data:`LARGE` at ``width``, a 1x1 conv to six
    times the last block's channels; the embedding is that map's mean over (freq, time), and the head is
    Linear(embedding, 512 at width 0.4) -> Hardswish -> Dropout -> Linear(512, n_classes) on it. Fully
    convolutional with global pooling, so any number of frames works (the pre-trained network saw 1000).
    """

    def __init__(self, *, n_classes: int = N_AUDIOSET, width: float = WIDTH, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = ConvNorm(1, _divisible(LARGE[0].c_in * width), 3, stride=2, act=nn.Hardswish)
        self.blocks = nn.Sequential(*(InvertedResidual(cfg, width) for cfg in LARGE))
        last_in = _divisible(LARGE[-1].c_out * width)
        self.last = ConvNorm(last_in, 6 * last_in, 1, act=nn.Hardswish)
        self.hidden = nn.Linear(6 * last_in, _divisible(1280 * width))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.hidden.out_features, n_classes)

    @property
    def embedding_dims(self) -> int:
        return self.hidden.in_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.last(self.blocks(self.stem(x))).mean(dim=(2, 3))
        logits = self.head(self.dropout(F.hardswish(self.hidden(embedding))))
        return logits, embedding


# --- pre-trained weights and labels ----------------------------------------------------------------


def pretrained_path(name: str = DEFAULT_PRETRAINED) -> Path:
    """Path of the shipped (converted) weights of ``name`` (one of :data:`PRETRAINED`)."""
    if name not in PRETRAINED:
        raise ConfigError(f"unknown EfficientAT model {name!r} (known: {', '.join(PRETRAINED)})")
    return Path(str(resources.files("mgr_batch") / "assets" / ASSETS / f"{name}.safetensors"))


def load_pretrained_state(name: str = DEFAULT_PRETRAINED) -> dict[str, torch.Tensor]:
    """The converted state dict of ``name``, with :class:`MobileNetAT`'s keys (BatchNorm counters left out)."""
    from safetensors.torch import load_file

    path = pretrained_path(name)
    if not path.is_file():
        raise CheckpointError(f"EfficientAT weights {path} are missing (run tools/convert_efficientat.py)")
    return load_file(str(path))


@functools.cache
def audioset_labels() -> tuple[str, ...]:
    """The 527 AudioSet class names, in logit order (``class_labels_indices.csv`` shipped beside the weights)."""
    path = resources.files("mgr_batch") / "assets" / ASSETS / "class_labels_indices.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return tuple(row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"])))


def pretrained_network(name: str = DEFAULT_PRETRAINED) -> MobileNetAT:
    """A new :class:`MobileNetAT` with the weights of ``name`` loaded (in eval mode, on CPU)."""
    net = MobileNetAT()
    missing, unexpected = net.load_state_dict(load_pretrained_state(name), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"EfficientAT weights {name!r} do not fit: missing {missing}, unexpected {unexpected}")
    return net.eval()


# --- the registered model type ---------------------------------------------------------------------


@register(
    "efficientat",
    family="neural",
    features="efficientat",
    study="Schmid et al. 2023, EfficientAT mn04_as (MobileNetV3 at width 0.4, pre-trained on AudioSet)",
    description="MobileNetV3-Large blocks at width 0.4 with SE, on 128-band Kaldi log-mel at 32 kHz; "
    "params.pretrained='mn04_as' loads the shipped AudioSet weights (a new head for another class count)",
)
class EfficientAT(nn.Module):
    """EfficientAT on mgr-batch features: log-mel (batch, n_mels, n_frames) -> logits (batch, n_classes).

    Inputs are :func:`efficientat_logmel` (the ``efficientat`` preset); any number of frames works.
    ``pretrained`` (``"mn04_as"``) loads the shipped weights: all of them when ``n_classes`` is 527 (then
    ``self.tags`` holds the AudioSet labels), otherwise everything but the last Linear, which starts afresh
    for fine-tuning (``self.tags`` is None).
    """

    def __init__(
        self,
        *,
        n_classes: int,
        input_shape: tuple[int, int] = (N_MELS, N_FRAMES),
        pretrained: str | None = None,
        width: float = WIDTH,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if pretrained and (input_shape[0] != N_MELS or width != WIDTH):
            raise ConfigError(
                f"pre-trained EfficientAT needs {N_MELS} mel bands and width {WIDTH}, "
                f"got input_shape {tuple(input_shape)}, width {width}"
            )
        self.net = MobileNetAT(n_classes=n_classes, width=width, dropout=dropout)
        self.tags = self._load(pretrained) if pretrained else None

    def _load(self, name: str) -> tuple[str, ...] | None:
        state = load_pretrained_state(name)
        fits = state["head.weight"].shape == self.net.head.weight.shape
        if not fits:
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked") and (fits or not k.startswith("head."))]
        if missing or unexpected:
            raise CheckpointError(
                f"EfficientAT weights {name!r} do not fit: missing {missing}, unexpected {unexpected}"
            )
        return audioset_labels() if fits else None

    def extract(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits`` (batch, n_classes) and ``embedding`` (batch, 384) of log-mels ``x`` (batch, n_mels, n_frames)."""
        logits, embedding = self.net(x.unsqueeze(1))
        return {"logits": logits, "embedding": embedding}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1))[0]

    def tag(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (batch, n_classes): the sigmoid of the logits."""
        return torch.sigmoid(self(x))
