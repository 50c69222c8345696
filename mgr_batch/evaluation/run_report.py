"""The run report: ``OUT/report/index.html`` (one self-contained page, figures inline as PNG) and ``report.md``.

It reads only the columns it shows (``pyarrow.dataset`` over the parts mgr-batch's own readers see), so a
million-song output costs a few columns, not its tables. For an ``evaluate`` output (``metrics.json`` beside
``tags/``) the page also shows the metrics, the confusion matrix and a reliability diagram.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as pads

from mgr_batch.config import ReportConfig
from mgr_batch.errors import CheckpointError, InputNotFoundError
from mgr_batch.evaluation.page import Figure, Page
from mgr_batch.evaluation.report import HEADLINE_METRICS, confusion_png
from mgr_batch.io import output, schemas, storage
from mgr_batch.plots import figure as plots
from mgr_batch.plots.reliability import reliability_png
from mgr_batch.plots.timeline import SongTimeline, timeline_png

REPORT_DIR = "report"
SONG_COLUMNS = ["song_id", "path", "genre", "confidence", "certainty", "duration_s", "analyzed_s"]
#: Example paths shown per error type.
EXAMPLES = 3
#: Genres drawn as small multiples at most (the most frequent ones).
MAX_GENRE_PANELS = 12
#: Songs drawn on the catalog map at most: a larger catalog is drawn from a sample of this many.
MAP_SONGS = 5000


def _columns(data: pads.Dataset | None, columns: list[str], filter: pc.Expression | None = None) -> pd.DataFrame:
    """Those of ``columns`` the table has (outputs of older runs may lack some), read with :func:`output.frame`."""
    return output.frame(data, columns if data is None else [c for c in columns if c in data.schema.names], filter)


def _songs(data: pads.Dataset | None, columns: list[str]) -> pd.DataFrame:
    """Those of ``columns`` the songs table has, and each row's part in ``file`` (categorical), in one pass."""
    if data is None:
        return pd.DataFrame(columns=[*columns, "file"])
    return output.read_table(data, [c for c in columns if c in data.schema.names], with_file=True).to_pandas()


def _read_json(uri: str, so: dict[str, Any] | None) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_text(uri, so))
    except InputNotFoundError:
        return None


def _genres(dataset: pads.Dataset | None) -> tuple[str, ...]:
    """The model's genre order: the parts' metadata, else the songs table's ``p_`` columns."""
    if dataset is None:
        return ()
    meta = schemas.read_part_metadata(dataset.schema.metadata)
    if meta["genres"]:
        return meta["genres"]
    return schemas.probability_genres(dataset.schema.names)


def build(out: str, so: dict[str, Any] | None = None, cfg: ReportConfig | None = None) -> dict[str, Any]:
    """Write ``out/report/index.html``, ``report.md`` and its PNGs for the tag or evaluate output ``out``; returns the counts shown."""
    started = time.time()
    cfg = cfg or ReportConfig()
    metrics = _read_json(storage.join(out, "metrics.json"), so)
    tables = storage.join(out, "tags") if metrics is not None else out
    run = _read_json(storage.join(out, "run.json"), so) or {}
    songs_ds = output.dataset(tables, "songs", so)
    genres = _genres(songs_ds)
    uncertain = songs_ds is not None and "uncertain" in songs_ds.schema.names
    songs = _songs(songs_ds, SONG_COLUMNS + (["uncertain"] if uncertain else []))
    uncertain = uncertain and bool(songs["uncertain"].notna().any())  # null throughout: a model with no threshold
    errors = _columns(output.dataset(tables, "errors", so), ["path", "stage", "error_type"])
    page = Page(title=f"mgr-batch report: {out}")
    shown = _counts(page, songs, errors)
    _genre_section(page, songs, genres, uncertain, cfg)
    _map_section(page, tables, songs, uncertain, so)
    _duration_section(page, songs)
    _timeline_section(page, tables, songs, genres, so, cfg)
    if metrics is not None:
        _evaluation_section(page, out, metrics, so)
    config = run.get("config") if run else _config_yaml(out, so)
    _model_card(page, config, run.get("model_id") or (metrics or {}).get("model_id"), so)
    _run_section(page, run, out, so)
    page.write(storage.join(out, REPORT_DIR), so)
    return {**shown, "report": storage.join(out, REPORT_DIR, "index.html"), "seconds": round(time.time() - started, 3)}


