"""mgr_batch.features.musicnn: the pre-trained musicnn embedding as a feature kind, and its preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgr_batch.config import FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.features import presets, spectral
from mgr_batch.features import registry as features
from mgr_batch.features.musicnn import (
    DEFAULT_LAYER,
    LAYERS,
    embedding_model_id,
    musicnn_embedding,
    musicnn_input,
    pretrained_network,
    song_embedding,
)
from mgr_batch.features.presets import with_preset
from mgr_batch.models.musicnn import Musicnn

SR = 16000


def tone(freq: float, seconds: float = 3.0, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def noise(seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def cfg(**params) -> FeatureConfig:
    return FeatureConfig(kind="musicnn_embedding", params=params)


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    return np.stack([tone(440.0), tone(450.0), noise(), tone(2000.0)])


@pytest.mark.parametrize("layer", list(LAYERS))
def test_shape_per_layer(clips, layer):
    out = features.featurize(clips[:2], sr=SR, cfg=cfg(layer=layer))
    assert out.shape == (2, LAYERS[layer], 1) and out.dtype == np.float32
    assert features.feature_shape(sr=SR, clip_seconds=3.0, cfg=cfg(layer=layer)) == (LAYERS[layer], 1)
    assert np.isfinite(out).all()


def test_default_is_msd_musicnn_and_the_default_layer(clips):
    out = features.featurize(clips, sr=SR, cfg=cfg())
    assert out.shape == (4, LAYERS[DEFAULT_LAYER], 1)
    np.testing.assert_array_equal(out[:, :, 0], musicnn_embedding(clips, sr=SR, pretrained="MSD_musicnn"))


def test_deterministic_and_independent_of_chunking(clips):
    many = np.concatenate([clips] * 5)  # 20 clips: more than one chunk of 16
    a = features.featurize(many, sr=SR, cfg=cfg(layer="penultimate"))
    b = features.featurize(many, sr=SR, cfg=cfg(layer="penultimate"))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[:4], a[16:20], atol=1e-5)  # the same clip in another chunk


def test_equals_musicnn_embed_on_the_same_logmel(clips):
    x = spectral.log_mel(clips, sr=SR, n_fft=512, hop_length=256, n_mels=96, scale="log1p")
    assert x.shape == (4, 96, 188)
    np.testing.assert_array_equal(x, musicnn_input(clips, sr=SR))
    net = Musicnn(n_classes=50, pretrained="MSD_musicnn").eval()
    with torch.inference_mode():
        ref = net.embed(torch.from_numpy(x))
    for layer in ("max_pool", "mean_pool", "penultimate"):
        np.testing.assert_allclose(
            musicnn_embedding(clips, sr=SR, layer=layer), ref[layer].numpy(), atol=1e-4, rtol=1e-5
        )
    both = musicnn_embedding(clips, sr=SR, layer="max_mean")
    np.testing.assert_allclose(both, np.concatenate([ref["max_pool"], ref["mean_pool"]], axis=1), atol=1e-4, rtol=1e-5)


def test_the_network_is_built_once_per_process():
    assert pretrained_network("MSD_musicnn") is pretrained_network("MSD_musicnn")
    assert not pretrained_network("MSD_musicnn").training


def test_similar_sounds_have_similar_embeddings(clips):
    """Known-answer sanity: 440 and 450 Hz tones are near neighbours (cosine 0.975 when measured), a
    2 kHz tone is farther (0.89) and noise far (0.54); the MSD head on the penultimate layer gives the
    network's own tags."""
    e = musicnn_embedding(clips, sr=SR, layer="max_mean")
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    assert sim[0, 1] > 0.95 and sim[0, 1] > sim[0, 3] > sim[0, 2] + 0.2
    net = pretrained_network("MSD_musicnn")
    with torch.inference_mode():
        tags = net.tag(torch.from_numpy(musicnn_input(clips, sr=SR))).numpy()
        head = torch.sigmoid(net.head(torch.from_numpy(musicnn_embedding(clips, sr=SR, layer="penultimate")))).numpy()
    np.testing.assert_allclose(head, tags, atol=1e-5)


def test_other_sample_rates_are_resampled_to_16k():
    at16 = musicnn_embedding(tone(440.0)[None], sr=SR, layer="mean_pool")
    at22 = musicnn_embedding(tone(440.0, sr=22050)[None], sr=22050, layer="mean_pool")
    cos = float(at16[0] @ at22[0] / np.linalg.norm(at16[0]) / np.linalg.norm(at22[0]))
    assert cos > 0.999


def test_song_embedding_is_the_mean_of_its_clips(clips):
    np.testing.assert_allclose(
        song_embedding(clips[:3], sr=SR), musicnn_embedding(clips[:3], sr=SR).mean(axis=0), atol=1e-6
    )
    assert musicnn_embedding(clips[:0], sr=SR).shape == (0, LAYERS[DEFAULT_LAYER])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"layer": "logits"}, "unknown musicnn embedding layer"),
        ({"pretrained": "MSD_vgg"}, "musicnn network"),
        ({"pretrained": "FMA_musicnn"}, "unknown musicnn model"),
        ({"depth": 3}, "takes params"),
    ],
)
def test_bad_params(params, match):
    with pytest.raises(ConfigError, match=match):
        features.feature_shape(sr=SR, clip_seconds=3.0, cfg=cfg(**params))


def test_preset_and_model_id():
    p = presets.preset("musicnn_embedding")
    assert (p.audio, p.clips, p.features) == ({"sr": 16000}, {"clip_seconds": 3.0}, {"kind": "musicnn_embedding"})
    assert presets.DEFAULT_PRESET["musicnn_embedding"] in presets.PRESETS
    train = with_preset({"model": {"name": "logreg"}, "preset": "musicnn_embedding"})
    assert (train["audio"]["sr"], train["features"]["kind"]) == (16000, "musicnn_embedding")
    mid = embedding_model_id("MSD_musicnn", "max_pool")
    assert mid.startswith("MSD_musicnn-max_pool-") and len(mid.rsplit("-", 1)[1]) == 12
    assert mid == embedding_model_id("MSD_musicnn", "max_pool")
