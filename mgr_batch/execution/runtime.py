"""Connect to Ray: an embedded local instance by default, or a running cluster with ``address``."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pandas as pd
import ray

from mgr_batch.config import RayConfig

log = logging.getLogger(__name__)

#: Upper bound on input blocks, so listing a million files does not make a million objects.
MAX_INPUT_BLOCKS = 20_000


@contextmanager
def ray_session(cfg: RayConfig, *, trains: bool = False) -> Iterator[None]:
    """Use the Ray already initialized in this process, or start/join one for the duration
    (``trains``: a session that runs Ray Train, see :func:`init_kwargs`)."""
    if ray.is_initialized():
        yield
        return
    ray.init(**init_kwargs(cfg, os.environ, trains=trains))
    try:
        yield
    finally:
        ray.shutdown()


def init_kwargs(cfg: RayConfig, environ: Mapping[str, str], *, trains: bool = False) -> dict[str, Any]:
    """Arguments for ``ray.init``: the configured address; inside ``ray job submit`` (which sets
    RAY_ADDRESS for the entrypoint) the job's cluster; else an embedded local Ray with ``num_cpus``,
    whose workers run :data:`WORKER_SETUP` when the session ``trains``. Only then: a job with a runtime
    environment cannot use the workers Ray starts ahead for every job, so the hook cost a tagging run
    about 1 s of wall time and 1.2 CPU-s of worker start-up (README, Throughput)."""
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if cfg.address:
        kwargs["address"] = cfg.address
    elif environ.get("RAY_ADDRESS"):
        kwargs["address"] = "auto"  # Ray refuses num_cpus when it joins a cluster
    else:
        kwargs["num_cpus"] = cfg.num_cpus or os.cpu_count()
        if trains:
            kwargs["runtime_env"] = {"worker_process_setup_hook": WORKER_SETUP}
    return kwargs


#: Hook of the embedded Ray's workers in sessions that train (a cluster started by ``ray start`` has a
#: dashboard, so no need there).
WORKER_SETUP = "mgr_batch.execution.worker_setup.setup"


def dataset_from_listing(files: pd.DataFrame, *, rows_per_block: int) -> ray.data.Dataset:
    """A Ray Dataset over the listing, one block per ``rows_per_block`` files (so one task each).

    Largest files first (by the listing's ``size``; a manifest's sizes are unknown, 0, and keep its order):
    the tasks that finish last are then the short ones, instead of a long song keeping one CPU busy while
    the others have nothing left to do.
    """
    files = files.sort_values("size", ascending=False, kind="stable")
    rows = max(rows_per_block, math.ceil(len(files) / MAX_INPUT_BLOCKS))
    chunks = [files.iloc[i : i + rows].reset_index(drop=True) for i in range(0, len(files), rows)]
    return ray.data.from_pandas(chunks)


#: Decode tasks recycle their worker process after this many tasks. This bounds memory growth in the
#: native decoders over runs of millions of files, and, because the remote arguments then differ from
#: the inference actors', keeps Ray Data from fusing decode+featurize into the actor pool: decoding must
#: scale with CPUs, and a GPU must never wait on it.
DECODE_MAX_CALLS = 1000
