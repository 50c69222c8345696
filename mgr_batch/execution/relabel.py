"""Label many ways from one tagging run: ``train --labels`` fits a head on the stored vectors of a tag output
(``retag``, in :mod:`mgr_batch.execution.retag`, applies one to them); neither reads audio."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import posixpath
import time
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from mgr_batch.config import ModelConfig, to_dict
from mgr_batch.config.outputs import LabelsTrainConfig
from mgr_batch.errors import ConfigError, InputNotFoundError
from mgr_batch.io import output, schemas, storage
from mgr_batch.io.writer import META_KINDS
from mgr_batch.models import checkpoint, model_info
from mgr_batch.models.checkpoint import ModelSpec
from mgr_batch.stages import vectors as sv

log = logging.getLogger(__name__)

#: Songs columns a head's groups come from, first present first (songs of one album never straddle two folds).
GROUP_COLUMNS = ("file_album", "file_artist")
#: Songs columns the prediction gives (the rest are copied from the tag output by ``retag``).
PREDICTION_COLUMNS = ("genre", "confidence", "certainty", "uncertain", "top3", "model_id")


# -- reading a tag output --------------------------------------------------------------------------------


def _embeddings(out: str, so: dict[str, Any] | None):
    data = output.dataset(out, "embeddings", so)
    if data is None:
        raise ConfigError(
            f"{out!r} holds no embeddings/ table: tag it with a model on pre-trained embeddings (the default "
            "writes them unless --no-embeddings), or --embeddings"
        )
    return data


def feature_ids(out: str, so: dict[str, Any] | None) -> dict[str, str]:
    """``{feature_id: description}`` of the stored vectors of tag output ``out``."""
    table = _embeddings(out, so).to_table(columns=["feature_id", "feature"])
    ids = pc.unique(table.column("feature_id").combine_chunks())
    first = {}
    for fid in ids.to_pylist():
        at = pc.index(table.column("feature_id"), fid).as_py()
        first[fid] = table.column("feature")[at].as_py()
    return first


def stored_kind_of(out: str, feature_id: str, so: dict[str, Any] | None) -> sv.VectorKind:
    """The :class:`~mgr_batch.stages.vectors.VectorKind` of ``feature_id``, from the embeddings parts' metadata."""
    fs, paths = output.parts(out, "embeddings", so)
    for path in paths:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).schema_arrow.metadata or {}
        kinds = json.loads(meta.get(META_KINDS, b"{}"))
        if feature_id in kinds:
            return sv.VectorKind.from_json(kinds[feature_id])
    raise ConfigError(f"no embeddings part of {out!r} records what vectors {feature_id} are")


