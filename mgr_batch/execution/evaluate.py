"""Evaluation and cross-validation: the tagging graph over labelled songs, then metrics and reports."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import ray

from mgr_batch.config import ClipConfig, CVConfig, EvaluateConfig, to_dict
from mgr_batch.evaluation import datasets
from mgr_batch.evaluation.report import write_report
from mgr_batch.evaluation.scoring import evaluate_tables
from mgr_batch.execution.progress import say
from mgr_batch.execution.records import write_config, write_json, write_run_record
from mgr_batch.execution.runtime import ray_session
from mgr_batch.execution.tag import tag_featurized, tag_files
from mgr_batch.execution.train import featurized_songs, fit, training_spec
from mgr_batch.io import output, storage
from mgr_batch.io.output_checks import check_output_free
from mgr_batch.models import checkpoint
from mgr_batch.models.checkpoint import ModelSpec
from mgr_batch.stages.decode import LISTING_COLUMNS

log = logging.getLogger(__name__)

HEADLINE = ("song_accuracy", "song_balanced_accuracy", "song_top3_accuracy", "clip_accuracy")


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Tag labelled songs with a model (the same graph as ``tag``) and write metrics and a report."""
    so = cfg.storage_options
    files = datasets.labelled(cfg.data, so, make_split=False, extensions=cfg.extensions)
    files = datasets.restrict(files, list_uri=cfg.list, split=cfg.split, storage_options=so)
    spec = checkpoint.load_spec(cfg.model, so)
    datasets.check_labels(files["label"], spec.genres)
    datasets.check_not_trained_on(files, spec.train.get("train_songs"))
    tags = storage.join(cfg.output, "tags")
    check_output_free(tags, so)
    clip_cfg = cfg.clips or ClipConfig(clip_seconds=spec.clips.clip_seconds)
    with ray_session(cfg.ray):
        counts = tag_files(
            files[list(LISTING_COLUMNS)],
            spec=spec,
            model=cfg.model,
            clip_cfg=clip_cfg,
            inference=cfg.inference,
            output=tags,
            storage_options=so,
            desc="evaluate",
        )
    metrics = score(tags, files, spec, counts, so)
    write_report(cfg.output, metrics, metrics.pop("_songs"), so, title=f"Evaluation of {spec.model_id}")
    write_config(cfg.output, cfg, so)
    return metrics


def score(
    tags: str, files: pd.DataFrame, spec: ModelSpec, counts: dict[str, Any], so: dict[str, Any] | None
) -> dict[str, Any]:
    """Metrics of the songs/ and clips/ tables under ``tags`` against the labels of ``files``."""
    songs = output.read_column_set(tags, "songs", None, so)
    clips = output.read_column_set(tags, "clips", None, so)
    metrics, frame = evaluate_tables(
        songs,
        clips,
        files.set_index("path")["label"],
        spec.genres,
        temperature=spec.temperature,
        uncertain_below=spec.uncertain_below,
    )
    metrics = {
        "model_id": spec.model_id,
        "data_manifest_hash": datasets.manifest_hash(files),
        "n_errors": counts["n_errors"],
        "errors_by_type": counts["errors_by_type"],
        **metrics,
    }
    metrics["_songs"] = frame
    return metrics


def run_cv(cfg: CVConfig) -> dict[str, Any]:
    """K-fold cross-validation by song (groups never straddle folds); a report per fold and mean ± std."""
    tcfg = cfg.train
    files = datasets.labelled(
        tcfg.data,
        tcfg.storage_options,
        train_list=tcfg.train_list,
        valid_list=tcfg.valid_list,
        extensions=tcfg.extensions,
    )
    spec = training_spec(files, tcfg)
    with ray_session(tcfg.ray, trains=True):
        return cross_validate(featurized_songs(files, spec, tcfg), files, spec, cfg)


