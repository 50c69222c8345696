"""A fitted temperature applied to a model's probabilities: part of its prediction (fitted by
:mod:`mgr_batch.evaluation.calibration`)."""

from __future__ import annotations

import numpy as np


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` of probability rows (..., n_genres); zeros stay zero."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None)) / float(temperature)
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp) * (np.asarray(probs) > 0)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
