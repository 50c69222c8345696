"""mgr_batch.execution.runtime: the listing cut into the first stage's tasks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mgr_batch.execution import runtime
from mgr_batch.execution.runtime import MAX_BATCHES_PER_TASK, dataset_from_listing, task_rows


def test_task_rows_cover_every_file_once_largest_first_in_shrinking_tasks():
    sizes = np.random.default_rng(0).lognormal(14, 1, size=1000).astype(np.int64)
    rows = task_rows(sizes, songs_per_task=16, n_cpus=2)
    flat = np.concatenate(rows)
    assert sorted(flat) == list(range(1000))
    assert np.all(np.diff(sizes[flat]) <= 0)  # largest files first
    shares = np.array([sizes[r].sum() for r in rows]) / sizes.sum()
    assert 0.24 <= shares[0] <= 0.27  # a quarter of the bytes: 1 / (2 x 2 CPUs)
    assert shares[-1] < shares[0] / 5
    assert all(len(r) <= MAX_BATCHES_PER_TASK * 16 for r in rows)
    assert len(rows) < 1000 / 16  # fewer tasks than fixed batches of 16 songs


def test_task_rows_without_sizes_count_files_and_respect_the_block_bound(monkeypatch):
    """A manifest's sizes are all 0: files count the same, and keep their order. Tasks grow to keep their
    number near MAX_INPUT_BLOCKS (a task of 2 batches of 2 songs would make 25 here)."""
    rows = task_rows(np.zeros(100, np.int64), songs_per_task=4, n_cpus=1)
    assert np.array_equal(np.concatenate(rows), np.arange(100))
    assert [len(r) for r in rows][:2] == [16, 16] and min(len(r) for r in rows[:-1]) >= 4  # the last: what is left
    monkeypatch.setattr(runtime, "MAX_INPUT_BLOCKS", 5)
    rows = task_rows(np.zeros(100, np.int64), songs_per_task=2, n_cpus=8)
    assert len(rows) <= 6 and sum(map(len, rows)) == 100
    assert task_rows(np.zeros(0, np.int64), songs_per_task=2, n_cpus=1) == []


def test_dataset_from_listing_puts_the_largest_files_first(ray_cluster):
    files = pd.DataFrame({"path": list("abcdef"), "song_id": list("abcdef"), "size": [5, 100, 0, 50, 100, 0],
                          "mtime": [0.0] * 6})  # fmt: skip
    ds = dataset_from_listing(files, songs_per_task=1)
    assert [r["path"] for r in ds.take_all()] == ["b", "e", "d", "a", "c", "f"]
    assert ds.materialize().num_blocks() == len(task_rows(files["size"].to_numpy(), songs_per_task=1, n_cpus=2))
