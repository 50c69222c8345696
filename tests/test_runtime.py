"""mgr_batch.execution.runtime: the listing as a Ray Dataset."""

from __future__ import annotations

import pandas as pd

from mgr_batch.execution.runtime import dataset_from_listing


def test_listing_blocks_put_the_largest_files_first(ray_cluster):
    """Largest first, ties (and a manifest's unknown sizes, 0) in listing order; one block per
    rows_per_block files."""
    files = pd.DataFrame({"path": list("abcdef"), "song_id": list("abcdef"), "size": [5, 100, 0, 50, 100, 0],
                          "mtime": [0.0] * 6})  # fmt: skip
    ds = dataset_from_listing(files, rows_per_block=2)
    assert [r["path"] for r in ds.take_all()] == ["b", "e", "d", "a", "c", "f"]
    assert ds.materialize().num_blocks() == 3
