"""Clip probabilities to song probabilities, and how sure a song's prediction is (see :mod:`mgr_batch.io.aggregate`)."""

from __future__ import annotations

from mgr_batch.io.aggregate import certainty, song_probabilities

__all__ = ["certainty", "song_probabilities"]
