"""Training: featurize labelled songs with Ray Data, fit with Ray Train's TorchTrainer, save a checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
from ray.data.expressions import col
from ray.train import CheckpointConfig, DataConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from mgr_batch.config import OptimConfig, TrainConfig
from mgr_batch.errors import ConfigError
from mgr_batch.evaluation import datasets
from mgr_batch.evaluation.calibration import fit_calibration
from mgr_batch.evaluation.metrics import accuracy_summary
from mgr_batch.execution.progress import SETTINGS, say
from mgr_batch.execution.records import write_config
from mgr_batch.execution.runtime import ray_session
from mgr_batch.execution.tag import featurized
from mgr_batch.execution.train_loop import train_loop
from mgr_batch.io import storage
from mgr_batch.models import checkpoint, model_info
from mgr_batch.models.checkpoint import ModelSpec
from mgr_batch.stages.training import (
    epoch_line,
    explode_clips,
    song_level_summary,
)

log = logging.getLogger(__name__)


def run_train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data``; writes the checkpoint (model.pt, config.json) to ``cfg.output``."""
    model_info(cfg.model.name)  # an unknown --model-type fails before any work
    files = datasets.labelled(
        cfg.data, cfg.storage_options, train_list=cfg.train_list, valid_list=cfg.valid_list, extensions=cfg.extensions
    )
    spec = training_spec(files, cfg)
    with ray_session(cfg.ray, trains=True):
        return fit(featurized_songs(files, spec, cfg), files, spec, cfg)


def training_spec(files: pd.DataFrame, cfg: TrainConfig) -> ModelSpec:
    """The model spec for training on ``files``: genres from the config or the labels, checked."""
    genres = tuple(cfg.genres) if cfg.genres else tuple(sorted(files["label"].unique()))
    datasets.check_labels(files["label"], genres)
    spec = ModelSpec(genres=genres, audio=cfg.audio, clips=cfg.clips, features=cfg.features, model=cfg.model)
    spec.build()  # fail fast on bad hyper-parameters
    return spec


def featurized_songs(files: pd.DataFrame, spec: ModelSpec, cfg: TrainConfig) -> ray.data.Dataset:
    """Materialized per-song features (with ``label`` and ``split``) of labelled ``files``."""
    say(f"featurizing {len(files)} songs ({cfg.preset} features)")
    return featurized(
        files[["path", "song_id", "size", "mtime", "label", "split"]],
        spec=spec,
        clip_cfg=cfg.clips,
        inference=cfg.inference,
        storage_options=cfg.storage_options,
    ).materialize()


def fit(songs: ray.data.Dataset, files: pd.DataFrame, spec: ModelSpec, cfg: TrainConfig) -> dict[str, Any]:
    """Train on the ``train`` songs of featurized ``songs`` (scoring ``valid`` ones); save to ``cfg.output``.

    ``files`` is the listing ``songs`` came from, with the same ``split`` column.
    """
    started = time.time()
    datasets.check_no_leakage(files)
    n_split = files["split"].value_counts().to_dict()
    if not n_split.get("train"):
        raise ConfigError("no training songs: the split gives 0 files to 'train'")
    log.info("training %s on %s songs (%s)", cfg.model.name, len(files), n_split)
    failed = (
        songs.filter(expr=col("status") != "ok")
        .select_columns(["path", "error_stage", "error_type", "error_message"])
        .take_all()
    )
    for row in failed:
        log.warning("skipping %s: %s: %s", row["path"], row["error_type"], row["error_message"])
    if spec.family == "classic":
        return fit_classic(songs, files, spec, cfg, n_failed=len(failed), started=started)
    parts = clip_datasets(songs, spec, splits=[s for s in ("train", "valid") if n_split.get(s)], seed=cfg.optim.seed)
    n_clips = {split: ds.count() for split, ds in parts.items()}
    score_attribute = "valid_song_accuracy" if "valid" in parts else "epoch"
    epochs = EpochLines(cfg.optim.epochs)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "spec": spec.to_json(),
            "optim": _asdict(cfg.optim),
            "has_valid": "valid" in parts,
            "steps_per_epoch": -(-n_clips["train"] // (cfg.optim.batch_size * cfg.num_workers)),
            "init_state": _init_state(spec, cfg),
            "progress": epochs.queue,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=cfg.run_name,
            **_run_storage(cfg),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2,
                checkpoint_score_attribute=score_attribute,
                checkpoint_score_order="max",
            ),
        ),
        datasets=parts,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    with epochs:
        result = trainer.fit()
    # Ray keeps the best `num_to_keep` checkpoints, in no order we should rely on: pick the best ourselves.
    kept = result.best_checkpoints or [(result.checkpoint, result.metrics)]
    best_ckpt, best_metrics = max(
        kept, key=lambda cm: (cm[1].get(score_attribute, float("-inf")), cm[1].get("epoch", 0))
    )
    with best_ckpt.as_directory() as d:
        state = torch.load(os.path.join(d, "train_state.pt"), map_location="cpu", weights_only=True)
    with result.checkpoint.as_directory() as d:  # the latest checkpoint holds the whole history
        with open(os.path.join(d, "history.json")) as f:
            history = json.load(f)
    model = spec.build()
    model.load_state_dict(state["model"])
    extra = {
        "n_clips": n_clips,
        "optim": _asdict(cfg.optim),
        "num_workers": cfg.num_workers,
        "use_gpu": cfg.use_gpu,
        "best_epoch": int(best_metrics.get("epoch", 0)),
        "history": history,
    }
    metrics = {k: v for k, v in best_metrics.items() if k.startswith(("valid_", "train_"))}
    return _save(model, spec, cfg, files, extra | {"n_failed_songs": len(failed)}, metrics, started)


