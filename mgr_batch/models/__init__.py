"""Model registry: every network and classifier, selectable by name."""

from __future__ import annotations

from mgr_batch.models.registry import MODELS, ModelInfo, build_model, model_info, register

from mgr_batch.models import cnn  # noqa: E402,F401  (registers its models)

__all__ = ["MODELS", "ModelInfo", "build_model", "model_info", "register"]
