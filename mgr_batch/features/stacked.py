"""Several pre-trained networks' layers of the same clip, side by side (``stacked_embedding``).

``FeatureConfig.params["parts"]`` lists ``"network:layer"`` strings, e.g.
``["MSD_musicnn:penultimate", "efficientat:embedding"]``; a clip's feature is the concatenation of
those embeddings in that order, as (dims, 1). The clips arrive from one decode at the audio config's
sample rate (:func:`required_sr`: the highest any listed network needs); each network resamples them
to its own rate. Each network runs once per clip however many of its layers are listed.

Networks: ``MSD_musicnn`` and ``MTT_musicnn`` (16 kHz, :mod:`mgr_batch.features.musicnn`) and
``efficientat`` (EfficientAT ``mn04_as``, 32 kHz, :mod:`mgr_batch.models.efficientat`; both layers from
one forward pass).

When the networks run in the inference actors (``embed_in_actor``), the decode tasks hand over the
decoded clips themselves (the ``raw`` feature kind, (n, 1, samples)) and :func:`embed_inputs` runs
every network there.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from mgr_batch.config import FeatureConfig
from mgr_batch.errors import ConfigError

KIND = "stacked_embedding"
#: Clips per call of the feature kind: each network chunks its own forward passes.
CHUNK_CLIPS = 16


@dataclass(frozen=True)
class Network:
    """A pre-trained network whose layers are embeddings: its sample rate and its module."""

    name: str
    sr: int
    module: str


NETWORKS = {
    "MSD_musicnn": Network("MSD_musicnn", 16000, "mgr_batch.features.musicnn"),
    "MTT_musicnn": Network("MTT_musicnn", 16000, "mgr_batch.features.musicnn"),
    "efficientat": Network("efficientat", 32000, "mgr_batch.models.efficientat"),
}
#: The shipped default's stack: MSD_musicnn's penultimate layer and EfficientAT's embedding.
DEFAULT_PARTS = ("MSD_musicnn:penultimate", "efficientat:embedding")


#: EfficientAT's layers: the 384-value pooled embedding and the 527 AudioSet logits (one forward gives both).
EFFICIENTAT_LAYERS = {"embedding": 384, "logits": 527}


def _module(net: Network):
    return importlib.import_module(net.module)


def layer_sizes(network: str) -> dict[str, int]:
    """``{layer: dims}`` of ``network``."""
    if network == "efficientat":
        return dict(EFFICIENTAT_LAYERS)
    return dict(_module(NETWORKS[network]).LAYERS)


def efficientat_layers(clips: np.ndarray, *, sr: int, layers: tuple[str, ...]) -> dict[str, np.ndarray]:
    """EfficientAT layers of clips (n, samples) at ``sr`` Hz (resampled to 32 kHz by soxr HQ first; the network
    through :func:`mgr_batch.features.efficientat.network_outputs`): ``{layer: (n, dims) float32}``."""
    import torch

    from mgr_batch.features import efficientat as fe

    if torch.cuda.is_available():  # the log-mel on the GPU too
        resampled = fe.efficientat_input(clips, sr=sr, logmel=False)
        x = fe.eat.efficientat_logmel(torch.from_numpy(resampled).to("cuda"))
    else:
        x = fe.efficientat_input(clips, sr=sr)
    logits, embedding = fe.network_outputs(x)
    got = {"logits": logits, "embedding": embedding}
    return {layer: got[layer] for layer in layers}


def parts(cfg: FeatureConfig) -> tuple[tuple[str, str], ...]:
    """The ``(network, layer)`` pairs of a ``stacked_embedding`` config, checked."""
    params = dict(cfg.params)
    unknown = set(params) - {"parts"}
    if unknown:
        raise ConfigError(f"{KIND} takes the param 'parts', not {sorted(unknown)}")
    raw = params.get("parts", list(DEFAULT_PARTS))
    if isinstance(raw, str) or not raw:
        raise ConfigError(f"{KIND} params.parts must be a non-empty list of 'network:layer' strings")
    out = []
    for item in raw:
        network, sep, layer = str(item).partition(":")
        if not sep or network not in NETWORKS:
            raise ConfigError(f"{KIND} part {item!r} must be 'network:layer', network one of {', '.join(NETWORKS)}")
        sizes = layer_sizes(network)
        if layer not in sizes:
            raise ConfigError(f"{network} has no layer {layer!r} (known: {', '.join(sizes)})")
        out.append((network, layer))
    if len(set(out)) != len(out):
        raise ConfigError(f"{KIND} params.parts lists a layer twice: {raw}")
    return tuple(out)


def dims(cfg: FeatureConfig) -> int:
    """Values per clip of a ``stacked_embedding`` config."""
    return sum(layer_sizes(n)[layer] for n, layer in parts(cfg))


def required_sr(cfg: FeatureConfig) -> int:
    """The decode rate a stack needs: the highest sample rate among its networks."""
    return max(NETWORKS[n].sr for n, _ in parts(cfg))


def network_layers(clips: np.ndarray, *, sr: int, network: str, layers: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Embeddings of clips (n, samples) at ``sr`` Hz by one network: ``{layer: (n, dims) float32}``."""
    if network == "efficientat":
        return efficientat_layers(clips, sr=sr, layers=layers)
    mod = _module(NETWORKS[network])
    return mod.embed_logmel_layers(mod.musicnn_input(clips, sr=sr), pretrained=network, layers=layers)


def stacked_embedding(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    """The stack of each clip (n, samples) at ``sr`` Hz: (n, dims) float32, parts in the listed order."""
    wanted = parts(cfg)
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    if len(clips) == 0:
        return np.zeros((0, dims(cfg)), np.float32)
    by_network: dict[str, dict[str, np.ndarray]] = {}
    for network in dict.fromkeys(n for n, _ in wanted):
        layers = tuple(layer for n, layer in wanted if n == network)
        by_network[network] = network_layers(clips, sr=sr, network=network, layers=layers)
    return np.concatenate([by_network[n][layer] for n, layer in wanted], axis=1)


#: The decode tasks' half of ``stacked_embedding`` when the networks run in the inference actors.
INPUT_FEATURES = FeatureConfig(kind="raw")


def splits_into_actor(cfg: FeatureConfig, *, sr: int) -> bool:
    """Whether ``cfg`` is a stack (its networks can run in the inference actors, on decoded clips)."""
    return cfg.kind == KIND


def embed_inputs(x: np.ndarray, cfg: FeatureConfig, *, sr: int) -> np.ndarray:
    """The ``stacked_embedding`` features (n, dims, 1) of decoded clips ``x`` (n, 1, samples) at ``sr`` Hz."""
    return stacked_embedding(np.asarray(x)[:, 0, :], sr=sr, cfg=cfg)[:, :, None]


def _stacked(clips: np.ndarray, *, sr: int, cfg: FeatureConfig) -> np.ndarray:
    return stacked_embedding(clips, sr=sr, cfg=cfg)[:, :, None]


#: This module's feature kinds (see :data:`mgr_batch.features.registry.PRETRAINED`).
KINDS = {
    KIND: (
        _stacked,
        lambda n, *, sr, cfg: (dims(cfg), 1),
        "several pre-trained networks' embeddings of the clip side by side (dims x 1); params: parts, "
        f"a list of 'network:layer' (networks {', '.join(NETWORKS)}; default {list(DEFAULT_PARTS)})",
    ),
}