def read_label_map(uri: str | None, so: dict[str, Any] | None) -> dict[str, str] | None:
    """A YAML mapping of raw values to labels (``Game music: game``), keys and values as strings."""
    if not uri:
        return None
    try:
        data = yaml.safe_load(storage.read_text(uri, so))
    except InputNotFoundError:
        raise ConfigError(f"--label-map {uri!r}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--label-map {uri!r} is not YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"--label-map {uri!r} must be a YAML mapping of raw values to labels (Game music: game)")
    return {str(k).strip(): ("" if v is None else str(v).strip()) for k, v in data.items()}


def _is_file(spec: str, so: dict[str, Any] | None) -> bool:
    if spec.lower().endswith((".csv", ".tsv", ".txt")):
        return True
    fs, path = storage.filesystem(spec, so)
    return fs.isfile(path)


def read_labels(cfg: LabelsTrainConfig) -> tuple[pd.DataFrame, str]:
    """The labelled songs of ``cfg.tagged``: a frame of ``song_id, path, label`` (one row per song, mapped
    through ``cfg.label_map``; unmapped and empty values left out), and what the labels came from."""
    so = cfg.storage_options
    songs_data = output.dataset(cfg.tagged, "songs", so)
    if songs_data is None:
        raise ConfigError(f"{cfg.tagged!r} holds no songs/ table (is it a tag output?)")
    names = songs_data.schema.names
    if _is_file(cfg.labels, so):
        try:
            given = pd.read_csv(io.StringIO(storage.read_text(cfg.labels, so)), dtype=str, keep_default_na=False)
        except InputNotFoundError:
            raise ConfigError(f"--labels {cfg.labels!r}: no such file") from None
        key = "song_id" if "song_id" in given else "path" if "path" in given else None
        if key is None or "label" not in given:
            raise ConfigError(f"--labels {cfg.labels!r} needs columns 'label' and 'path' or 'song_id'")
        songs = output.frame(songs_data, ["song_id", "path"])
        if key == "path":
            given["song_id"] = _song_ids_of_paths(given["path"], songs)
        raw = given[["song_id", "label"]].rename(columns={"label": "raw"})
        source = f"file {cfg.labels}"
    else:
        if cfg.labels not in names:
            raise ConfigError(
                f"--labels {cfg.labels!r} is neither a CSV file nor a column of the songs table "
                f"(columns: {', '.join(n for n in names if not n.startswith(schemas.PROBABILITY_PREFIX))})"
            )
        raw = output.frame(songs_data, ["song_id", cfg.labels]).rename(columns={cfg.labels: "raw"})
        source = f"songs column {cfg.labels}"
    raw = raw.dropna(subset=["song_id", "raw"])
    raw["raw"] = raw["raw"].astype(str).str.strip()
    mapping = read_label_map(cfg.label_map, so)
    raw["label"] = raw["raw"].map(mapping) if mapping is not None else raw["raw"]
    labelled = raw[raw["label"].notna() & raw["label"].ne("")].drop_duplicates("song_id")
    return labelled[["song_id", "label"]].reset_index(drop=True), source


def _song_ids_of_paths(paths: pd.Series, songs: pd.DataFrame) -> pd.Series:
    """The song id of each labelled path: the songs row of that path, or of the one path that ends with it
    (a path relative to the tagged folder)."""
    exact = dict(zip(songs["path"], songs["song_id"], strict=True))
    by_tail: dict[str, list[str]] = {}
    for p, sid in exact.items():
        parts = p.replace("\\", "/").split("/")
        for k in range(1, min(len(parts), 4) + 1):
            by_tail.setdefault("/".join(parts[-k:]), []).append(sid)

    def one(p: str) -> str | None:
        if p in exact:
            return exact[p]
        found = by_tail.get(p.replace("\\", "/").lstrip("./"), [])
        return found[0] if len(found) == 1 else None

    return paths.map(one)


def check_labels(labels: pd.Series) -> None:
    """At least 2 labels, each of at least 2 songs."""
    counts = labels.value_counts()
    few = counts[counts < 2]
    if len(counts) < 2 or len(few):
        shown = ", ".join(f"{k!r} ({v})" for k, v in (few if len(few) else counts).head(8).items())
        raise ConfigError(
            f"train --labels needs at least 2 labels with at least 2 songs each (with a stored vector); "
            f"got {len(counts)} label(s){': ' + shown if shown else ''}"
        )


# -- train --labels -----------------------------------------------------------------------------------


def run_train_labels(cfg: LabelsTrainConfig) -> dict[str, Any]:
    """Fit a classic head on the stored vectors of the labelled songs of ``cfg.tagged``; save it to
    ``cfg.output`` (a checkpoint ``tag`` and ``retag`` take) with ``train_report.md``/``.json``."""
    started = time.time()
    so = cfg.storage_options
    if model_info(cfg.model.name).family != "classic":
        raise ConfigError(f"train --labels fits a classic head (logreg, svm, knn, ...), not {cfg.model.name!r}")
    data = _embeddings(cfg.tagged, so)
    labelled, source = read_labels(cfg)
    ids = pa.array(labelled["song_id"].tolist(), pa.string())
    table = data.to_table(columns=["song_id", "feature_id", "vector"], filter=pc.field("song_id").isin(ids))
    kinds = Counter(table.column("feature_id").to_pylist())
    if len(kinds) > 1:
        raise ConfigError(f"the labelled songs' vectors are of {len(kinds)} kinds ({dict(kinds)}): retag them first")
    if not kinds:
        raise ConfigError(f"none of the {len(labelled)} labelled songs has a stored vector in {cfg.tagged!r}")
    feature_id = next(iter(kinds))
    frame = table.select(["song_id"]).to_pandas().merge(labelled, on="song_id", how="left")
    check_labels(frame["label"])
    x = sv.vectors_of(table.column("vector"))
    kind = stored_kind_of(cfg.tagged, feature_id, so)
    genres = tuple(sorted(frame["label"].unique()))
    y = frame["label"].map({g: i for i, g in enumerate(genres)}).to_numpy()
    groups, group_by = _groups(cfg, frame["song_id"])

    params = dict(cfg.model.params) | {"pooling": kind.pooling, "calibrate": True}
    spec = ModelSpec(
        genres=genres,
        audio=kind.audio,
        clips=kind.clips,
        features=kind.features,
        model=ModelConfig(name=cfg.model.name, params=params),
    )
    model = spec.build()
    model.seed = cfg.seed
    model.fit_rows(x, y, groups)
    cv, calibrated = _cross_validate(model, x, y, groups, folds=cfg.folds, genres=genres)
    cv["group_by"] = group_by
    n_songs = {g: int(n) for g, n in frame["label"].value_counts().sort_index().items()}
    train_info = {
        "source": f"stored vectors of {cfg.tagged}",
        "labels": source,
        **({"label_map": cfg.label_map} if cfg.label_map else {}),
        "feature_id": feature_id,
        "feature": kind.description,
        "n_songs": {"train": int(len(frame))},
        "n_songs_per_label": n_songs,
        "n_labelled_without_vector": int(len(labelled) - len(frame)),
        "best_params": model.best_params,
        "wall_seconds": round(time.time() - started, 2),
        "train_songs": sorted({posixpath.splitext(posixpath.basename(str(s)))[0] for s in frame["song_id"]}),
    }
    metrics = {
        "cv_song_accuracy": cv["song_accuracy"]["mean"],
        "cv_song_accuracy_std": cv["song_accuracy"]["std"],
        "cv_song_balanced_accuracy": cv["song_balanced_accuracy"]["mean"],
        "cv_song_balanced_accuracy_std": cv["song_balanced_accuracy"]["std"],
        "cv": cv,
    }
    spec = dataclasses.replace(spec, train=train_info, metrics=metrics, calibration=calibrated)
    saved = checkpoint.save(cfg.output, model, spec, so)
    report = {
        "model_id": saved.model_id,
        "output": cfg.output,
        **{k: v for k, v in train_info.items() if k != "train_songs"},
        "metrics": metrics,
        "calibration": calibrated,
        "config": to_dict(cfg),
    }
    storage.write_bytes_atomic(storage.join(cfg.output, "train_report.json"), json.dumps(report, indent=2).encode(), so)
    storage.write_bytes_atomic(storage.join(cfg.output, "train_report.md"), train_report_md(report).encode(), so)
    return report


def _groups(cfg: LabelsTrainConfig, song_ids: pd.Series) -> tuple[np.ndarray, str]:
    """Each labelled song's group for the folds: its ``file_album`` (else ``file_artist``) where the songs
    table has one, else the song itself; and what the groups are."""
    songs = output.dataset(cfg.tagged, "songs", cfg.storage_options)
    for column in GROUP_COLUMNS:
        if column not in songs.schema.names:
            continue
        values = output.frame(songs, ["song_id", column]).drop_duplicates("song_id").set_index("song_id")[column]
        found = song_ids.map(values)
        found = found.where(found.notna() & found.astype(str).str.strip().ne(""))
        if found.notna().any():
            return found.fillna("song:" + song_ids).astype(str).to_numpy(), f"{column} (else the song)"
    return song_ids.astype(str).to_numpy(), "song"


def _cross_validate(model, x, y, groups, *, folds: int, genres: tuple[str, ...]) -> tuple[dict, dict]:
    """K-fold cross-validation of ``model``'s chosen head (folds of whole groups, stratified by label): per-fold
    and mean/std song accuracy and balanced accuracy, and the calibration fitted on the out-of-fold
    probabilities (temperature and ``uncertain`` threshold, as the shipped default's)."""
    from sklearn.metrics import balanced_accuracy_score

    from mgr_batch.evaluation import calibration as cal

    probs, fold = model.out_of_fold_row_proba(x, y, groups, folds=folds)
    pred = probs.argmax(axis=1)
    per_fold = []
    for k in range(int(fold.max()) + 1):
        m = fold == k
        per_fold.append(
            {
                "n": int(m.sum()),
                "song_accuracy": float((pred[m] == y[m]).mean()),
                "song_balanced_accuracy": float(balanced_accuracy_score(y[m], pred[m])),
            }
        )

    def spread(key: str) -> dict[str, float]:
        v = np.array([f[key] for f in per_fold])
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

    temperature = cal.fit_temperature(probs, y)
    after = cal.apply_temperature(probs, temperature)
    threshold = cal.uncertainty_threshold(after, y)
    flags = cal.flag_summary(after, y, threshold)
    cv = {
        "folds": len(per_fold),
        "n_songs": int(len(y)),
        "n_groups": int(len(set(groups.tolist()))),
        "song_accuracy": spread("song_accuracy"),
        "song_balanced_accuracy": spread("song_balanced_accuracy"),
        "per_fold": per_fold,
        "per_label_recall": {g: float((pred[y == i] == i).mean()) for i, g in enumerate(genres) if (y == i).any()},
    }
    calibrated = {
        "method": "temperature",
        "temperature": temperature,
        "uncertain_below": threshold,
        "target_accuracy": cal.TARGET_ACCURACY,
        "n_songs": int(len(y)),
        "folds": len(per_fold),
        "out_of_fold": {
            "song_accuracy": float((pred == y).mean()),
            "ece_before": cal.ece(probs, y),
            "ece_after": cal.ece(after, y),
            "uncertain_share": flags["uncertain_share"],
            "accuracy_not_uncertain": flags["accuracy_not_uncertain"],
        },
    }
    return cv, calibrated


def train_report_md(r: dict[str, Any]) -> str:
    """The training report as Markdown: data, cross-validation (n and spread), calibration."""
    cv, cal = r["metrics"]["cv"], r["calibration"]
    acc, bal = cv["song_accuracy"], cv["song_balanced_accuracy"]
    lines = [
        f"# Head {r['model_id']}",
        "",
        f"Fitted on the stored vectors of `{r['source'].removeprefix('stored vectors of ')}` ({r['feature']}, "
        f"feature {r['feature_id']}); labels from {r['labels']}.",
        f"{cv['n_songs']} songs in {len(r['n_songs_per_label'])} labels; "
        f"{r['n_labelled_without_vector']} labelled songs had no stored vector.",
        "",
        "| label | songs | cross-validated recall |",
        "|---|---|---|",
        *(
            f"| {g} | {n} | {100 * cv['per_label_recall'].get(g, float('nan')):.1f}% |"
            for g, n in r["n_songs_per_label"].items()
        ),
        "",
        f"## Cross-validation ({cv['folds']} folds by song, grouped by {cv['group_by']}; {cv['n_groups']} groups)",
        "",
        f"Song accuracy {100 * acc['mean']:.1f}% ± {100 * acc['std']:.1f} (std over folds), balanced accuracy "
        f"{100 * bal['mean']:.1f}% ± {100 * bal['std']:.1f}.",
        "",
        "| fold | songs | accuracy | balanced accuracy |",
        "|---|---|---|---|",
        *(
            f"| {k + 1} | {f['n']} | {100 * f['song_accuracy']:.1f}% | {100 * f['song_balanced_accuracy']:.1f}% |"
            for k, f in enumerate(cv["per_fold"])
        ),
        "",
        "## Calibration (out-of-fold)",
        "",
        f"Temperature {cal['temperature']:.3f}; ECE {cal['out_of_fold']['ece_before']:.3f} before, "
        f"{cal['out_of_fold']['ece_after']:.3f} after. Songs with certainty below {cal['uncertain_below']:.3f} "
        f"are flagged `uncertain` ({_pct(cal['out_of_fold']['uncertain_share'])} of these songs; the others "
        f"right {_pct(cal['out_of_fold']['accuracy_not_uncertain'])} of the time, target "
        f"{100 * cal['target_accuracy']:.0f}%).",
        "",
    ]
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def train_summary(r: dict[str, Any]) -> list[str]:
    acc = r["metrics"]["cv"]["song_accuracy"]
    return [
        f"Fitted {r['model_id']} on {r['n_songs']['train']} songs' stored vectors "
        f"({len(r['n_songs_per_label'])} labels, from {r['labels']}) in {r['wall_seconds']:.1f} s",
        f"Cross-validated song accuracy {100 * acc['mean']:.1f}% ± {100 * acc['std']:.1f} "
        f"({r['metrics']['cv']['folds']} folds, grouped by {r['metrics']['cv']['group_by']})",
        f"Checkpoint and train_report.md in {r['output']}; use it with: mgr-batch retag OUT --model {r['output']} "
        "--output OUT2",
    ]
