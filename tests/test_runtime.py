"""mgr_batch.execution.runtime: the listing cut into the first stage's tasks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mgr_batch.execution import runtime
from mgr_batch.execution.runtime import MAX_BATCHES_PER_TASK, dataset_from_listing, task_rows


def test_task_rows_cover_the_listing_in_order_in_shrinking_tasks():
    sizes = np.random.default_rng(0).lognormal(14, 1, size=1000).astype(np.int64)
    rows = task_rows(sizes, songs_per_task=16, n_cpus=2)
    assert np.array_equal(np.concatenate(rows), np.arange(1000))
    shares = np.array([sizes[r].sum() for r in rows]) / sizes.sum()
    assert all(len(r) <= MAX_BATCHES_PER_TASK * 16 for r in rows)
    assert len(rows[0]) == MAX_BATCHES_PER_TASK * 16 and shares[0] < 0.25  # capped before 1 / (2 x 2 CPUs)
    assert shares[-2] < shares[0] / 2  # the last full-sized tasks are the short ones
    assert len(rows) < 1000 / 16  # fewer tasks than batch-sized ones


def test_task_rows_take_a_quarter_of_what_is_left_on_2_cpus():
    sizes = np.full(400, 1000)
    rows = task_rows(sizes, songs_per_task=16, n_cpus=2)
    assert [len(r) for r in rows][:4] == [64, 64, 64, 52]  # 100, 84, 68, 52: capped at 4 batches first
    assert all(len(r) >= 16 for r in rows[:-1])


def test_task_rows_without_sizes_count_files_and_respect_the_block_bound(monkeypatch):
    """A manifest's sizes are all 0: files count the same. Tasks grow to keep their number near
    MAX_INPUT_BLOCKS (tasks of 2 batches of 2 songs would make 25 here)."""
    rows = task_rows(np.zeros(100, np.int64), songs_per_task=4, n_cpus=1)
    assert np.array_equal(np.concatenate(rows), np.arange(100))
    assert [len(r) for r in rows][:2] == [16, 16] and min(len(r) for r in rows[:-1]) >= 4  # the last: what is left
    monkeypatch.setattr(runtime, "MAX_INPUT_BLOCKS", 5)
    rows = task_rows(np.zeros(100, np.int64), songs_per_task=2, n_cpus=8)
    assert len(rows) <= 6 and sum(map(len, rows)) == 100
    assert task_rows(np.zeros(0, np.int64), songs_per_task=2, n_cpus=1) == []


def test_dataset_from_listing_makes_one_block_per_task(ray_cluster):
    files = pd.DataFrame({"path": list("abcdef"), "song_id": list("abcdef"), "size": [5, 100, 0, 50, 100, 0],
                          "mtime": [0.0] * 6})  # fmt: skip
    ds = dataset_from_listing(files, songs_per_task=1)
    assert [r["path"] for r in ds.take_all()] == list("abcdef")
    assert ds.materialize().num_blocks() == len(task_rows(files["size"].to_numpy(), songs_per_task=1, n_cpus=2))