def _counts(page: Page, songs: pd.DataFrame, errors: pd.DataFrame) -> dict[str, Any]:
    page.heading("Files by status")
    page.table(["status", "files"], [["tagged", len(songs)], ["error", len(errors)]], counts=["songs", "errors"])
    hours = float(songs["duration_s"].sum()) / 3600 if len(songs) else 0.0
    analyzed = float(songs["analyzed_s"].sum()) / 3600 if len(songs) else 0.0
    page.para(f"Audio: {hours:.2f} hours in the tagged files, {analyzed:.2f} hours analyzed.")
    by_type = errors.groupby("error_type", sort=True) if len(errors) else []
    rows, keys = [], []
    for error_type, group in by_type:
        examples = ", ".join(group["path"].head(EXAMPLES))
        rows.append([error_type, ", ".join(sorted(group["stage"].unique())), examples, len(group)])
        keys.append(f"error:{error_type}")
    if rows:
        page.heading("Errors by type")
        page.table(["error type", "stage", f"example paths (up to {EXAMPLES})", "files"], rows, counts=keys)
    return {
        "n_songs": len(songs),
        "n_errors": len(errors),
        "audio_hours": round(hours, 4),
        "errors_by_type": {r[0]: r[-1] for r in rows},
    }


def _panel_genres(songs: pd.DataFrame, genres: tuple[str, ...]) -> list[str]:
    counts = songs["genre"].value_counts()
    return (
        [g for g in genres if g in counts.index][:MAX_GENRE_PANELS]
        if len(counts) <= MAX_GENRE_PANELS
        else list(counts.index[:MAX_GENRE_PANELS])
    )


def _genre_section(
    page: Page, songs: pd.DataFrame, genres: tuple[str, ...], uncertain: bool, cfg: ReportConfig
) -> None:
    if songs.empty:
        return
    plt = plots.pyplot()
    counts = songs["genre"].value_counts().reindex(list(genres) or None, fill_value=0)
    counts = counts if genres else songs["genre"].value_counts()
    page.heading("Genres")
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(counts) + 1.2))
    bars = ax.barh(list(counts.index)[::-1], counts.to_numpy()[::-1], color="#4878a8")
    ax.bar_label(bars, labels=[str(v) for v in counts.to_numpy()[::-1]], padding=3, fontsize=8)
    ax.set_xlabel("songs")
    ax.set_title("songs by top-1 genre")
    page.figure(Figure("genres", "Songs by top-1 genre", plots.png(fig)))
    header = ["genre", "share"] + (["share uncertain"] if uncertain else []) + ["songs"]
    rows = []
    for g, n in counts.items():
        share = n / len(songs)
        extra = (
            [float(songs.loc[songs["genre"] == g, "uncertain"].fillna(False).mean()) if n else 0.0] if uncertain else []
        )
        rows.append([g, share, *extra, int(n)])
    page.table(header, rows, counts=[f"genre:{g}" for g in counts.index])
    if uncertain:
        page.para(
            f"Uncertain songs (the model's own flag): {float(songs['uncertain'].fillna(False).mean()):.1%} of the tagged songs."
        )
    else:
        page.para("This model gives no `uncertain` flag per song; see certainty below.")
    shown = _panel_genres(songs, genres or tuple(counts.index))
    for column, label, bins in (
        ("confidence", "confidence (top-1 probability)", np.linspace(0, 1, 21)),
        ("certainty", "certainty log10(p1/p2)", None),
    ):
        values = songs[column].astype(float)
        edges = bins if bins is not None else np.linspace(0, max(float(values.max()), 1e-3), 21)
        cols = min(4, len(shown))
        nrows = -(-len(shown) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.2 * nrows), squeeze=False, sharex=True)
        for ax, g in zip(axes.flat, shown, strict=False):
            ax.hist(values[songs["genre"] == g], bins=edges, color="#4878a8")
            ax.set_title(f"{g} ({int((songs['genre'] == g).sum())})", fontsize=9)
        for ax in list(axes.flat)[len(shown) :]:
            ax.axis("off")
        fig.suptitle(f"{label} by genre", fontsize=11)
        page.figure(Figure(f"{column}_by_genre", f"Histogram of {label} per genre", plots.png(fig)))
    if cfg.songs_per_genre:
        k = cfg.songs_per_genre
        page.heading(f"Songs to listen to: the {k} least certain and the {k} most confident per genre")
        rows = []
        for g in shown:
            of = songs[songs["genre"] == g]
            rows += [
                ["least certain", g, r.path, float(r.confidence), float(r.certainty)]
                for r in of.nsmallest(k, "certainty").itertuples()
            ]
            rows += [
                ["most confident", g, r.path, float(r.confidence), float(r.certainty)]
                for r in of.nlargest(k, "confidence").itertuples()
            ]
        page.table(["which", "genre", "path", "confidence", "certainty"], rows)


