"""Clip probabilities to song probabilities, and how sure a song's prediction is: pure numpy (the writer's
songs rows are made of them, so they sit in io/, below every layer that uses them)."""

from __future__ import annotations

import numpy as np


def song_probabilities(clip_probs: np.ndarray, *, method: str = "mean") -> np.ndarray:
    """Aggregate one song's clip probabilities (n_clips, n_genres) into (n_genres,).

    ``mean``: mean probability; ``vote``: share of clips whose top-1 is each genre;
    ``log``: softmax of the summed log-probabilities (product of clip probabilities).
    """
    if method == "mean":
        return clip_probs.mean(axis=0)
    if method == "vote":
        votes = np.bincount(clip_probs.argmax(axis=1), minlength=clip_probs.shape[1]).astype(np.float64)
        return votes / votes.sum()
    if method == "log":
        s = np.log(np.clip(clip_probs, 1e-12, None)).sum(axis=0)
        e = np.exp(s - s.max())
        return e / e.sum()
    raise ValueError(f"unknown aggregation {method!r} (mean, vote, log)")


def certainty(probs: np.ndarray) -> np.ndarray:
    """log10(p1 / p2) of probability rows (..., n_genres): how far the top genre leads the second."""
    top2 = np.sort(probs, axis=-1)[..., -2:]
    return np.log10(np.clip(top2[..., 1], 1e-12, None) / np.clip(top2[..., 0], 1e-12, None))
