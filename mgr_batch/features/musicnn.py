"""The pre-trained musicnn as a feature kind: clips -> its pooled embedding of each clip (``musicnn_embedding``).

Registers the feature kind ``musicnn_embedding`` and the preset of the same name (16 kHz, 3 s clips).
A clip becomes musicnn's log-mel (:func:`mgr_batch.features.spectral.log_mel` with the ``musicnn`` preset's
parameters), then one embedding of the pre-trained network, as (dims, 1) so that classic models (which
flatten features) and every other consumer see the usual (n_features, n_steps) layout.
``FeatureConfig.params`` picks the network (``pretrained``, default ``MSD_musicnn``) and the ``layer``.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

from mgr_batch.config import FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.features.spectral import log_mel
from mgr_batch.models import precision
from mgr_batch.models.musicnn import HOP_LENGTH, N_FFT, N_MELS, SR, Musicnn, pretrained_path

#: Embedding layers and their sizes: musicnn's max- and mean-pooled front+mid-end maps, the 200-unit
#: penultimate dense layer, max and mean pooled side by side, and the taggram (the 50 tag probabilities).
LAYERS = {"max_pool": 753, "mean_pool": 753, "penultimate": 200, "max_mean": 1506, "taggram": 50}
#: The shipped musicnn networks whose layers are embeddings (the VGG baselines are not offered).
NETWORKS = ("MSD_musicnn", "MTT_musicnn")
#: The default layer: the smallest; with a logistic-regression head it scores 0.656 song accuracy on GTZAN's
#: artist-filtered valid split (docs/reproduction.md). ``benchmarks/transfer_layers.py`` compares the layers.
DEFAULT_LAYER = "penultimate"
DEFAULT_PRETRAINED = "MSD_musicnn"
#: Clips per forward pass on a GPU.
CHUNK_CLIPS = 8
#: Clips per forward pass on CPU: a 3 s clip's largest front-end map is 4.5 MB in bfloat16, and small chunks
#: stay in cache. 4 took 0.75x the CPU time of 8 in bfloat16 and 0.88x in float32 (one thread, Intel Xeon).
CPU_CHUNK_CLIPS = 4


def embedding_settings(cfg: FeatureConfig | None = None) -> tuple[str, str]:
    """``(pretrained, layer)`` of a feature config's ``params``, checked (defaults for None)."""
    params = dict(cfg.params) if cfg is not None else {}
    unknown = set(params) - {"pretrained", "layer"}
    if unknown:
        raise ConfigError(f"musicnn_embedding takes params 'pretrained' and 'layer', not {sorted(unknown)}")
    pretrained, layer = params.get("pretrained", DEFAULT_PRETRAINED), params.get("layer", DEFAULT_LAYER)
    if not str(pretrained).endswith("_musicnn"):
        raise ConfigError(f"musicnn_embedding needs a musicnn network (MSD_musicnn, MTT_musicnn), not {pretrained!r}")
    if layer not in LAYERS:
        raise ConfigError(f"unknown musicnn embedding layer {layer!r} (known: {', '.join(LAYERS)})")
    pretrained_path(pretrained)  # an unknown name fails here
    return str(pretrained), str(layer)


@functools.lru_cache(maxsize=2)
def pretrained_network(name: str = DEFAULT_PRETRAINED) -> Musicnn:
    """The pre-trained musicnn ``name``, built once per process: eval mode, on CUDA when there is one (on CPU
    with channels-last weights, which oneDNN's convolutions run fastest, as the inference actor does)."""
    if torch.cuda.is_available():
        return Musicnn(n_classes=50, pretrained=name).to("cuda").eval()
    return Musicnn(n_classes=50, pretrained=name).to(memory_format=torch.channels_last).eval()


@functools.cache
def embedding_model_id(pretrained: str = DEFAULT_PRETRAINED, layer: str = DEFAULT_LAYER) -> str:
    """Id of an embedding space: network, layer and a hash of the weights (``MSD_musicnn-max_mean-1a2b3c4d5e6f``)."""
    digest = hashlib.sha256(pretrained_path(pretrained).read_bytes()).hexdigest()[:12]
    return f"{pretrained}-{layer}-{digest}"


def musicnn_input(clips: np.ndarray, *, sr: int) -> np.ndarray:
    """musicnn's log-mel of clips (n_clips, n_samples) at ``sr`` Hz: (n_clips, 96, frames) float32.

    Clips at another rate are resampled to 16 kHz first (soxr, high quality). The mel is the ``musicnn``
    preset's: :func:`mgr_batch.features.spectral.log_mel` with n_fft 512, hop 256, 96 bands, log10(1 + 10000 P).
    """
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    if sr != SR:
        import soxr

        clips = np.ascontiguousarray(soxr.resample(clips.T, sr, SR, quality="HQ").T, dtype=np.float32)
    return log_mel(clips, sr=SR, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, scale="log1p")