def _map_section(page: Page, tables: str, songs: pd.DataFrame, uncertain: bool, so: dict[str, Any] | None) -> None:
    """The stored vectors projected to 2-D (PCA), one point per song coloured by its genre, uncertain ones marked.

    Reads the search copy of the vectors beside the tables (:mod:`mgr_batch.io.similar`, built here when
    missing), memory-mapped, and only the rows of the sample: the :data:`MAP_SONGS` songs of the lowest
    song_id (a hash of the path, so a uniform random choice that stays the same from one report to the next).
    """
    from mgr_batch.io import similar
    from mgr_batch.plots.catalog_map import catalog_map_png, project

    if songs.empty:
        return
    page.heading("Catalog map")
    index = similar.refresh(tables, so)
    if index is None or not index["kinds"]:
        page.para(
            "No stored vectors (no embeddings/ table): tag with a model on pre-trained embeddings (the default) "
            "or with --embeddings to draw the catalog."
        )
        return
    # the kind of vector most songs have; the others are not comparable with it
    counts = {value: similar.read_songs(tables, key, so).num_rows for value, key in index["kinds"].items()}
    kind = max(counts, key=counts.get)
    ids = similar.read_songs(tables, index["kinds"][kind], so).column("song_id").to_numpy(zero_copy_only=False)
    known = songs.drop_duplicates("song_id").set_index("song_id")
    candidates = np.flatnonzero(np.isin(ids, known.index.to_numpy()))
    _, first = np.unique(ids[candidates], return_index=True)  # by song_id; a song stored twice is drawn once
    n_total = len(first)
    rows = np.sort(candidates[first][:MAP_SONGS])
    if len(rows) < 2:
        page.para("Fewer than two songs have a stored vector: nothing to map.")
        return
    matrix = similar.read_matrix(tables, index["kinds"][kind], so)
    points, share = project(np.asarray(matrix[rows]))
    order = ids[rows]
    genres = known.loc[order, "genre"].astype(str).to_numpy()
    flags = known.loc[order, "uncertain"].fillna(False).to_numpy(bool) if uncertain else None
    sample = f"{len(rows):,} of {n_total:,} songs" + (" (a sample)" if len(rows) < n_total else "")
    title = f"Catalog map: {sample}, stored vectors by PCA"
    page.figure(Figure("catalog_map", title, catalog_map_png(points, genres, flags, share=share, title=title)))
    marked = "songs the model flags uncertain drawn as ×" if uncertain else "the model gives no uncertain flag"
    page.para(
        f"Each point is a song: its stored vector ({index.get('kind_column') or 'vector'} {kind}, L2-normalized, "
        f"each dimension standardized) projected on the two principal axes, which hold {share[0]:.0%} and "
        f"{share[1]:.0%} of the variance; coloured by top-1 genre, {marked}. {sample.capitalize()}"
        + (
            ", those of the lowest song_id (a uniform random choice, the same each time)."
            if len(rows) < n_total
            else "."
        )
        + " Songs close together sound alike to the network: a cluster of one colour is a genre the model "
        "separates, mixed colours are where the taxonomy blurs, lone points are outliers worth a listen."
    )