def cross_validate(songs: ray.data.Dataset, files: pd.DataFrame, spec: ModelSpec, cfg: CVConfig) -> dict[str, Any]:
    """The folds of :func:`run_cv` on already featurized ``songs`` (so several model types can share them)."""
    started = time.time()
    tcfg = cfg.train
    so = tcfg.storage_options
    folds = datasets.grouped_folds(files, folds=cfg.folds, group_by=cfg.group_by, seed=tcfg.optim.seed)
    groups = datasets.group_keys(files, cfg.group_by)
    results = []
    for k in range(cfg.folds):
        fold_dir = storage.join(tcfg.output, f"fold-{k}")
        split = pd.Series(np.where(folds == k, "test", "train"), index=files.index)
        fold_files = files.assign(split=split)
        datasets.check_no_leakage(fold_files.assign(group=groups), groups=("song_id", "stem", "group"))
        key = fold_key(cfg, spec, fold_files)
        done = _finished_fold(fold_dir, key, so)
        if done is not None:
            say(f"fold {k + 1}/{cfg.folds}: already done by an earlier run with the same settings, reusing it")
            results.append(done)
            continue
        _remove(storage.join(fold_dir, "tags"), so)  # rows of an interrupted earlier attempt
        by_song = dict(zip(fold_files["song_id"], fold_files["split"], strict=True))
        fold_songs = songs.map_batches(_assign_split, fn_kwargs={"splits": by_song}, batch_format="numpy").materialize()
        # The key in the run name: an interrupted fold resumes from its last epoch's checkpoint, a changed one starts afresh.
        fold_cfg = dataclasses.replace(
            tcfg, output=storage.join(fold_dir, "model"), run_name=f"{tcfg.run_name}-fold{k}-{key[:8]}"
        )
        say(
            f"fold {k + 1}/{cfg.folds}: training on {(split == 'train').sum()} songs, testing on {(split == 'test').sum()}"
        )
        trained = fit(fold_songs, fold_files, spec, fold_cfg)  # no valid split: the last epoch, no peeking at test
        fold_spec = checkpoint.load_spec(fold_cfg.output, so)
        test = fold_files[fold_files["split"] == "test"]
        counts = tag_featurized(
            fold_songs.filter(expr="split == 'test'"),
            len(test),
            spec=fold_spec,
            model=fold_cfg.output,
            clip_cfg=ClipConfig(clip_seconds=spec.clips.clip_seconds),
            inference=tcfg.inference,
            output=storage.join(fold_dir, "tags"),
            storage_options=so,
            desc=f"fold {k + 1} test",
        )
        metrics = score(storage.join(fold_dir, "tags"), test, fold_spec, counts, so)
        write_report(fold_dir, metrics, metrics.pop("_songs"), so, title=f"Fold {k + 1} of {cfg.folds}")
        results.append(
            {
                "fold": k,
                "model_id": trained["model_id"],
                **{m: metrics[m] for m in HEADLINE},
                "n_songs": metrics["n_songs"],
            }
        )
        say(
            f"fold {k + 1}/{cfg.folds}: song accuracy {100 * metrics['song_accuracy']:.1f}% on {metrics['n_songs']} test songs"
        )
        payload = {"key": key, "result": results[-1]}
        write_json(fold_dir, FOLD_DONE, payload, so)
    summary = {
        "model_type": tcfg.model.name,
        "folds": cfg.folds,
        "group_by": cfg.group_by or ("artist" if "artist" in files.columns else "stem"),
        "n_songs": len(files),
        "data_manifest_hash": datasets.manifest_hash(files),
        "per_fold": results,
        **{
            m: {"mean": float(np.mean([r[m] for r in results])), "std": float(np.std([r[m] for r in results]))}
            for m in HEADLINE
        },
        "wall_seconds": round(time.time() - started, 1),
    }
    write_run_record(tcfg.output, summary, cfg, so, name="cv.json")
    storage.write_bytes_atomic(storage.join(tcfg.output, "cv.md"), cv_markdown(summary).encode(), so)
    return summary


#: Written last in each fold's folder: the fold's result and the key of what produced it.
FOLD_DONE = "fold.json"


def fold_key(cfg: CVConfig, spec: ModelSpec, fold_files: pd.DataFrame) -> str:
    """What a fold's result depends on, hashed: training settings (not where data is read or written, the Ray
    connection or credentials), the model spec, and each song's stem, label and side (train or test)."""
    train = to_dict(cfg.train)
    for volatile in (
        "data",
        "train_list",
        "valid_list",
        "output",
        "storage_path",
        "storage_options",
        "run_name",
        "ray",
    ):
        train.pop(volatile, None)
    model = {k: v for k, v in spec.to_json().items() if k not in ("model_id", "train", "metrics")}
    blob = json.dumps(
        {
            "folds": cfg.folds,
            "group_by": cfg.group_by,
            "train": train,
            "model": model,
            "songs": datasets.manifest_hash(fold_files),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finished_fold(fold_dir: str, key: str, so: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result an earlier run recorded for this fold, if it had the same ``key``; else None."""
    fs, path = storage.filesystem(storage.join(fold_dir, FOLD_DONE), so)
    if not fs.exists(path):
        return None
    done = json.loads(storage.read_text(storage.join(fold_dir, FOLD_DONE), so))
    return done["result"] if done.get("key") == key else None


def _remove(uri: str, so: dict[str, Any] | None) -> None:
    fs, path = storage.filesystem(uri, so)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _assign_split(batch: dict[str, np.ndarray], *, splits: dict[str, str]) -> dict[str, np.ndarray]:
    batch["split"] = np.array([splits[str(s)] for s in batch["song_id"]])
    return batch


def cv_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# {summary['folds']}-fold cross-validation of `{summary['model_type']}`",
        "",
        f"{summary['n_songs']} songs, folds grouped by `{summary['group_by']}` and stratified by genre.",
        "",
        "| metric | mean | std |",
        "|---|---|---|",
    ]
    for m in HEADLINE:
        lines.append(f"| {m} | {summary[m]['mean']:.3f} | {summary[m]['std']:.3f} |")
    lines += ["", "| fold | n songs | " + " | ".join(HEADLINE) + " |", "|---" * (len(HEADLINE) + 2) + "|"]
    for r in summary["per_fold"]:
        lines.append(f"| {r['fold']} | {r['n_songs']} | " + " | ".join(f"{r[m]:.3f}" for m in HEADLINE) + " |")
    return "\n".join(lines) + "\n"