#: Columns of the clip rows each split's Train workers read.
CLIP_COLUMNS = {
    "train": ["features", "label", "clip_key", "song_key"],
    "valid": ["features", "label", "song_id"],
}


def clip_datasets(
    songs: ray.data.Dataset, spec: ModelSpec, *, splits: list[str], seed: int
) -> dict[str, ray.data.Dataset]:
    """Materialized clip rows of each of ``splits`` of featurized ``songs`` (:data:`CLIP_COLUMNS`), the train
    split globally shuffled. ``features`` is a fixed-shape tensor column of ``spec.input_shape``."""
    # Materialized: the Train workers may hold every CPU, so ingest must need no task.
    return {
        split: _shuffled(
            songs.map_batches(
                explode_clips,
                fn_kwargs=dict(genres=spec.genres, split=split, shape=spec.input_shape),
                batch_format="numpy",
            ).select_columns(CLIP_COLUMNS[split]),
            seed=seed if split == "train" else None,
        ).materialize()
        for split in splits
    }


class EpochLines:
    """A queue (:attr:`queue`, None when progress is off) the training loop's rank 0 puts each epoch's
    metrics on, and, inside ``with``, a driver thread that prints them as they arrive, one line each."""

    def __init__(self, n_epochs: int) -> None:
        self.n_epochs = n_epochs
        self.queue = Queue(actor_options={"num_cpus": 0}) if SETTINGS.enabled else None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._show, name="mgr-batch-epochs", daemon=True)

    def __enter__(self) -> EpochLines:
        if self.queue is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.queue is not None:
            self._done.set()
            self._thread.join()
            self.queue.shutdown()

    def _show(self) -> None:
        while True:
            try:
                metrics = self.queue.get(timeout=0.5)
            except Empty:
                if self._done.is_set():
                    return
                continue
            say(epoch_line(metrics, self.n_epochs))