def _duration_section(page: Page, songs: pd.DataFrame) -> None:
    if songs.empty:
        return
    plt = plots.pyplot()
    page.heading("Durations")
    d = songs["duration_s"].astype(float) / 60
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.hist(d, bins=40, color="#4878a8")
    ax.set_xlabel("duration (minutes)")
    ax.set_ylabel("songs")
    page.figure(Figure("durations", "Song durations", plots.png(fig)))
    q = d.quantile([0.0, 0.5, 0.95, 1.0]).to_numpy()
    page.para(f"Duration in minutes: min {q[0]:.2f}, median {q[1]:.2f}, 95th percentile {q[2]:.2f}, max {q[3]:.2f}.")


def _timeline_section(
    page: Page, tables: str, songs: pd.DataFrame, genres: tuple[str, ...], so: dict[str, Any] | None, cfg: ReportConfig
) -> None:
    """The clips' genre probabilities over time for the ``cfg.timelines`` longest songs (clips table, few rows read)."""
    if songs.empty or not cfg.timelines or not genres:
        return
    longest = songs.nlargest(cfg.timelines, "duration_s")
    cols = ["song_id", "start_s", "end_s", *schemas.probability_columns(genres)]
    clips = _song_clips(tables, longest, cols, so)
    if clips.empty:
        return
    page.heading(f"Clip genres over time: the {len(longest)} longest songs")
    for r in longest.itertuples():
        c = clips[clips["song_id"] == r.song_id].sort_values("start_s")
        if c.empty:
            continue
        # each clip's probabilities held flat from its start to its end
        starts, ends = c["start_s"].to_numpy(), c["end_s"].to_numpy()
        probs = c[schemas.probability_columns(genres)].to_numpy(np.float32)
        tl = SongTimeline(
            song_id=r.song_id,
            path=r.path,
            genre=r.genre,
            model_id="clip genres",
            genres=genres,
            time_s=np.column_stack([starts, np.minimum(ends, r.duration_s)]).reshape(-1),
            probabilities=np.repeat(probs, 2, axis=0),
            clip_start_s=starts,
        )
        page.figure(Figure(f"timeline_{r.song_id}", f"Clip genres over time: {r.path}", timeline_png(tl, height=4.0)))


def _song_clips(tables: str, songs: pd.DataFrame, cols: list[str], so: dict[str, Any] | None) -> pd.DataFrame:
    """The clips rows of ``songs`` (rows of :func:`_songs`). A batch's songs and clips parts share a name, so the
    clips parts named like the songs' own are read first; the whole table's ``song_id`` column is scanned only
    when they do not hold every song (after a compaction, whose sorted files let row groups be skipped)."""
    song_ids = list(songs["song_id"])
    wanted = pc.field("song_id").isin(song_ids)
    clips_ds = output.dataset(tables, "clips", so)
    if clips_ds is None:
        return pd.DataFrame(columns=cols)
    by_name = {p.rsplit("/", 1)[-1]: p for p in clips_ds.files}
    near = [by_name[n] for n in sorted({f.rsplit("/", 1)[-1] for f in songs["file"].astype(str)}) if n in by_name]
    if near:
        found = _columns(pads.dataset(near, filesystem=clips_ds.filesystem, format="parquet"), cols, filter=wanted)
        if set(found["song_id"]) >= set(song_ids):
            return found
    return _columns(clips_ds, cols, filter=wanted)


