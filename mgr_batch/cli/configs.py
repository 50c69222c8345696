"""Configs from parsed arguments: each command's flags over its ``--config`` YAML file."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from mgr_batch.config import (
    CompactConfig,
    CVConfig,
    EvaluateConfig,
    ReportConfig,
    SegmentConfig,
    TagConfig,
    TrainConfig,
    from_dict,
    load_yaml,
    merge,
)
from mgr_batch.errors import MgrBatchError
from mgr_batch.features import presets


def _pairs(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``key=value`` flags as a dict, values parsed as YAML (numbers, lists, booleans)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MgrBatchError(f"{flag} wants key=value, got {pair!r}")
        out[key] = yaml.safe_load(value) if value else ""
    return out


def storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """The ``--storage-option key=value`` flags as fsspec storage options."""
    return _pairs(pairs, "--storage-option")


def _flags(args: argparse.Namespace, own: dict[str, Any]) -> dict[str, Any]:
    """A command's ``own`` flags with those every config-building command shares (output, storage, Ray,
    extensions)."""
    return {
        "output": args.output,
        "storage_options": storage_options(args.storage_option) or None,
        "ray": {"address": args.address, "num_cpus": args.num_cpus},
        "extensions": args.extensions,
    } | own


def _over_file(args: argparse.Namespace, own: dict[str, Any]) -> dict[str, Any]:
    """The ``--config`` YAML file's mapping with the flags given over it (flags not given leave it as it is)."""
    return merge(load_yaml(args.config), _flags(args, own))


def _inference(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The ``inference`` block: the command's flags of those ``names``."""
    return {name: getattr(args, name) for name in names}


def _training(args: argparse.Namespace) -> dict[str, Any]:
    """The flags train and cv share: the train config's own, beside :func:`_flags`'."""
    return {
        "data": args.data,
        "train_list": args.train_list,
        "valid_list": args.valid_list,
        "storage_path": args.storage_path,
        "num_workers": args.num_workers,
        "cpus_per_worker": args.cpus_per_worker,
        "preset": args.features,
        "clips": {
            "clip_seconds": getattr(args, "clip_seconds", None),
            "hop_seconds": args.hop_seconds,
            "select": args.clips,
            "crops": args.crops,
        },
        "model": {
            "name": args.model_type,
            "params": _pairs(args.model_param, "--model-param") or None,
            "init_from": args.init_from,
        },
        "optim": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "weight_decay": args.weight_decay,
            "schedule": args.schedule,
        },
    }


def tag_config(args: argparse.Namespace) -> TagConfig:
    clips = {"clip_seconds": args.clip_seconds, "hop_seconds": args.hop_seconds, "select": args.clips}
    merged = _over_file(
        args,
        {
            "input": args.input,
            "model": args.model,
            "force": args.force,
            "timeline": args.timeline,
            "embeddings": args.embeddings,
            "report": args.report,
            "compact": {} if args.compact else None,
            "clips": clips if any(v is not None for v in clips.values()) else None,
            "inference": _inference(args, "batch_size", "num_workers", "num_gpus", "songs_per_task", "precision"),
        },
    )
    if merged.get("clips") is not None and merged["clips"].get("clip_seconds") is None:
        merged["clips"]["clip_seconds"] = 3.0  # hop given alone: the default clip length
    return from_dict(TagConfig, merged)


def train_config(args: argparse.Namespace) -> TrainConfig:
    own = _training(args) | {"run_name": args.run_name, "use_gpu": args.use_gpu}
    return from_dict(TrainConfig, presets.with_preset(_over_file(args, own)))


def segment_config(args: argparse.Namespace) -> SegmentConfig:
    segmentation = {
        "window_seconds": args.window_seconds,
        "n_clusters": args.n_clusters,
        "representative": args.representative,
    }
    own = {
        "input": args.input,
        "plot": args.plot,
        "segmentation": segmentation,
        "inference": _inference(args, "songs_per_task"),
    }
    return from_dict(SegmentConfig, _over_file(args, own))


def evaluate_config(args: argparse.Namespace) -> EvaluateConfig:
    own = {
        "data": args.data,
        "model": args.model,
        "list": args.list,
        "split": args.split,
        "clips": {"select": args.clips},
        "inference": _inference(args, "batch_size", "num_workers", "num_gpus", "precision"),
    }
    return from_dict(EvaluateConfig, _over_file(args, own))


def cv_config(args: argparse.Namespace) -> CVConfig:
    # The YAML is a train config (the same file `train --config` takes), plus optional folds/group_by.
    loaded = load_yaml(args.config)
    own = {k: loaded.pop(k) for k in ("folds", "group_by") if k in loaded}
    train = presets.with_preset(merge(loaded.pop("train", loaded), _flags(args, _training(args))))
    return from_dict(CVConfig, merge(own, {"folds": args.folds, "group_by": args.group_by, "train": train}))


def _given(**values: Any) -> dict[str, Any]:
    """The flags that were given (not None)."""
    return {k: v for k, v in values.items() if v is not None}


def report_config(args: argparse.Namespace) -> ReportConfig:
    return from_dict(ReportConfig, _given(songs_per_genre=args.songs_per_genre, timelines=args.timelines))


def compact_config(args: argparse.Namespace) -> CompactConfig:
    return from_dict(CompactConfig, _given(target_rows=args.target_rows, target_mb=args.target_mb))


def labels_train_config(args: argparse.Namespace):
    """``train OUT --labels ...``: a head fitted on a tag output's stored vectors (no audio, no Ray)."""
    from mgr_batch.config.outputs import LabelsTrainConfig

    own = {
        "tagged": args.data,
        "labels": args.labels,
        "label_map": args.label_map,
        "output": args.output,
        "seed": args.seed,
        "model": {"name": args.model_type or "logreg", "params": _pairs(args.model_param, "--model-param") or None},
        "storage_options": storage_options(args.storage_option) or None,
    }
    return from_dict(LabelsTrainConfig, merge(load_yaml(args.config), own))


def retag_config(args: argparse.Namespace):
    """``retag OUT --model CKPT --output OUT2``."""
    from mgr_batch.config.outputs import RetagConfig

    own = {
        "tagged": args.tagged,
        "model": args.model,
        "output": args.output,
        "storage_options": storage_options(args.storage_option) or None,
        "ray": {"address": args.address, "num_cpus": args.num_cpus},
    }
    return from_dict(RetagConfig, merge({}, own))
