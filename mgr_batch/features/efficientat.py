"""The pre-trained EfficientAT ``mn04_as`` as feature kinds: its log-mel input and its embeddings of each clip.

Registers the feature kinds ``efficientat_logmel`` (the network's input, (128, frames) at 32 kHz) and
``efficientat_embedding`` (a pooled layer of the pre-trained network, (dims, 1), so that classic models and
every other consumer see the usual (n_features, n_steps) layout), and the presets ``efficientat`` (its
input, 10 s clips, for ``--model-type efficientat``) and ``efficientat_embedding`` (10 s clips at 32 kHz, for
a classic head). ``FeatureConfig.params`` picks the ``layer``: ``embedding`` (the 384-value global average
pool of the last feature map, default) or ``logits`` (the 527 AudioSet logits).
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

from mgr_batch.config import FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.models import efficientat as eat
from mgr_batch.models.common import fold_batch_norm

#: Embedding layers and their sizes.
LAYERS = {"embedding": eat.EMBEDDING_DIMS, "logits": eat.N_AUDIOSET}
DEFAULT_LAYER = "embedding"
PRETRAINED = eat.DEFAULT_PRETRAINED
SR = eat.SR
#: Clips per forward pass: a 10 s clip's largest activation maps take about 30 MB; small batches stay in cache.
CHUNK_CLIPS = 8


def embedding_layer(cfg: FeatureConfig | None = None) -> str:
    """The ``layer`` of a feature config's ``params``, checked (the default for None)."""
    params = dict(cfg.params) if cfg is not None else {}
    unknown = set(params) - {"layer"}
    if unknown:
        raise ConfigError(f"efficientat_embedding takes param 'layer', not {sorted(unknown)}")
    layer = params.get("layer", DEFAULT_LAYER)
    if layer not in LAYERS:
        raise ConfigError(f"unknown EfficientAT embedding layer {layer!r} (known: {', '.join(LAYERS)})")
    return str(layer)


@functools.lru_cache(maxsize=1)
def pretrained_network() -> torch.nn.Module:
    """The pre-trained ``mn04_as``, built once per process, in eval mode: log-mel (batch, 1, 128, frames) ->
    (logits (batch, 527), embedding (batch, 384)). On CUDA when there is one; on CPU with its BatchNorms
    folded into the convolutions and channels-last weights (1.3-1.6x faster on one thread,
    ``benchmarks/efficientat_cost.py``; outputs within 1e-5 of the unfolded network's)."""
    net = eat.pretrained_network(PRETRAINED)
    if torch.cuda.is_available():
        return net.to("cuda")
    return fold_batch_norm(net).to(memory_format=torch.channels_last)


@functools.lru_cache(maxsize=1)
def onnx_session():
    """ONNX Runtime's session of the shipped network (``assets/efficientat/mn04_as.onnx``, exported from the same
    weights by ``tools/export_efficientat_onnx.py``), built once per process on as many threads as torch uses here.

    On CPU it took 0.55x torch's CPU time, front end included (one thread, AMD EPYC Zen 5, outputs within 4e-6;
    ``benchmarks/results/precision.md``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting between batches
    path = eat.pretrained_path(PRETRAINED).with_suffix(".onnx")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def network_outputs(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The pre-trained network on log-mel ``x`` (n, 128, frames), :data:`CHUNK_CLIPS` at a time: (logits (n, 527),
    embedding (n, 384)) float32. On CPU through ONNX Runtime (:func:`onnx_session`), on CUDA through torch."""
    n = len(x)
    logits, embedding = np.empty((n, eat.N_AUDIOSET), np.float32), np.empty((n, eat.EMBEDDING_DIMS), np.float32)
    if not torch.cuda.is_available():
        session = onnx_session()
        for lo in range(0, n, CHUNK_CLIPS):
            xb = np.ascontiguousarray(x[lo : lo + CHUNK_CLIPS, None], dtype=np.float32)
            logits[lo : lo + len(xb)], embedding[lo : lo + len(xb)] = session.run(None, {"logmel": xb})
        return logits, embedding
    net = pretrained_network()
    with torch.inference_mode():
        for lo in range(0, n, CHUNK_CLIPS):
            xb = torch.as_tensor(x[lo : lo + CHUNK_CLIPS], dtype=torch.float32).to("cuda")
            got = net(xb[:, None])
            logits[lo : lo + len(xb)], embedding[lo : lo + len(xb)] = (t.float().cpu().numpy() for t in got)
    return logits, embedding