def _evaluation_section(page: Page, out: str, metrics: dict[str, Any], so: dict[str, Any] | None) -> None:
    page.heading("Evaluation")
    keys = [k for k in HEADLINE_METRICS if k in metrics]
    page.table(["metric", "value"], [[k, metrics[k]] for k in keys])
    per = metrics.get("per_genre") or {}
    if per:
        page.table(
            ["genre", "precision", "recall", "f1", "support"],
            [[g, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support")] for g, m in per.items()],
        )
    cm = metrics.get("confusion_matrix")
    if cm:
        page.figure(
            Figure(
                "confusion_matrix",
                "Confusion matrix (rows true, columns predicted)",
                confusion_png(np.array(cm["counts"]), cm["genres"]),
            )
        )
    fs, path = storage.filesystem(storage.join(out, "songs.parquet"), so)
    if fs.exists(path):
        scored = pads.dataset(path, filesystem=fs, format="parquet")
        if {"confidence", "correct"} <= set(scored.schema.names):
            page.figure(
                Figure(
                    "reliability",
                    "Reliability diagram (song confidence against accuracy)",
                    reliability_png(scored.to_table(columns=["confidence", "correct"]).to_pandas()),
                )
            )
    extra = {k: v for k, v in metrics.items() if "calibration" in k or k in ("ece", "brier")}
    if extra:
        page.pre(json.dumps(extra, indent=2, default=str))


def _config_yaml(out: str, so: dict[str, Any] | None) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load(storage.read_text(storage.join(out, "config.yaml"), so)) or {}
    except InputNotFoundError:
        return {}


def _model_card(page: Page, config: dict[str, Any] | None, model_id: str | None, so: dict[str, Any] | None) -> None:
    """The checkpoint's card: ``config["model"]`` of the run (None: the shipped model); none without a run config."""
    from mgr_batch.models import checkpoint

    page.heading("Model")
    if not config:
        page.para(f"Model {model_id or 'unknown'}: the output has no run.json or config.yaml naming its checkpoint.")
        return
    model = config.get("model")
    try:
        spec = checkpoint.load_spec(model, so)
    except (CheckpointError, InputNotFoundError) as exc:
        page.para(f"Model {model_id or model}: its checkpoint could not be read ({exc}).")
        return
    rows = [
        ["model id", spec.model_id],
        ["model", spec.model.name],
        ["genres", ", ".join(spec.genres)],
        ["training data hash", spec.train.get("data_manifest_hash", "n/a")],
    ]
    if isinstance(spec.train.get("n_songs"), dict):
        rows.append(["training songs", ", ".join(f"{k} {v}" for k, v in spec.train["n_songs"].items())])
    rows += [[k, v] for k, v in spec.metrics.items() if isinstance(v, int | float)]
    page.table(["", ""], rows)
    extra = {
        k: v
        for src in (spec.train, spec.metrics)
        for k, v in src.items()
        if "cv" in k.lower() or "calibrat" in k.lower()
    }
    if extra:
        page.para("Cross-validation and calibration recorded in the checkpoint:")
        page.pre(json.dumps(extra, indent=2, default=str))


def _run_section(page: Page, run: dict[str, Any], out: str, so: dict[str, Any] | None) -> None:
    page.heading("Run")
    if run:
        page.para(
            f"Wall time {run.get('wall_seconds', 'n/a')} s; {run.get('n_processed', 'n/a')} files processed, "
            f"{run.get('n_skipped', 'n/a')} skipped as already done."
        )
        page.pre(json.dumps(run.get("config", {}), indent=2, default=str))
    else:
        config = _config_yaml(out, so)
        page.pre(json.dumps(config, indent=2, default=str) if config else "no run.json or config.yaml")
