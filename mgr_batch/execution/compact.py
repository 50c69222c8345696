"""Compaction's merges (:mod:`mgr_batch.io.compaction`) as Ray tasks on a cluster, in threads on one machine."""

from __future__ import annotations

import os
from typing import Any

import ray

from mgr_batch.config import CompactConfig, RayConfig
from mgr_batch.execution.runtime import ray_session
from mgr_batch.io import compaction


def in_ray_tasks(jobs: list[compaction.Merge]) -> None:
    """Each merge a Ray task of one CPU (it holds one group's rows, up to ``target_rows``), all awaited. A task
    whose worker died is retried (Ray's default): a merge writes its target whole under a fixed name, so a
    retry writes the same file again."""
    task = ray.remote(num_cpus=1)(compaction.merge)
    ray.get([task.remote(job) for job in jobs])


def compact_output(output: str, so: dict[str, Any] | None, cfg: CompactConfig, ray_cfg: RayConfig) -> dict[str, Any]:
    """Compact ``output``: the merges as Ray tasks when a cluster is named (``ray_cfg.address``, or RAY_ADDRESS
    as inside ``ray job submit``) or this process has Ray up already; else in two threads here, which on one
    machine does the same work without starting Ray."""
    targets = {"target_rows": cfg.target_rows, "target_bytes": int(cfg.target_mb * 2**20)}
    if not (ray_cfg.address or os.environ.get("RAY_ADDRESS") or ray.is_initialized()):
        return compaction.compact(output, so, **targets)
    with ray_session(ray_cfg):
        return compaction.compact(output, so, **targets, run_merges=in_ray_tasks)