def _save(
    model,
    spec: ModelSpec,
    cfg: TrainConfig,
    files: pd.DataFrame,
    extra: dict[str, Any],
    metrics: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Write the checkpoint and its train config to ``cfg.output``; returns what the command prints."""
    so = cfg.storage_options
    n_split = files["split"].value_counts().to_dict()
    train_info = {
        "data_manifest_hash": datasets.manifest_hash(files),
        "n_songs": {k: int(v) for k, v in n_split.items()},
        "preset": cfg.preset,
        **extra,
        "wall_seconds": round(time.time() - started, 1),
        # Stems of the training songs, so `evaluate` can refuse to score a model on its own training data.
        "train_songs": datasets.training_songs(files),
    }
    saved = checkpoint.save(cfg.output, model, _with(spec, train=train_info, metrics=metrics), so)
    write_config(cfg.output, cfg, so, name="train_config.yaml")
    return {
        "model_id": saved.model_id,
        "output": cfg.output,
        "metrics": metrics,
        **{k: v for k, v in train_info.items() if k != "train_songs"},
    }


def _clips(songs: ray.data.Dataset, genres: tuple[str, ...], split: str) -> dict[str, np.ndarray]:
    """All clips of ``split`` as numpy: ``features`` (n, n_features, n_steps), ``label``, ``song_id``."""
    parts = list(
        songs.map_batches(explode_clips, fn_kwargs=dict(genres=genres, split=split), batch_format="numpy")
        .select_columns(["features", "label", "song_id"])
        .iter_batches(batch_size=None, batch_format="numpy")
    )
    parts = [p for p in parts if len(p["label"])]
    if not parts:
        return {"features": np.zeros((0, 0)), "label": np.zeros(0, np.int64), "song_id": np.zeros(0, str)}
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in ("features", "label", "song_id")}


def fit_classic(
    songs: ray.data.Dataset, files: pd.DataFrame, spec: ModelSpec, cfg: TrainConfig, *, n_failed: int, started: float
) -> dict[str, Any]:
    """Fit a scikit-learn model on the train clips Ray Data featurized (grid search grouped by song)."""
    train = _clips(songs, spec.genres, "train")
    if not len(train["label"]):
        raise ConfigError("no training clips: every training song failed to decode")
    model = spec.build()
    model.seed = cfg.optim.seed
    model.fit(train["features"], train["label"], groups=train["song_id"])
    calibrated = fit_calibration(model, train) if model.calibrate else {}
    metrics: dict[str, Any] = {}
    valid = _clips(songs, spec.genres, "valid") if "valid" in set(files["split"]) else None
    if valid is not None and len(valid["label"]):
        summary = accuracy_summary(model.predict_proba(valid["features"]), valid["song_id"], valid["label"])
        if model.song_level:  # the head's own song probabilities, not the mean of its clips'
            summary |= song_level_summary(model, valid)
        metrics = {f"valid_{k}": v for k, v in summary.items()}
    extra = {
        "n_clips": {"train": int(len(train["label"])), **({"valid": int(len(valid["label"]))} if valid else {})},
        "best_params": model.best_params,
        "n_failed_songs": n_failed,
    }
    log.info("fitted %s %s; %s", spec.model.name, model.best_params, metrics)
    if calibrated:
        spec = _with(spec, calibration=calibrated)
    return _save(model, spec, cfg, files, extra, metrics, started)


def _shuffled(ds: ray.data.Dataset, *, seed: int | None) -> ray.data.Dataset:
    """Globally shuffled (listings come sorted by genre folder; a local buffer alone cannot mix them)."""
    return ds if seed is None else ds.random_shuffle(seed=seed)


def _asdict(optim: OptimConfig) -> dict[str, Any]:
    return dict(optim.__dict__)


def _with(spec: ModelSpec, **changes: Any) -> ModelSpec:
    return dataclasses.replace(spec, **changes)


def _run_storage(cfg: TrainConfig) -> dict[str, Any]:
    """Ray Train's storage arguments: a local path as is; a URL through our fsspec filesystem, so the same
    ``--storage-option`` endpoint and credentials reach Ray Train's checkpoint uploads."""
    if not cfg.storage_path or not storage.is_remote(cfg.storage_path):
        return {"storage_path": cfg.storage_path}
    import pyarrow.fs

    fs, path = storage.filesystem(cfg.storage_path, cfg.storage_options)
    return {"storage_path": path, "storage_filesystem": pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))}


def _init_state(spec: ModelSpec, cfg: TrainConfig) -> bytes | None:
    """Weights of ``cfg.model.init_from`` that fit ``spec``'s model (same name and shape), as torch bytes."""
    if not cfg.model.init_from:
        return None
    source, _ = checkpoint.load(cfg.model.init_from, cfg.storage_options)
    if not isinstance(source, torch.nn.Module):
        raise ConfigError(f"--init-from {cfg.model.init_from!r} is not a neural network checkpoint")
    own = spec.build().state_dict()
    fits = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    if not any(not k.startswith("head.") for k in fits):
        raise ConfigError(f"no layer of {cfg.model.init_from!r} fits model {spec.model.name!r}")
    log.info("starting from %s: %d of %d tensors", cfg.model.init_from, len(fits), len(own))
    return checkpoint.weights_bytes_of(fits)
