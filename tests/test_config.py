"""mgr_batch.config: typed dicts in, unknown keys out, YAML round trips, merging, redaction."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from mgr_batch import config
from mgr_batch.config import (
    AudioConfig,
    ClipConfig,
    FeatureConfig,
    InferenceConfig,
    ModelConfig,
    OptimConfig,
    TagConfig,
    TrainConfig,
    from_dict,
)
from mgr_batch.errors import ConfigError


def test_defaults():
    assert from_dict(TrainConfig, None) == TrainConfig()
    assert from_dict(TagConfig, {}) == TagConfig()


@pytest.mark.parametrize(
    "cls, data, where",
    [
        (AudioConfig, {"sr": 22050, "samplerate": 1}, "samplerate"),
        (TrainConfig, {"optim": {"epochs": 3, "learning_rate": 1.0}}, "optim.learning_rate"),
        (TagConfig, {"inference": {"batch": 3}}, "inference.batch"),
        (TagConfig, {"clips": {"clip_second": 3}}, "clips.clip_second"),
        (TrainConfig, {"features": {"n_mel": 64}}, "features.n_mel"),
    ],
)
def test_unknown_keys_are_rejected_by_full_name(cls, data, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        from_dict(cls, data)


@pytest.mark.parametrize(
    "inference", [{"in_decode_tasks": True, "num_gpus": 1}, {"in_decode_tasks": True, "embed_in_actor": True}]
)
def test_inference_in_decode_tasks_excludes_what_needs_the_actors(inference):
    with pytest.raises(ConfigError, match="in_decode_tasks"):
        from_dict(TagConfig, {"inference": inference})


def test_a_section_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ConfigError, match="optim"):
        from_dict(TrainConfig, {"optim": 3})


def test_nested_values_are_coerced():
    cfg = from_dict(
        TrainConfig,
        {
            "genres": ["rock", "jazz"],
            "clips": {"clip_seconds": 3, "hop_seconds": 1},
            "features": {"n_mels": 64, "fmax": 8000},
            "optim": {"lr": 1, "epochs": 2},
            "model": {"name": "cnn", "params": {"channels": [4, 8]}},
        },
    )
    assert cfg.genres == ("rock", "jazz")
    assert cfg.clips == ClipConfig(clip_seconds=3.0, hop_seconds=1.0)
    assert isinstance(cfg.clips.clip_seconds, float) and isinstance(cfg.clips.hop_seconds, float)
    assert isinstance(cfg.features.fmax, float) and cfg.features.fmax == 8000.0
    assert isinstance(cfg.optim.lr, float)
    assert cfg.model == ModelConfig(name="cnn", params={"channels": [4, 8]})


def test_a_string_for_a_tuple_field_is_not_split_into_characters():
    try:
        cfg = from_dict(TrainConfig, {"genres": "blues,rock"})
    except ConfigError:
        return
    assert cfg.genres == ("blues", "rock")


def test_optional_section_none_stays_none():
    assert from_dict(TagConfig, {"clips": None}).clips is None
    assert from_dict(TagConfig, {"clips": {"clip_seconds": 5}}).clips == ClipConfig(clip_seconds=5.0)


@pytest.mark.parametrize("clip_seconds, hop_seconds, hop", [(3.0, None, 3.0), (3.0, 1.5, 1.5), (10.0, 10.0, 10.0)])
def test_clip_hop(clip_seconds, hop_seconds, hop):
    assert ClipConfig(clip_seconds=clip_seconds, hop_seconds=hop_seconds).hop == hop


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AudioConfig().sr = 16000


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(),
        TrainConfig(
            data="s3://bucket/gtzan",
            genres=("blues", "rock"),
            clips=ClipConfig(clip_seconds=5.0, hop_seconds=2.5),
            features=FeatureConfig(n_mels=64, fmax=8000.0),
            model=ModelConfig(params={"channels": [4, 8], "dropout": 0.1}),
            optim=OptimConfig(epochs=2, lr=0.01),
            storage_options={"anon": True},
        ),
        TagConfig(
            input="/music", output="/out", clips=ClipConfig(clip_seconds=10.0), inference=InferenceConfig(num_workers=4)
        ),
    ],
)
def test_yaml_round_trip(cfg, tmp_path):
    text = config.dump_yaml(cfg)
    (tmp_path / "cfg.yaml").write_text(text)
    again = from_dict(type(cfg), config.load_yaml(tmp_path / "cfg.yaml"))
    assert again == cfg
    assert config.dump_yaml(again) == text


def test_to_dict_is_plain():
    data = config.to_dict(TrainConfig(genres=("a", "b")))
    assert data["genres"] == ["a", "b"]
    assert data["clips"]["clip_seconds"] == 3.0 and data["clips"]["hop_seconds"] is None
    assert data["clips"]["segmentation"]["window_seconds"] == 2.0
    yaml.safe_dump(data)  # no Python-only types


def test_load_yaml_none_is_empty():
    assert config.load_yaml(None) == {}


def test_load_yaml_empty_file_is_empty(tmp_path):
    (tmp_path / "e.yaml").write_text("")
    assert config.load_yaml(tmp_path / "e.yaml") == {}


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load_yaml(tmp_path / "list.yaml")


def test_merge_ignores_none_and_merges_deeply():
    base = {"input": "a", "inference": {"batch_size": 64, "num_workers": 1}, "ray": {"address": None}}
    overrides = {"input": None, "output": "o", "inference": {"num_workers": 4, "batch_size": None}, "ray": None}
    merged = config.merge(base, overrides)
    assert merged == {
        "input": "a",
        "output": "o",
        "inference": {"batch_size": 64, "num_workers": 4},
        "ray": {"address": None},
    }
    assert base == {"input": "a", "inference": {"batch_size": 64, "num_workers": 1}, "ray": {"address": None}}


def test_merge_replaces_non_mappings():
    assert config.merge({"a": {"b": 1}}, {"a": 3}) == {"a": 3}
    assert config.merge({}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert config.merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert config.merge({"a": 1}, {"a": 0}) == {"a": 0}  # falsy but not None: kept
    assert config.merge({"a": True}, {"a": False}) == {"a": False}


def test_merge_puts_a_mapping_over_a_scalar():
    assert config.merge({"a": 3}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_redacted_hides_secrets():
    cfg = TagConfig(
        input="s3://b/in",
        storage_options={
            "key": "AKIAXXXX",
            "secret": "s3cr3t",
            "token": "tok",
            "Password": "pw",
            "aws_secret_access_key": "x",
            "endpoint_url": "http://127.0.0.1:5000",
            "anon": False,
        },
    )
    clean = config.redacted(cfg)
    assert clean.storage_options == {
        "key": "***",
        "secret": "***",
        "token": "***",
        "Password": "***",
        "aws_secret_access_key": "***",
        "endpoint_url": "http://127.0.0.1:5000",
        "anon": False,
    }
    assert cfg.storage_options["secret"] == "s3cr3t"  # the original is untouched
    assert "s3cr3t" not in config.dump_yaml(clean)
    assert clean.input == cfg.input


def test_redacted_without_options_is_the_same():
    cfg = TrainConfig()
    assert config.redacted(cfg) is cfg
    assert config.redacted(AudioConfig()) == AudioConfig()


def test_redacted_hides_nested_secrets():
    cfg = TagConfig(
        storage_options={"client_kwargs": {"endpoint_url": "http://127.0.0.1:5000", "aws_secret_access_key": "s3cr3t"}}
    )
    assert "s3cr3t" not in config.dump_yaml(config.redacted(cfg))
