"""The name -> model table behind ``--model-type`` and ``mgr-batch models``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mgr_batch.errors import ConfigError


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: how to build it and what it is."""

    name: str
    family: str
    features: str
    study: str
    description: str
    build: Callable[..., nn.Module]
    #: Training settings (``OptimConfig`` fields) this model needs instead of the general defaults; a config
    #: or flag that sets one still wins.
    optim: dict[str, Any] = field(default_factory=dict)


MODELS: dict[str, ModelInfo] = {}


def register(
    name: str, *, family: str, features: str, study: str, description: str, optim: dict[str, Any] | None = None
):
    """Class decorator adding a model to :data:`MODELS`."""

    def deco(cls):
        MODELS[name] = ModelInfo(name, family, features, study, description, cls, dict(optim or {}))
        return cls

    return deco


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``; a clear error for an unknown name."""
    if name not in MODELS:
        raise ConfigError(f"unknown model type {name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def build_model(
    name: str, *, n_classes: int, input_shape: tuple[int, ...], params: dict[str, Any] | None = None
) -> nn.Module:
    """Instantiate model ``name`` for inputs of shape ``input_shape`` (per example) and ``n_classes``."""
    return model_info(name).build(n_classes=n_classes, input_shape=tuple(input_shape), **(params or {}))
