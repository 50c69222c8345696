"""Ray job entry point for ``mgr-batch tag``: tag a music catalog with genres on the cluster the job runs on.

Usage (from the repository root, with ``ray dashboard cluster.yaml`` forwarding port 8265)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/tag_catalog.py s3://bucket/audio --output s3://bucket/tags --num-workers 4 --num-gpus 1
"""

from __future__ import annotations

import sys
from pathlib import Path

# The submitted working directory (this file's parent's parent) wins over an installed mgr_batch.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgr_batch.cli import run  # noqa: E402

if __name__ == "__main__":
    # Inside a job Ray sets RAY_ADDRESS, and mgr-batch then joins that cluster (see execution.runtime).
    run(["tag", *sys.argv[1:]])
