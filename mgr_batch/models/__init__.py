"""Model registry: every network and classifier, selectable by name."""

from __future__ import annotations

from mgr_batch.models import (
    cnn,  # noqa: E402,F401  (registers its models)
    musicnn,  # noqa: E402,F401  (registers musicnn and musicnn_vgg)
)
from mgr_batch.models.registry import MODELS, ModelInfo, build_model, model_info, register

__all__ = ["MODELS", "ModelInfo", "build_model", "model_info", "register"]
