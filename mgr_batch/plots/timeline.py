"""A song's genre belief over time (the ``timeline`` table of ``tag --timeline``), read back and drawn as a PNG."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mgr_batch.errors import ConfigError
from mgr_batch.io import output as tables
from mgr_batch.io import schemas, storage
from mgr_batch.plots import figure as plots


@dataclass(frozen=True)
class SongTimeline:
    """One song's timeline: ``probabilities`` (n_steps, n_genres) at ``time_s`` (n_steps,), sorted by time."""

    song_id: str
    path: str
    genre: str  # the song-level top-1 genre (songs table)
    model_id: str
    genres: tuple[str, ...]
    time_s: np.ndarray
    probabilities: np.ndarray
    clip_start_s: np.ndarray  # (n_clips,) start of each clip, s


def _read(
    output: str, table: str, filter: pc.Expression, so: dict[str, Any] | None, columns: list[str] | None = None
) -> pa.Table:
    data = tables.dataset(output, table, so)
    if data is None:
        raise ConfigError(
            f"{output!r} has no {table}/ table" + (" (tag it with --timeline)" if table == "timeline" else "")
        )
    return data.to_table(columns=columns, filter=filter)


def read_timeline(output: str, *, song: str, storage_options: dict[str, Any] | None = None) -> SongTimeline:
    """The timeline of ``song`` (its ``song_id`` or its path as listed) in the tag output ``output``.

    The genre order is that of the songs table's probability columns (the model's).
    """
    songs = _read(output, "songs", (pc.field("song_id") == song) | (pc.field("path") == song), storage_options)
    if songs.num_rows == 0:
        raise ConfigError(f"song {song!r} is not in {output}/songs (give its song_id or its path as listed)")
    row = songs.slice(0, 1).to_pylist()[0]
    n_fixed = len(schemas.spec("songs")["columns"])
    prefix = schemas.spec("songs")["genre_columns"]["prefix"]
    genres = tuple(name[len(prefix) :] for name in songs.schema.names[n_fixed:])
    steps = _read(
        output,
        "timeline",
        pc.field("song_id") == row["song_id"],
        storage_options,
        columns=["clip_index", "step_index", "time_s", "probabilities"],
    )
    if steps.num_rows == 0:
        raise ConfigError(f"song {song!r} has no rows in {output}/timeline (was it tagged without --timeline?)")
    steps = steps.sort_by([("time_s", "ascending"), ("clip_index", "ascending"), ("step_index", "ascending")])
    probs = np.asarray(steps.column("probabilities").combine_chunks().flatten(), np.float32).reshape(steps.num_rows, -1)
    if probs.shape[1] != len(genres):
        raise ConfigError(f"{output}/timeline has {probs.shape[1]} genres per step but songs has {len(genres)}")
    clips = _read(output, "clips", pc.field("song_id") == row["song_id"], storage_options, columns=["start_s"])
    return SongTimeline(
        song_id=row["song_id"],
        path=row["path"],
        genre=row["genre"],
        model_id=row["model_id"],
        genres=genres,
        time_s=steps.column("time_s").to_numpy(),
        probabilities=probs,
        clip_start_s=np.sort(clips.column("start_s").to_numpy()),
    )


def timeline_png(tl: SongTimeline, *, width: float = 12.0, height: float = 5.0) -> bytes:
    """PNG bytes of ``tl``: each genre's probability over time, stacked (every step sums to 1).

    Clip starts are dotted lines; the title gives the path, the song-level genre and the model.
    """
    plt = plots.pyplot()

    colours = plt.get_cmap("tab10" if len(tl.genres) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(width, height))
    ax.stackplot(
        tl.time_s,
        tl.probabilities.T,
        labels=tl.genres,
        colors=[colours(j % colours.N) for j in range(len(tl.genres))],
        linewidth=0,
    )
    for start in tl.clip_start_s[1:]:
        ax.axvline(start, color="white", linestyle=":", linewidth=0.8)
    left = float(min(tl.time_s.min(), tl.clip_start_s.min(initial=np.inf)))
    ax.set_xlim(left, max(float(tl.time_s.max()), left + 1e-3))
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("genre probability (stacked)")
    ax.set_title(f"{tl.path}\nsong genre: {tl.genre}   ({tl.model_id}, {len(tl.time_s)} steps)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()  # top of the legend = top of the stack
    ax.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return plots.png(fig)


def plot_timeline(output: str, *, song: str, png: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Draw ``song``'s timeline from the tag output ``output`` into ``png`` (a local path or URL); returns a summary."""
    tl = read_timeline(output, song=song, storage_options=storage_options)
    storage.write_bytes_atomic(png, timeline_png(tl), storage_options)
    return {"song_id": tl.song_id, "path": tl.path, "genre": tl.genre, "n_steps": len(tl.time_s), "png": png}
