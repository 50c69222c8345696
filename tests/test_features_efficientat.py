"""mgr_batch.features.efficientat: EfficientAT's log-mel and its pre-trained embeddings as feature kinds, the
presets, and the split of the network into the inference actor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgr_batch.config import FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.features import presets
from mgr_batch.features import registry as features
from mgr_batch.features.efficientat import (
    DEFAULT_LAYER,
    INPUT_FEATURES,
    LAYERS,
    SR,
    efficientat_embedding,
    efficientat_input,
    embed_inputs,
    embedding_model_id,
    pretrained_network,
    splits_into_actor,
)
from mgr_batch.features.presets import with_preset
from mgr_batch.models import efficientat as eat
from mgr_batch.models.efficientat import audioset_labels, efficientat_logmel
from mgr_batch.stages.predict import actor_split


def tone(freq: float, seconds: float = 3.0, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def noise(seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def cfg(**params) -> FeatureConfig:
    return FeatureConfig(kind="efficientat_embedding", params=params)


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    return np.stack([tone(440.0), tone(450.0), noise(), tone(2000.0)])


def test_contract_names():
    assert LAYERS == {"embedding": 384, "logits": 527} and SR == 32000 and DEFAULT_LAYER == "embedding"
    assert pretrained_network() is pretrained_network() and not pretrained_network().training


@pytest.mark.parametrize("layer", list(LAYERS))
def test_shape_per_layer(clips, layer):
    out = features.featurize(clips[:2], sr=SR, cfg=cfg(layer=layer))
    assert out.shape == (2, LAYERS[layer], 1) and out.dtype == np.float32 and np.isfinite(out).all()
    assert features.feature_shape(sr=SR, clip_seconds=3.0, cfg=cfg(layer=layer)) == (LAYERS[layer], 1)
    np.testing.assert_array_equal(out[:, :, 0], efficientat_embedding(clips[:2], sr=SR, layer=layer))


def test_layers_are_the_networks_outputs(clips):
    """The layers are the torch network's outputs (the feature kind runs the shipped ONNX export through ONNX
    Runtime on CPU: tools/export_efficientat_onnx.py)."""
    with torch.inference_mode():
        logits, emb = eat.pretrained_network()(torch.from_numpy(efficientat_logmel(clips, sr=SR))[:, None])
    np.testing.assert_allclose(efficientat_embedding(clips, sr=SR), emb.numpy(), atol=1e-4)
    np.testing.assert_allclose(efficientat_embedding(clips, sr=SR, layer="logits"), logits.numpy(), atol=1e-4)
    # the logits layer is AudioSet's tagger: a pure tone is a sine wave, noise is not
    top = [audioset_labels()[i] for i in logits.argmax(dim=1)]
    assert top[0] == top[1] == "Sine wave" and top[2] != "Sine wave"


def test_deterministic_and_independent_of_chunking(clips):
    many = np.concatenate([clips] * 3)  # 12 clips: more than one chunk of 8
    a = features.featurize(many, sr=SR, cfg=cfg())
    np.testing.assert_allclose(a[:4], a[8:], atol=1e-5)  # batches of 8 and of 4: the same up to rounding
    np.testing.assert_allclose(a[:4, :, 0], efficientat_embedding(clips, sr=SR), atol=1e-5)
    assert efficientat_embedding(clips[:0], sr=SR).shape == (0, 384)


def test_other_sample_rates_are_resampled_to_32k():
    at32 = efficientat_embedding(tone(440.0)[None], sr=SR)
    at22 = efficientat_embedding(tone(440.0, sr=22050)[None], sr=22050)
    cos = float(at32[0] @ at22[0] / np.linalg.norm(at32[0]) / np.linalg.norm(at22[0]))
    assert cos > 0.999
    assert efficientat_input(tone(440.0, sr=22050)[None], sr=22050).shape == (1, 128, 300)


@pytest.mark.parametrize(
    "params, match", [({"layer": "penultimate"}, "unknown EfficientAT embedding layer"), ({"depth": 3}, "takes param")]
)
def test_bad_params(params, match):
    with pytest.raises(ConfigError, match=match):
        features.feature_shape(sr=SR, clip_seconds=3.0, cfg=cfg(**params))
    with pytest.raises(ConfigError, match="unknown EfficientAT embedding layer"):
        efficientat_embedding(tone(440.0)[None], sr=SR, layer="max_pool")


def test_logmel_kind_needs_32k_and_no_params():
    x = features.featurize(np.stack([tone(440.0), noise()]), sr=SR, cfg=INPUT_FEATURES)
    assert x.shape == (2, 128, 300) and features.feature_shape(sr=SR, clip_seconds=3.0, cfg=INPUT_FEATURES) == (
        128,
        300,
    )
    with pytest.raises(ConfigError, match="32000 Hz"):
        features.feature_shape(sr=16000, clip_seconds=3.0, cfg=INPUT_FEATURES)
    with pytest.raises(ConfigError, match="no params"):
        features.feature_shape(sr=SR, clip_seconds=3.0, cfg=FeatureConfig(kind="efficientat_logmel", params={"a": 1}))


def test_presets_and_model_id():
    for name, kind in (("efficientat_embedding", "efficientat_embedding"), ("efficientat", "efficientat_logmel")):
        p = presets.preset(name)
        assert (p.audio, p.clips, p.features) == ({"sr": 32000}, {"clip_seconds": 10.0}, {"kind": kind})
        assert presets.DEFAULT_PRESET[kind] in presets.PRESETS
    train = with_preset({"model": {"name": "logreg"}, "preset": "efficientat_embedding"})
    assert (train["audio"]["sr"], train["features"]["kind"]) == (32000, "efficientat_embedding")
    assert presets.default_preset("efficientat", "efficientat") == "efficientat"
    mid = embedding_model_id("logits")
    assert mid.startswith("mn04_as-logits-") and len(mid.rsplit("-", 1)[1]) == 12
    assert embedding_model_id() != mid and embedding_model_id().startswith("mn04_as-embedding-")


@pytest.mark.parametrize("layer", list(LAYERS))
def test_actor_split_gives_the_same_features(clips, layer):
    """The decode tasks' log-mel (INPUT_FEATURES), embedded in the actor, equals the features computed whole."""
    assert splits_into_actor(cfg(layer=layer), sr=SR) and not splits_into_actor(cfg(layer=layer), sr=16000)
    assert not splits_into_actor(INPUT_FEATURES, sr=SR)
    import mgr_batch.features.efficientat as fe
    import mgr_batch.features.musicnn as fm

    assert actor_split(cfg(layer=layer), sr=SR) is fe
    assert actor_split(FeatureConfig(kind="musicnn_embedding"), sr=16000) is fm
    assert actor_split(FeatureConfig(kind="logmel"), sr=SR) is None
    x_mel = features.featurize(clips, sr=SR, cfg=INPUT_FEATURES)
    whole = features.featurize(clips, sr=SR, cfg=cfg(layer=layer))
    np.testing.assert_allclose(embed_inputs(x_mel, cfg(layer=layer)), whole, atol=1e-5)
