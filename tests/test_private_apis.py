"""The private names of Ray and torch the package relies on are still there: an upgrade that moves one fails
here first, not as a quiet change of behaviour (the product falls back where one is missing)."""

from __future__ import annotations

import importlib
import logging

import torch

from mgr_batch.execution import private_apis
from mgr_batch.models import precision


def test_the_global_node_is_the_ray_this_process_runs(ray_cluster):
    """``runtime.shutdown`` kills the idle processes of the node it finds here; without it it only disconnects."""
    import ray._private.worker

    assert hasattr(ray._private.worker, "_global_node")
    node = private_apis.global_node()
    assert node is not None, "ray._private.worker._global_node is None inside a Ray session"
    assert node.gcs_address == ray_cluster.get_runtime_context().gcs_address
    assert isinstance(node.head, bool) and isinstance(node.all_processes, dict)


def test_ray_trains_placement_group_cleaner_logs_under_the_quieted_name():
    """The worker hook quiets this logger by name: the module must still exist and log under its own name."""
    name = private_apis.TRAIN_PLACEMENT_GROUP_CLEANER_LOGGER
    module = importlib.import_module(name)
    assert isinstance(module.logger, logging.Logger) and module.logger.name == name


def test_torch_still_has_the_bfloat16_probes():
    """Without them ``precision="auto"`` would quietly mean float32 on every CPU, AMX, AVX512_BF16 or not."""
    for name in (precision.AMX_PROBE, precision.AVX512_BF16_PROBE):
        assert isinstance(getattr(torch.cpu, name)(), bool)
