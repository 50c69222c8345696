"""The ``stacked_embedding`` feature kind: several networks' layers of one clip side by side, from one decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgr_batch.config import FeatureConfig
from mgr_batch.errors import ConfigError
from mgr_batch.features import efficientat as fe
from mgr_batch.features import musicnn as fm
from mgr_batch.features import stacked as fs
from mgr_batch.features.presets import preset
from mgr_batch.features.registry import feature_shape, featurize


def _clips(sr: int, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(3 * sr) / sr
    return np.stack(
        [0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.normal(size=t.size) for i in range(n)]
    ).astype(np.float32)


def stack(*parts: str) -> FeatureConfig:
    return FeatureConfig(kind="stacked_embedding", params={"parts": list(parts)})


def test_a_stack_is_its_parts_side_by_side_each_network_resampling_from_one_decode():
    """At 32 kHz, MSD penultimate + MTT taggram + MSD mean_pool equal the single-layer musicnn_embedding
    features of the same 32 kHz clips (each resampled to 16 kHz inside), in the listed order."""
    cfg = stack("MSD_musicnn:penultimate", "MTT_musicnn:taggram", "MSD_musicnn:mean_pool")
    x = _clips(32000)
    got = featurize(x, sr=32000, cfg=cfg)
    assert got.shape == (3, 200 + 50 + 753, 1) == (3, *feature_shape(sr=32000, clip_seconds=3.0, cfg=cfg))
    want = np.concatenate(
        [
            fm.musicnn_embedding(x, sr=32000, pretrained="MSD_musicnn", layer="penultimate"),
            fm.musicnn_embedding(x, sr=32000, pretrained="MTT_musicnn", layer="taggram"),
            fm.musicnn_embedding(x, sr=32000, pretrained="MSD_musicnn", layer="mean_pool"),
        ],
        axis=1,
    )
    np.testing.assert_allclose(got[:, :, 0], want, atol=1e-5)


def test_taggram_is_the_networks_tag_probabilities():
    x = _clips(16000, n=2)
    tags = fm.musicnn_embedding(x, sr=16000, pretrained="MTT_musicnn", layer="taggram")
    net = fm.pretrained_network("MTT_musicnn")
    with torch.inference_mode():
        want = net.tag(torch.from_numpy(fm.musicnn_input(x, sr=16000))).numpy()
    assert tags.shape == (2, 50) and ((tags > 0) & (tags < 1)).all()
    np.testing.assert_allclose(tags, want, atol=1e-6)


def test_the_actor_half_embeds_decoded_clips():
    """Decode tasks send the clips themselves (``raw``, (n, 1, samples)); embed_inputs gives the features."""
    cfg = stack("MSD_musicnn:penultimate", "MTT_musicnn:penultimate")
    x = _clips(16000, n=2)
    raw = featurize(x, sr=16000, cfg=fs.INPUT_FEATURES)
    assert raw.shape == (2, 1, 48000) and fs.splits_into_actor(cfg, sr=16000)
    np.testing.assert_allclose(fs.embed_inputs(raw, cfg, sr=16000), featurize(x, sr=16000, cfg=cfg), atol=1e-6)


def test_the_preset_decodes_at_the_highest_rate_its_networks_need():
    p = preset("musicnn_efficientat")
    cfg = FeatureConfig(**p.features)
    assert p.audio["sr"] == 32000 and fs.parts(cfg) == (("MSD_musicnn", "penultimate"), ("efficientat", "embedding"))
    assert fs.required_sr(stack("MSD_musicnn:penultimate")) == 16000


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"parts": ["MSD_musicnn"]}, "network:layer"),
        ({"parts": ["vggish:embedding"]}, "network:layer"),
        ({"parts": ["MSD_musicnn:logits"]}, "no layer"),
        ({"parts": []}, "non-empty"),
        ({"parts": "MSD_musicnn:penultimate"}, "non-empty"),
        ({"parts": ["MSD_musicnn:penultimate", "MSD_musicnn:penultimate"]}, "twice"),
        ({"layer": "penultimate"}, "param 'parts'"),
    ],
)
def test_bad_parts_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        fs.parts(FeatureConfig(kind="stacked_embedding", params=params))


def test_a_stacks_efficientat_part_is_the_efficientat_embedding_kinds():
    """The stack's EfficientAT layers (both from one forward pass) equal features_efficientat's, clip by clip."""
    x = _clips(22050, n=2)
    got = fs.efficientat_layers(x, sr=22050, layers=("embedding", "logits"))
    for layer in ("embedding", "logits"):
        np.testing.assert_allclose(got[layer], fe.efficientat_embedding(x, sr=22050, layer=layer), atol=1e-4)