@functools.cache
def embedding_model_id(layer: str = DEFAULT_LAYER) -> str:
    """Id of an embedding space: network, layer and a hash of the weights (``mn04_as-embedding-1a2b3c4d5e6f``)."""
    digest = hashlib.sha256(eat.pretrained_path(PRETRAINED).read_bytes()).hexdigest()[:12]
    return f"{PRETRAINED}-{layer}-{digest}"


def efficientat_input(clips: np.ndarray, *, sr: int, logmel: bool = True) -> np.ndarray:
    """EfficientAT's log-mel of clips (n_clips, n_samples) at ``sr`` Hz: (n_clips, 128, frames) float32.

    Clips at another rate are resampled to 32 kHz first (soxr, high quality); then
    :func:`mgr_batch.models.efficientat.efficientat_logmel` (with ``logmel=False``, the 32 kHz clips themselves).
    """
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    if sr != SR:
        import soxr

        clips = np.ascontiguousarray(soxr.resample(clips.T, sr, SR, quality="HQ").T, dtype=np.float32)
    return eat.efficientat_logmel(clips, sr=SR) if logmel else clips


def embed_logmel(x: np.ndarray, *, layer: str = DEFAULT_LAYER) -> np.ndarray:
    """Embeddings (n, LAYERS[layer]) float32 of EfficientAT inputs ``x`` (n, 128, frames) (:func:`network_outputs`)."""
    logits, embedding = network_outputs(x)
    return embedding if layer == "embedding" else logits


def efficientat_embedding(clips: np.ndarray, *, sr: int, layer: str = DEFAULT_LAYER) -> np.ndarray:
    """Pre-trained EfficientAT embedding of each clip: (n_clips, n_samples) at ``sr`` Hz -> (n_clips, dims) float32."""
    if layer not in LAYERS:
        raise ConfigError(f"unknown EfficientAT embedding layer {layer!r} (known: {', '.join(LAYERS)})")
    if len(clips) == 0:
        return np.zeros((0, LAYERS[layer]), np.float32)
    return embed_logmel(efficientat_input(clips, sr=sr), layer=layer)


#: The decode tasks' half of ``efficientat_embedding`` when the network runs in the inference actor: its log-mel.
INPUT_FEATURES = FeatureConfig(kind="efficientat_logmel")


def splits_into_actor(cfg: FeatureConfig, *, sr: int) -> bool:
    """Whether features ``cfg`` at ``sr`` Hz can be split: log-mel (:data:`INPUT_FEATURES`) in the decode
    tasks, the pre-trained network in the inference actor (see :func:`embed_inputs`)."""
    return cfg.kind == "efficientat_embedding" and sr == SR


def embed_inputs(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The ``efficientat_embedding`` features ``cfg`` (n, dims, 1) of EfficientAT log-mel inputs ``x`` (n, 128, frames)."""
    return embed_logmel(x, layer=embedding_layer(cfg))[:, :, None]


def _logmel_shape(n: int, *, sr: int, cfg: FeatureConfig) -> tuple[int, int]:
    if sr != SR:
        raise ConfigError(f"efficientat_logmel needs audio at {SR} Hz (the 'efficientat' preset), got sr={sr}")
    if cfg.params:
        raise ConfigError(f"efficientat_logmel takes no params, got {sorted(cfg.params)}")
    return eat.N_MELS, eat.n_frames(n)


def _efficientat_logmel(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    return eat.efficientat_logmel(clips, sr=sr)


def _embedding_shape(n: int, *, sr: int, cfg: FeatureConfig) -> tuple[int, int]:
    return LAYERS[embedding_layer(cfg)], 1


def _efficientat_embedding(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    return efficientat_embedding(clips, sr=sr, layer=embedding_layer(cfg))[:, :, None]


#: This module's feature kinds (see :data:`mgr_batch.features.registry.PRETRAINED`).
KINDS = {
    "efficientat_logmel": (
        _efficientat_logmel,
        _logmel_shape,
        "EfficientAT's input at 32 kHz: pre-emphasis, 128-band Kaldi mel of 0-15 kHz, (ln(mel + 1e-5) "
        "+ 4.5) / 5 (128 x frames)",
    ),
    "efficientat_embedding": (
        _efficientat_embedding,
        _embedding_shape,
        "pre-trained EfficientAT mn04_as (AudioSet) embedding of the clip (dims x 1); params: layer "
        f"({', '.join(f'{k} {v}' for k, v in LAYERS.items())}; default {DEFAULT_LAYER})",
    ),
}
