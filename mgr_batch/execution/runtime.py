"""Connect to Ray: an embedded local instance by default, or a running cluster with ``address``."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import pandas as pd
import ray

from mgr_batch.config import RayConfig
from mgr_batch.execution import private_apis
from mgr_batch.execution.progress import SETTINGS

log = logging.getLogger(__name__)

#: Upper bound on input blocks, so listing a million files does not make a million objects.
MAX_INPUT_BLOCKS = 20_000


@contextmanager
def ray_session(cfg: RayConfig, *, trains: bool = False) -> Iterator[None]:
    """Use the Ray already initialized in this process, or start/join one for the duration
    (``trains``: a session that runs Ray Train, see :func:`init_kwargs`)."""
    quiet_ray_data(verbose=SETTINGS.verbose)
    if ray.is_initialized():
        yield
        return
    kwargs = init_kwargs(cfg, os.environ, trains=trains)
    if "address" not in kwargs:
        set_local_environment(os.environ)
    ray.init(**kwargs)
    try:
        yield
    finally:
        shutdown()


#: Settings of an embedded local Ray, which its processes inherit from the driver's environment (a value the
#: user set wins). Ray Train's controller polls its workers every 2 s by default, so a run's end waited up to
#: 2 s to be seen; every 0.5 s costs an actor call a poll and took 2.3 s off a small train-then-tag test.
LOCAL_ENVIRONMENT = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def set_local_environment(environ: MutableMapping[str, str]) -> None:
    """Put :data:`LOCAL_ENVIRONMENT` into ``environ`` (the driver's, before it starts a local Ray)."""
    for key, value in LOCAL_ENVIRONMENT.items():
        environ.setdefault(key, value)


#: Processes of a local Ray that hold nothing to flush at shutdown: the autoscaler monitor and the log
#: monitor. ``ray.shutdown`` gives each a second to exit after SIGTERM; killed first, shutdown took 0.4 s
#: instead of 1.2-1.4 s (benchmarks/results/startup.md).
IDLE_PROCESSES = ("monitor", "log_monitor")


def shutdown() -> None:
    """``ray.shutdown()``, the idle processes of a Ray this process started killed first (without their grace
    second); a Ray this process joined is only disconnected from, as ``ray.shutdown`` does."""
    node = private_apis.global_node()
    if node is not None and node.head:
        for kind in IDLE_PROCESSES:
            for info in node.all_processes.get(kind, []):
                info.process.kill()
    ray.shutdown()


def init_kwargs(
    cfg: RayConfig, environ: Mapping[str, str], *, trains: bool = False, verbose: bool | None = None
) -> dict[str, Any]:
    """Arguments for ``ray.init``: the configured address; inside ``ray job submit`` (which sets
    RAY_ADDRESS for the entrypoint) the job's cluster; else an embedded local Ray with ``num_cpus``,
    whose workers run :data:`WORKER_SETUP` when the session ``trains``. Only then: a job with a runtime
    environment cannot use the workers Ray starts ahead for every job, so the hook cost a tagging run
    about 1 s of wall time and 1.2 CPU-s of worker start-up (README, Throughput).

    The workers' output reaches the driver's screen only when ``verbose`` (default: ``-v`` given, see
    :data:`mgr_batch.execution.progress.SETTINGS`); otherwise it stays in the Ray session's log files, and the
    driver's Ray logger shows errors only (not the start-up notes: token authentication, the instance
    started)."""
    verbose = SETTINGS.verbose if verbose is None else verbose
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.ERROR,
    }
    if cfg.address:
        kwargs["address"] = cfg.address
    elif environ.get("RAY_ADDRESS"):
        kwargs["address"] = "auto"  # Ray refuses num_cpus when it joins a cluster
    else:
        kwargs["num_cpus"] = cfg.num_cpus or os.cpu_count()
        if trains:
            kwargs["runtime_env"] = {"worker_process_setup_hook": WORKER_SETUP}
    return kwargs


def quiet_ray_data(*, verbose: bool) -> None:
    """Ray Data's own progress bars and notes off the screen unless ``verbose``: mgr-batch shows its own
    progress (:mod:`mgr_batch.execution.progress`), counted in files. Ray Data's log file (ray-data.log in the Ray
    session's logs) keeps every note; only its console handler is raised to errors."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    level = logging.NOTSET if verbose else logging.ERROR
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):  # the console
            handler.setLevel(level)


#: Hook of the embedded Ray's workers in sessions that train (a cluster started by ``ray start`` has a
#: dashboard, so no need there).
WORKER_SETUP = "mgr_batch.execution.worker_setup.setup"


def dataset_from_listing(files: pd.DataFrame, *, songs_per_task: int) -> ray.data.Dataset:
    """A Ray Dataset over the listing, one block per task of the first stage, cut by :func:`task_rows` for
    the CPUs the cluster has now (none yet, as a cluster that scales up from no workers: one batch per
    task). A task runs its block in batches of at most ``songs_per_task`` songs."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    rows = task_rows(len(files), songs_per_task=songs_per_task, n_cpus=cpus or None)
    return ray.data.from_pandas([files.iloc[r].reset_index(drop=True) for r in rows])


#: A task takes at most this many batches of ``songs_per_task`` songs (one after the other: it holds one
#: batch's features at a time). Between one task and the next, a CPU idles 0.15-0.2 s: Ray Data's executor
#: looks for finished tasks every 0.1 s before it starts another.
MAX_BATCHES_PER_TASK = 4


def task_rows(n_files: int, *, songs_per_task: int, n_cpus: int | None) -> list[range]:
    """Rows of the listing for each task: runs of files in listing order, shrinking as the work left does.

    Each task takes ``1 / (2 n_cpus)`` of the files left (guided self-scheduling), at least one batch of
    ``songs_per_task`` and at most :data:`MAX_BATCHES_PER_TASK` batches; both grow where there would be
    more than about :data:`MAX_INPUT_BLOCKS` tasks. That makes fewer of the idle gaps between tasks than
    one-batch tasks do, and the run ends on one-batch tasks, so no CPU is left finishing a long one while
    the others idle. It counts files, not bytes: a wav file holds ten times the bytes of an mp3 of the same
    length, and tasks cut by bytes ran the mixed-format benchmark catalog slower; nor largest first, which
    put the largest songs in the same batches and raised the workers' peak memory by a third. With
    ``n_cpus`` None (not known yet), every task is one batch.
    """
    least = max(songs_per_task, math.ceil(n_files / MAX_INPUT_BLOCKS))
    most = max(MAX_BATCHES_PER_TASK * songs_per_task, least)
    out, start = [], 0
    while start < n_files:
        size = least if n_cpus is None else min(max(math.ceil((n_files - start) / (2 * n_cpus)), least), most)
        out.append(range(start, min(start + size, n_files)))
        start += size
    return out


#: Decode tasks recycle their worker process after this many tasks. This bounds memory growth in the
#: native decoders over runs of millions of files, and, because the remote arguments then differ from
#: the inference actors', keeps Ray Data from fusing decode+featurize into the actor pool: decoding must
#: scale with CPUs, and a GPU must never wait on it.
DECODE_MAX_CALLS = 1000
