"""The run's song counter: the decode tasks report each song as they finish it, the progress bar reads it.

Its own small module, so that the actor's worker imports Ray and nothing of the models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray


@ray.remote(num_cpus=0)
class SongTally:
    """Files decoded, errors and audio seconds so far, as the decode tasks report each song (for the bar)."""

    def __init__(self) -> None:
        self.counts = (0, 0, 0.0)

    def add(self, files: int, errors: int, audio_s: float) -> None:
        f, e, a = self.counts
        self.counts = (f + files, e + errors, a + audio_s)

    def totals(self) -> tuple[int, int, float]:
        return self.counts


class ReportSong:
    """``on_song`` of the decode tasks: one fire-and-forget call to the run's :class:`SongTally` per song."""

    def __init__(self, tally: Any) -> None:
        self.tally = tally

    def __call__(self, row: dict[str, Any]) -> None:
        ok = row["status"] == "ok"
        self.tally.add.remote(1, 0 if ok else 1, float(row.get("analyzed_s") or 0.0) if ok else 0.0)


def poll_tally(tally: Any) -> Callable[[], tuple[int, int, float] | None]:
    """What :class:`mgr_batch.execution.progress.Progress` calls at each redraw: the tally's counts, or None
    while it does not answer (the bar then waits for the next written batch)."""

    def poll() -> tuple[int, int, float] | None:
        try:
            return tuple(ray.get(tally.totals.remote(), timeout=2))
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            return None

    return poll