def _layer(out: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    if layer == "max_mean":
        return torch.cat([out["max_pool"], out["mean_pool"]], dim=1)
    if layer == "taggram":
        return torch.sigmoid(out["logits"])
    return out[layer]


def embed_logmel_layers(
    x: np.ndarray, *, pretrained: str = DEFAULT_PRETRAINED, layers: tuple[str, ...] = (DEFAULT_LAYER,)
) -> dict[str, np.ndarray]:
    """Several layers' embeddings of musicnn inputs ``x`` (n, 96, frames) from one forward pass each
    CPU_CHUNK_CLIPS clips (CHUNK_CLIPS on a GPU): ``{layer: (n, LAYERS[layer]) float32}``."""
    net = pretrained_network(pretrained)
    device = next(net.parameters()).device
    chunk = CPU_CHUNK_CLIPS if device.type == "cpu" else CHUNK_CLIPS
    out = {layer: np.empty((len(x), LAYERS[layer]), np.float32) for layer in layers}
    with torch.inference_mode():
        for lo in range(0, len(x), chunk):
            with precision.autocast(device):
                e = net.extract(torch.from_numpy(np.ascontiguousarray(x[lo : lo + chunk])).to(device))
            for layer in layers:
                v = _layer(e, layer)
                out[layer][lo : lo + len(v)] = v.float().cpu().numpy()
    return out


def embed_logmel(x: np.ndarray, *, pretrained: str = DEFAULT_PRETRAINED, layer: str = DEFAULT_LAYER) -> np.ndarray:
    """Embeddings (n, LAYERS[layer]) float32 of musicnn inputs ``x`` (n, 96, frames), a chunk at a time."""
    return embed_logmel_layers(x, pretrained=pretrained, layers=(layer,))[layer]


def musicnn_embedding(
    clips: np.ndarray, *, sr: int, pretrained: str = DEFAULT_PRETRAINED, layer: str = DEFAULT_LAYER
) -> np.ndarray:
    """Pre-trained musicnn embedding of each clip: (n_clips, n_samples) at ``sr`` Hz -> (n_clips, dims) float32."""
    if len(clips) == 0:
        return np.zeros((0, LAYERS[layer]), np.float32)
    return embed_logmel(musicnn_input(clips, sr=sr), pretrained=pretrained, layer=layer)


def song_embedding(clips: np.ndarray, *, sr: int, layer: str = DEFAULT_LAYER) -> np.ndarray:
    """One song's embedding: the mean over its clips (n_clips, n_samples) of the MSD_musicnn embedding, (dims,)."""
    return musicnn_embedding(clips, sr=sr, layer=layer).mean(axis=0)


#: The decode tasks' half of ``musicnn_embedding`` when the network runs in the inference actor: its log-mel.
INPUT_FEATURES = FeatureConfig(kind="logmel", n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, scale="log1p")


def splits_into_actor(cfg: FeatureConfig, *, sr: int) -> bool:
    """Whether features ``cfg`` at ``sr`` Hz can be split: log-mel (:data:`INPUT_FEATURES`) in the decode
    tasks, the pre-trained network in the inference actor (see :func:`embed_inputs`)."""
    return cfg.kind == "musicnn_embedding" and sr == SR


def embed_inputs(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The ``musicnn_embedding`` features ``cfg`` (n, dims, 1) of musicnn log-mel inputs ``x`` (n, 96, frames)."""
    pretrained, layer = embedding_settings(cfg)
    return embed_logmel(x, pretrained=pretrained, layer=layer)[:, :, None]


def _shape(n: int, *, sr: int, cfg: FeatureConfig) -> tuple[int, int]:
    return LAYERS[embedding_settings(cfg)[1]], 1


def _musicnn_embedding(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    pretrained, layer = embedding_settings(cfg)
    return musicnn_embedding(clips, sr=sr, pretrained=pretrained, layer=layer)[:, :, None]


#: This module's feature kinds (see :data:`mgr_batch.features.registry.PRETRAINED`).
KINDS = {
    "musicnn_embedding": (
        _musicnn_embedding,
        _shape,
        "pre-trained musicnn embedding of the clip (dims x 1); params: pretrained (MSD_musicnn or "
        "MTT_musicnn), "
        f"layer ({', '.join(LAYERS)}; default {DEFAULT_LAYER})",
    ),
}
