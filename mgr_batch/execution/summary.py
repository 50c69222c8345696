"""The few lines a person reads at the end of a command (``--json`` prints the result itself instead)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from mgr_batch.execution.progress import hours
from mgr_batch.io import storage


def _errors(by_type: dict[str, int]) -> str:
    n = sum(by_type.values())
    if not n:
        return "no errors"
    return f"{n} error{'s' * (n != 1)} (" + ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())) + ")"


def _cores(config: dict[str, Any]) -> int | None:
    """CPUs of the embedded Ray the command ran on; None on a cluster (``--address`` or a Ray job)."""
    ray_cfg = config.get("ray") or {}
    if ray_cfg.get("address") or os.environ.get("RAY_ADDRESS"):
        return None
    return ray_cfg.get("num_cpus") or os.cpu_count()


def _speed(audio_s: float, wall_s: float, cores: int | None) -> str:
    """Audio seconds per wall second (the inverse of the real-time factor), overall and per core."""
    if not audio_s or not wall_s:
        return ""
    x = audio_s / wall_s
    per_core = f", {x / cores:.1f}x per core ({cores} CPUs)" if cores else ""
    return f": {x:.1f}x real time{per_core}"


def _read_command(table: str, columns: list[str]) -> str:
    return f"python -c \"import pandas as pd; print(pd.read_parquet('{table}')[{columns!r}])\""


def tag(r: dict[str, Any]) -> list[str]:
    out, this = r["output"], r["this_run"]
    skipped = f", {r['n_skipped']} already done" if r["n_skipped"] else ""
    lines = [
        f"Tagged {this['n_songs']} songs ({this['n_clips']} clips) of {r['n_files']} files{skipped}; "
        f"{_errors(this['errors_by_type'])}",
        f"Audio {hours(this['audio_seconds'])} in {hours(r['wall_seconds'])}"
        f"{_speed(this['audio_seconds'], r['wall_seconds'], _cores(r['config']))}",
    ]
    if r.get("ignored_by_kind"):
        kinds = ", ".join(f"{k} {n}" for k, n in r["ignored_by_kind"].items())
        lines.append(
            f"Not audio, skipped: {r['ignored_non_audio_files']} files ({kinds}); --extensions widens the list"
        )
    if r["n_skipped"]:
        lines.append(f"Output now holds {r['n_songs']} songs, {r['n_errors']} errors in all")
    extra = [t for t, n in (("timeline", r["n_timeline_steps"]), ("embeddings", r["n_embeddings"])) if n]
    tables = ["songs", "clips", "errors", *extra]
    lines.append(f"Tables: {', '.join(t + '/' for t in tables)} under {out} (Parquet), with run.json")
    lines.append("Read: " + _read_command(storage.join(out, "songs"), ["path", "genre", "confidence"]))
    return lines


def segment(r: dict[str, Any]) -> list[str]:
    out = r["output"]
    return [
        f"Segmented {r['n_songs']} songs into {r['n_segments']} segments of {r['n_files']} files; "
        f"{_errors(r['errors_by_type'])}; {hours(r['wall_seconds'])}",
        f"Tables: segments/, errors/ under {out} (Parquet), with run.json",
        "Read: " + _read_command(storage.join(out, "segments"), ["path", "start_s", "end_s", "is_representative"]),
    ]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def train(r: dict[str, Any]) -> list[str]:
    m = r.get("metrics") or {}
    best = f", best epoch {r['best_epoch']}" if "best_epoch" in r else ""
    valid = (
        f"; valid song accuracy {_pct(m['valid_song_accuracy'])}" if "valid_song_accuracy" in m else "; no valid split"
    )
    failed = f", {r['n_failed_songs']} songs failed to decode" if r.get("n_failed_songs") else ""
    songs = ", ".join(f"{v} {k}" for k, v in (r.get("n_songs") or {}).items())
    return [
        f"Trained {r['model_id']} on {songs} songs{failed} in {hours(r['wall_seconds'])}{best}{valid}",
        f"Model: {r['output']}; use it with: mgr-batch tag FOLDER --output OUT --model {r['output']}",
    ]


def evaluate(r: dict[str, Any], output: str) -> list[str]:
    errors = f"; {r['n_errors']} files failed" if r["n_errors"] else ""
    return [
        f"Scored {r['model_id']} on {r['n_songs']} songs ({r['n_clips']} clips){errors}",
        f"Song accuracy {_pct(r['song_accuracy'])}, balanced {_pct(r['song_balanced_accuracy'])}, "
        f"top-3 {_pct(r['song_top3_accuracy'])}; clip accuracy {_pct(r['clip_accuracy'])}",
        f"Report: {storage.join(output, 'report.md')} (metrics.json, per_genre.csv, confusion_matrix.png beside it)",
    ]


def cv(r: dict[str, Any], output: str) -> list[str]:
    acc = r["song_accuracy"]
    return [
        f"{r['folds']}-fold cross-validation of {r['model_type']} on {r['n_songs']} songs (grouped by {r['group_by']}) "
        f"in {hours(r['wall_seconds'])}",
        f"Song accuracy {_pct(acc['mean'])} ± {_pct(acc['std'])}, balanced {_pct(r['song_balanced_accuracy']['mean'])}",
        f"Report: {storage.join(output, 'cv.md')} (cv.json, and a folder per fold)",
    ]


#: command -> lines of its summary from (result, output)
SUMMARIES: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "tag": lambda r, _: tag(r),
    "segment": lambda r, _: segment(r),
    "train": lambda r, _: train(r),
    "evaluate": evaluate,
    "cv": cv,
}
