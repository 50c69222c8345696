"""Evaluation outputs: metrics.json, per_genre.csv, songs.parquet, confusion_matrix.png, report.md."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd

from mgr_batch.evaluation import calibration as cal
from mgr_batch.io import schemas, storage
from mgr_batch.plots import figure as plots

#: The metrics a report shows first, in this order (``evaluate`` prints them too).
HEADLINE_METRICS = (
    "n_songs",
    "n_clips",
    "n_errors",
    "song_accuracy",
    "song_balanced_accuracy",
    "song_top3_accuracy",
    "clip_accuracy",
)


def per_genre_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    rows = [{"genre": g, **v} for g, v in metrics["per_genre"].items()]
    return pd.DataFrame(rows, columns=["genre", "precision", "recall", "f1", "support", "mean_certainty"])


def confusion_png(counts: np.ndarray, genres: list[str]) -> bytes:
    """PNG of the confusion matrix: counts (left) and row-normalized (right)."""
    plt = plots.pyplot()

    counts = np.asarray(counts, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, data, title, fmt in (
        (axes[0], counts, "counts", "{:.0f}"),
        (axes[1], norm, "row-normalized (recall)", "{:.2f}"),
    ):
        ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(len(genres)), genres, rotation=45, ha="right")
        ax.set_yticks(range(len(genres)), genres)
        ax.set_xlabel("predicted genre")
        ax.set_ylabel("true genre")
        ax.set_title(title)
        top = data.max() or 1.0
        for i in range(len(genres)):
            for j in range(len(genres)):
                if data[i, j]:
                    ax.text(
                        j,
                        i,
                        fmt.format(data[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if data[i, j] > top / 2 else "black",
                    )
    return plots.png(fig)


def _fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(metrics: dict[str, Any], songs: pd.DataFrame, *, title: str = "Evaluation", mistakes: int = 10) -> str:
    """The Markdown report: headline, aggregations, per-genre certainty vs recall, confusion, mistakes."""
    genres = metrics["confusion_matrix"]["genres"]
    lines = [
        f"# {title}",
        "",
        f"Model `{metrics.get('model_id', '')}` on data manifest `{metrics.get('data_manifest_hash', '')}`.",
        "",
    ]
    lines += ["| metric | value |", "|---|---|"]
    for key in HEADLINE_METRICS:
        lines.append(f"| {key} | {_fmt(metrics.get(key))} |")
    if metrics.get("aggregations"):
        lines += [
            "",
            "## Song-level aggregation of clips",
            "",
            "| method | song accuracy | balanced accuracy |",
            "|---|---|---|",
        ]
        for method, m in metrics["aggregations"].items():
            lines.append(f"| {method} | {_fmt(m['song_accuracy'])} | {_fmt(m['song_balanced_accuracy'])} |")
    c = metrics.get("calibration") or {}
    if c:
        lines += [
            "",
            f"## Calibration (song probabilities, {c['bins']} bins)",
            "",
            "| | value |",
            "|---|---|",
            f"| expected calibration error before calibration | {_fmt(c['ece_uncalibrated'])} |",
            f"| expected calibration error as written | {_fmt(c['ece'])} |",
            f"| temperature | {_fmt(c['temperature'])} |",
            f"| uncertain threshold (certainty below) | {_fmt(c['uncertain_below'])} |",
            f"| share of songs flagged uncertain | {_fmt(c['uncertain_share'])} |",
            f"| accuracy of the songs not flagged | {_fmt(c['accuracy_not_uncertain'])} |",
            "",
            "![reliability diagram](reliability.png)",
        ]
    lines += [
        "",
        "## Per genre (certainty = mean log10(p1/p2) over the genre's songs)",
        "",
        "| genre | support | precision | recall | f1 | mean certainty |",
        "|---|---|---|---|---|---|",
    ]
    for g, m in metrics["per_genre"].items():
        lines.append(
            f"| {g} | {m['support']} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | {_fmt(m['mean_certainty'])} |"
        )
    lines += [
        "",
        "## Confusion matrix (rows: true, columns: predicted)",
        "",
        "| | " + " | ".join(genres) + " |",
        "|---" * (len(genres) + 1) + "|",
    ]
    for g, row in zip(genres, metrics["confusion_matrix"]["counts"], strict=True):
        lines.append(f"| **{g}** | " + " | ".join(str(c) for c in row) + " |")
    wrong = songs[~songs["correct"]].sort_values("confidence", ascending=False).head(mistakes)
    lines += [
        "",
        f"## Most confident mistakes ({len(wrong)} of {int((~songs['correct']).sum())})",
        "",
        "| path | true | predicted | confidence | certainty |",
        "|---|---|---|---|---|",
    ]
    for _, r in wrong.iterrows():
        lines.append(
            f"| {r['path']} | {r['label']} | {r['predicted']} | {r['confidence']:.3f} | {r['certainty']:.3f} |"
        )
    lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
    return "\n".join(lines)


def write_report(
    directory: str,
    metrics: dict[str, Any],
    songs: pd.DataFrame,
    storage_options: dict[str, Any] | None = None,
    *,
    title: str = "Evaluation",
) -> None:
    """Write the five evaluation outputs under ``directory`` (local or URL)."""

    def put(name: str, data: bytes) -> None:
        storage.write_bytes_atomic(storage.join(directory, name), data, storage_options)

    put("metrics.json", json.dumps(metrics, indent=2).encode())
    put("per_genre.csv", per_genre_frame(metrics).to_csv(index=False).encode())
    buf = io.BytesIO()
    songs.to_parquet(buf, index=False)
    put("songs.parquet", buf.getvalue())
    put(
        "confusion_matrix.png",
        confusion_png(np.array(metrics["confusion_matrix"]["counts"]), metrics["confusion_matrix"]["genres"]),
    )
    c = metrics.get("calibration") or {}
    if c:
        genres = metrics["confusion_matrix"]["genres"]
        y = songs["label"].map({g: i for i, g in enumerate(genres)}).to_numpy()
        after = songs[schemas.probability_columns(genres)].to_numpy(np.float64)
        before = cal.apply_temperature(after, 1.0 / c["temperature"]) if c.get("temperature") else None
        put(
            "reliability.png",
            cal.reliability_png(before if before is not None else after, after if before is not None else None, y),
        )
    put("report.md", markdown(metrics, songs, title=title).encode())
