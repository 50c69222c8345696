"""Probabilities a user can act on: temperature scaling, calibration error, and an uncertainty threshold.

A checkpoint's ``calibration`` (see :class:`mgr_batch.models.checkpoint.ModelSpec`) may hold ``temperature``
(song probabilities become ``softmax(log p / T)``; clip rows get the same ``T``) and ``uncertain_below``
(a song whose certainty, log10(p1 / p2) of its calibrated probabilities, is below it is flagged
``uncertain``). Both are fitted by training on out-of-fold song probabilities of the training songs; the
ECE, flagged share and accuracy of the rest that training records beside them are measured on those same
rows, so they are in-sample for the temperature and threshold and meet the target by construction.
``benchmarks/calibration_oos.py`` measures them on songs that fitted neither.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mgr_batch.models.temperature import apply_temperature
from mgr_batch.plots import figure as plots

#: Bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15
#: Share of unflagged songs that should be right: what ``uncertain_below`` is chosen for on the training songs'
#: out-of-fold probabilities. On songs it was not fitted on, fewer are (see ``benchmarks/calibration_oos.py``).
TARGET_ACCURACY = 0.95
#: Out-of-fold folds used to fit the temperature and the threshold.
CALIBRATION_FOLDS = 5

log = logging.getLogger(__name__)


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimizing the negative log-likelihood of labels ``y`` (n,) under ``probs`` (n, k)."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None))
    y = np.asarray(y, dtype=int)

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def reliability(probs: np.ndarray, y: np.ndarray, *, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per confidence bin (equal width over [0, 1]): ``lo``, ``hi``, ``n``, mean ``confidence``, ``accuracy``."""
    conf, correct = np.asarray(probs).max(axis=1), np.asarray(probs).argmax(axis=1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        m = index == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else None,
                "accuracy": float(correct[m].mean()) if m.any() else None,
            }
        )
    return out


def ece(probs: np.ndarray, y: np.ndarray, *, bins: int = ECE_BINS) -> float | None:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over ``bins`` bins."""
    rows = reliability(probs, y, bins=bins)
    n = sum(r["n"] for r in rows)
    if not n:
        return None
    return float(sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]) / n)


def certainty(probs: np.ndarray) -> np.ndarray:
    """log10(p1 / p2) of probability rows (the songs table's ``certainty``)."""
    from mgr_batch.io.aggregate import certainty as _certainty

    return _certainty(probs)


def uncertainty_threshold(probs: np.ndarray, y: np.ndarray, *, target: float = TARGET_ACCURACY) -> float:
    """The lowest certainty threshold t such that the songs with certainty >= t are right at least ``target``
    of the time (``inf`` if none is: every song would be flagged)."""
    c = certainty(probs)
    correct = np.asarray(probs).argmax(axis=1) == np.asarray(y)
    order = np.argsort(-c, kind="stable")
    c, correct = c[order], correct[order]
    acc = np.cumsum(correct) / np.arange(1, len(c) + 1)  # accuracy of the k most certain songs
    ok = np.flatnonzero(acc >= target)
    if not len(ok):
        return float("inf")
    k = int(ok[-1])  # the largest kept set that meets the target
    return float(c[k])


def flag_summary(probs: np.ndarray, y: np.ndarray, threshold: float | None) -> dict[str, float | None]:
    """Share of songs flagged ``uncertain`` at ``threshold`` and the accuracy of the rest."""
    if threshold is None or not len(y):
        return {"uncertain_share": None, "accuracy_not_uncertain": None, "uncertain_below": threshold}
    keep = certainty(probs) >= threshold
    correct = np.asarray(probs).argmax(axis=1) == np.asarray(y)
    return {
        "uncertain_share": float(1 - keep.mean()),
        "uncertain_below": float(threshold),
        "accuracy_not_uncertain": float(correct[keep].mean()) if keep.any() else None,
    }


def reliability_png(before: np.ndarray, after: np.ndarray | None, y: np.ndarray, *, bins: int = ECE_BINS) -> bytes:
    """PNG of the reliability diagram (accuracy against confidence per bin) before and after calibration."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    for probs, label, marker in ((before, "uncalibrated", "o"), (after, "calibrated", "s")):
        if probs is None:
            continue
        rows = [r for r in reliability(probs, y, bins=bins) if r["n"]]
        ax.plot(
            [r["confidence"] for r in rows],
            [r["accuracy"] for r in rows],
            marker=marker,
            label=f"{label} (ECE {ece(probs, y, bins=bins):.3f})",
        )
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"Reliability of song probabilities ({bins} bins)")
    ax.legend(loc="upper left")
    return plots.png(fig)


def fit_calibration(model, train: dict[str, np.ndarray]) -> dict[str, Any]:
    """Temperature and uncertainty threshold of ``model``, fitted on out-of-fold song probabilities of the
    training songs (:data:`CALIBRATION_FOLDS` folds of whole songs)."""
    probs, labels = model.out_of_fold_song_proba(
        train["features"], train["label"], train["song_id"], folds=CALIBRATION_FOLDS
    )
    temperature = fit_temperature(probs, labels)
    after = apply_temperature(probs, temperature)
    threshold = uncertainty_threshold(after, labels)
    flags = flag_summary(after, labels, threshold)
    info = {
        "method": "temperature",
        "temperature": temperature,
        "uncertain_below": threshold,
        "target_accuracy": TARGET_ACCURACY,
        "n_songs": int(len(labels)),
        "folds": int(min(CALIBRATION_FOLDS, np.bincount(labels)[np.unique(labels)].min())),
        "out_of_fold": {
            "song_accuracy": float((probs.argmax(1) == labels).mean()),
            "ece_before": ece(probs, labels),
            "ece_after": ece(after, labels),
            "uncertain_share": flags["uncertain_share"],
            "accuracy_not_uncertain": flags["accuracy_not_uncertain"],
        },
    }
    log.info("calibration: %s", info)
    return info
