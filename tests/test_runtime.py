"""mgr_batch.execution.runtime: the listing cut into the first stage's tasks."""

from __future__ import annotations

import pandas as pd

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
