"""Shared fixtures: one real local Ray for the whole session, and a tiny untrained checkpoint."""

from __future__ import annotations

import pytest
import torch

from mgr_batch import checkpoint
from mgr_batch.checkpoint import ModelSpec
from mgr_batch.config import GTZAN_GENRES, AudioConfig, ClipConfig, FeatureConfig, ModelConfig

#: The tiny model's features: few mels and a long hop keep every test that featurizes fast.
TINY_FEATURES = FeatureConfig(n_mels=32, hop_length=1024)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray with 2 CPUs, started once (unless one is already up) and shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def tiny_spec() -> ModelSpec:
    return ModelSpec(
        genres=GTZAN_GENRES,
        audio=AudioConfig(),
        clips=ClipConfig(),
        features=TINY_FEATURES,
        model=ModelConfig(name="cnn", params={"channels": [4, 8]}),
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Directory of an untrained, seeded ``cnn`` checkpoint (32 mels, hop 1024, 3 s clips, GTZAN genres)."""
    torch.manual_seed(0)
    spec = tiny_spec()
    directory = tmp_path_factory.mktemp("tiny_model")
    checkpoint.save(str(directory), spec.build(), spec)
    return str(directory)
