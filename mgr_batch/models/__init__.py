"""Model registry: every network and classifier, selectable by name."""

from __future__ import annotations

from mgr_batch.models import (
    classic,  # noqa: E402,F401  (registers svm, svm_pca, logreg, knn, tree, naive_bayes)
    cnn,  # noqa: E402,F401  (registers its models)
    conv,  # noqa: E402,F401  (registers cnn3, vgg, resnet)
    crnn,  # noqa: E402,F401  (registers crnn)
    efficientat,  # noqa: E402,F401  (registers efficientat)
    feedforward,  # noqa: E402,F401  (registers mlp, ffnn)
    musicnn,  # noqa: E402,F401  (registers musicnn and musicnn_vgg)
    recurrent,  # noqa: E402,F401  (registers rnn, lstm, gru, lstm_seq, lstm_attention, skip_rnn)
)
from mgr_batch.models.registry import MODELS, ModelInfo, build_model, model_info, register

__all__ = ["MODELS", "ModelInfo", "build_model", "model_info", "register"]
