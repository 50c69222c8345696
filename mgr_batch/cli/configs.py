"""Configs from parsed arguments: each command's flags over its ``--config`` YAML file."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from mgr_batch.config import (
    CVConfig,
    EvaluateConfig,
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


def _training_dict(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data": args.data,
        "output": args.output,
        "train_list": args.train_list,
        "valid_list": args.valid_list,
        "storage_path": args.storage_path,
        "storage_options": _storage_options(args.storage_option) or None,
        "num_workers": args.num_workers,
        "cpus_per_worker": args.cpus_per_worker,
        "preset": args.features,
        "clips": {
            "clip_seconds": getattr(args, "clip_seconds", None),
            "hop_seconds": args.hop_seconds,
            "select": args.segmentation,
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
        "ray": {"address": args.address, "num_cpus": args.num_cpus},
    }


def _storage_options(pairs: list[str] | None) -> dict[str, Any]:
    return _pairs(pairs, "--storage-option")


def tag_config(args: argparse.Namespace) -> TagConfig:
    base = load_yaml(args.config)
    clips = {"clip_seconds": args.clip_seconds, "hop_seconds": args.hop_seconds, "select": args.segmentation}
    flags = {
        "input": args.input,
        "output": args.output,
        "model": args.model,
        "force": args.force,
        "timeline": args.timeline,
        "embeddings": args.embeddings,
        "report": args.report,
        "compact": {} if args.compact else None,
        "storage_options": _storage_options(args.storage_option) or None,
        "clips": clips if any(v is not None for v in clips.values()) else None,
        "inference": {
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "num_gpus": args.num_gpus,
            "songs_per_task": args.songs_per_task,
        },
        "ray": {"address": args.address, "num_cpus": args.num_cpus},
    }
    merged = merge(base, flags)
    if merged.get("clips") is not None and merged["clips"].get("clip_seconds") is None:
        merged["clips"]["clip_seconds"] = 3.0  # hop given alone: the default clip length
    return from_dict(TagConfig, merged)


def train_config(args: argparse.Namespace) -> TrainConfig:
    flags = _training_dict(args) | {"run_name": args.run_name, "use_gpu": args.use_gpu}
    return from_dict(TrainConfig, presets.with_preset(merge(load_yaml(args.config), flags)))


def segment_config(args: argparse.Namespace) -> SegmentConfig:
    flags = {
        "input": args.input,
        "output": args.output,
        "plot": args.plot,
        "storage_options": _storage_options(args.storage_option) or None,
        "segmentation": {
            "window_seconds": args.window_seconds,
            "n_clusters": args.n_clusters,
            "representative": args.representative,
        },
        "inference": {"songs_per_task": args.songs_per_task},
        "ray": {"address": args.address, "num_cpus": args.num_cpus},
    }
    return from_dict(SegmentConfig, merge(load_yaml(args.config), flags))


def evaluate_config(args: argparse.Namespace) -> EvaluateConfig:
    flags = {
        "data": args.data,
        "output": args.output,
        "model": args.model,
        "list": args.list,
        "split": args.split,
        "clips": {"select": args.segmentation},
        "storage_options": _storage_options(args.storage_option) or None,
        "inference": {"batch_size": args.batch_size, "num_workers": args.num_workers, "num_gpus": args.num_gpus},
        "ray": {"address": args.address, "num_cpus": args.num_cpus},
    }
    return from_dict(EvaluateConfig, merge(load_yaml(args.config), flags))


def cv_config(args: argparse.Namespace) -> CVConfig:
    # The YAML is a train config (the same file `train --config` takes), plus optional folds/group_by.
    loaded = load_yaml(args.config)
    base = {k: loaded.pop(k) for k in ("folds", "group_by") if k in loaded}
    base["train"] = loaded.pop("train", loaded)
    train = presets.with_preset(merge(base["train"], _training_dict(args)))
    base.pop("train")
    flags = {"folds": args.folds, "group_by": args.group_by, "train": train}
    return from_dict(CVConfig, merge(base, flags))
