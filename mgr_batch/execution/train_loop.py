"""The Ray Train worker loop: AdamW + a cosine schedule over the train shard; rank 0 scores and checkpoints."""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint

from mgr_batch.config import OptimConfig, from_dict
from mgr_batch.evaluation.metrics import evaluate_valid
from mgr_batch.models.checkpoint import ModelSpec
from mgr_batch.stages.training import ShardTally, lr_schedule, unwrap

log = logging.getLogger(__name__)

#: Rows each worker shuffles among, every epoch, on top of the one global shuffle.
LOCAL_SHUFFLE_ROWS = 1024


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop: AdamW + cosine schedule; rank 0 scores the valid split and checkpoints."""
    spec = ModelSpec.from_json(config["spec"])
    optim = from_dict(OptimConfig, config["optim"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(optim.seed + rank)
    np.random.seed(optim.seed + rank)
    device = ray.train.torch.get_device()
    net = spec.build()
    if config.get("init_state"):  # transfer learning: the layers whose names and shapes fit
        net.load_state_dict(
            torch.load(io.BytesIO(config["init_state"]), map_location="cpu", weights_only=True), strict=False
        )
    if device.type == "cpu" and getattr(net, "TRAIN_CHANNELS_LAST", True):
        # oneDNN trains most of our CNNs faster channels-last (s per batch, 2 threads: cnn 0.31 vs 0.53,
        # cnn3 0.54 vs 0.74, vgg 0.18 vs 0.24); models where it is slower say so (musicnn)
        net = net.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(net)
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    sched, per_batch = lr_schedule(opt, optim, steps_per_epoch=max(1, int(config.get("steps_per_epoch", 1))))
    start_epoch, history = 0, []
    resume = ray.train.get_checkpoint()
    if resume:  # Ray Train V2 resumes from the run's latest checkpoint (same storage path and name)
        with resume.as_directory() as d:
            state = torch.load(os.path.join(d, "train_state.pt"), map_location=device, weights_only=True)
            with open(os.path.join(d, "history.json")) as f:
                history = json.load(f)
        unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"])
    train_shard = ray.train.get_dataset_shard("train")
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(start_epoch, optim.epochs):
        model.train()
        total, count = 0.0, 0
        tally = ShardTally()
        for batch in train_shard.iter_torch_batches(
            batch_size=optim.batch_size,
            local_shuffle_buffer_size=LOCAL_SHUFFLE_ROWS,
            local_shuffle_seed=optim.seed + epoch,
            dtypes={"features": torch.float32, "label": torch.int64, "clip_key": torch.int64, "song_key": torch.int64},
            device=device,
        ):
            tally.add(batch["clip_key"].cpu().numpy(), batch["song_key"].cpu().numpy())
            if len(batch["label"]) < 2:  # a lone last example: batch norm cannot train on one value per channel
                continue
            loss = loss_fn(model(batch["features"]), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_batch:
                sched.step()
            total += float(loss.detach()) * len(batch["label"])
            count += len(batch["label"])
        if not per_batch:
            sched.step()
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(count, 1)}
        workers = _all_gather(tally.record(rank, model))  # every rank takes part; rank 0 records them
        if rank == 0:
            metrics["workers"] = workers
            if len({w["weights"] for w in workers}) > 1:
                log.warning("the workers ended epoch %d with different weights: %s", epoch + 1, workers)
        if rank == 0 and config["has_valid"]:
            metrics.update(
                {
                    f"valid_{k}": v
                    for k, v in evaluate_valid(unwrap(model), ray.train.get_dataset_shard("valid"), device).items()
                }
            )
        history.append(metrics)
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:
                torch.save(
                    {
                        "model": unwrap(model).state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "epoch": epoch + 1,
                    },
                    os.path.join(d, "train_state.pt"),
                )
                with open(os.path.join(d, "history.json"), "w") as f:
                    json.dump(history, f)
                ckpt = Checkpoint.from_directory(d)
                # A logger, not print: Ray Train 2.60 both prints and logs a worker's print, so it showed twice.
                log.info(
                    "epoch %s",
                    " ".join(
                        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in metrics.items()
                        if k != "workers"
                    ),
                )
                if config.get("progress") is not None:
                    config["progress"].put(metrics)
            ray.train.report(metrics, checkpoint=ckpt)


def _all_gather(item: dict[str, Any]) -> list[dict[str, Any]]:
    """``item`` of every rank, in rank order (``[item]`` without a process group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [item]
    items: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(items, item)
    return items
