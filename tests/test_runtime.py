"""mgr_batch.execution.runtime: the listing cut into the first stage's tasks, and the end of a local Ray session."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from mgr_batch.execution import runtime
from mgr_batch.execution.runtime import MAX_BATCHES_PER_TASK, dataset_from_listing, task_rows


def test_task_rows_cover_the_listing_in_order_in_shrinking_tasks():
    rows = task_rows(1000, songs_per_task=16, n_cpus=2)
    assert [i for r in rows for i in r] == list(range(1000))
    sizes = [len(r) for r in rows]
    assert sizes[0] == MAX_BATCHES_PER_TASK * 16  # a quarter of 1000 (1 / (2 x 2 CPUs)), capped
    assert sizes == sorted(sizes, reverse=True) and sizes[-2] == 16  # shrinking to one batch
    assert len(rows) < 1000 / 16  # fewer tasks than one-batch ones


def test_task_rows_take_a_quarter_of_what_is_left_on_2_cpus():
    assert [len(r) for r in task_rows(400, songs_per_task=16, n_cpus=2)] == [64, 64, 64, 52, 39, 30, 22, 17, 16, 16, 16]
    assert [len(r) for r in task_rows(50, songs_per_task=16, n_cpus=2)] == [16, 16, 16, 2]  # as one-batch tasks
    assert task_rows(0, songs_per_task=2, n_cpus=1) == []
    assert [len(r) for r in task_rows(50, songs_per_task=16, n_cpus=None)] == [16, 16, 16, 2]  # CPUs unknown
    assert len(task_rows(1000, songs_per_task=16, n_cpus=None)) == 63


def test_task_rows_grow_to_keep_the_number_of_blocks_bounded(monkeypatch):
    """Tasks of 2 batches of 2 songs would make 25 here."""
    monkeypatch.setattr(runtime, "MAX_INPUT_BLOCKS", 5)
    rows = task_rows(100, songs_per_task=2, n_cpus=8)
    assert len(rows) <= 5 and sum(map(len, rows)) == 100


def test_dataset_from_listing_makes_one_block_per_task(ray_cluster):
    files = pd.DataFrame(
        {"path": list("abcdef"), "song_id": list("abcdef"), "size": [5, 100, 0, 50, 100, 0], "mtime": [0.0] * 6}
    )
    ds = dataset_from_listing(files, songs_per_task=1)
    assert [r["path"] for r in ds.take_all()] == list("abcdef")
    assert ds.materialize().num_blocks() == len(task_rows(6, songs_per_task=1, n_cpus=2))


SESSION = """
import os, ray
from mgr_batch.config import RayConfig
from mgr_batch.execution.private_apis import global_node
from mgr_batch.execution.runtime import IDLE_PROCESSES, ray_session
os.environ.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
with ray_session(RayConfig(num_cpus=1)):
    node = global_node()
    idle = [info.process for kind in IDLE_PROCESSES for info in node.all_processes.get(kind, [])]
    assert len(idle) == len(IDLE_PROCESSES), node.all_processes.keys()
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"
assert not ray.is_initialized()
assert all(p.poll() is not None for p in idle)  # killed, not left behind
print("ok")
"""


@pytest.mark.e2e  # a Ray of its own, in a subprocess
def test_a_local_session_ends_with_its_idle_processes_killed(tmp_path):
    """An embedded Ray's autoscaler and log monitors are killed at the end of the session, the rest shut down
    as ``ray.shutdown`` does; its processes get the local settings."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", SESSION], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
