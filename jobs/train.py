"""Ray job entry point for ``mgr-batch train``: train a genre model with Ray Train on the cluster the job runs on.

Usage (from the repository root, with ``ray dashboard cluster.yaml`` forwarding port 8265)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/train.py s3://bucket/gtzan --output s3://bucket/models/cnn \\
        --storage-path s3://bucket/runs --num-workers 2 --use-gpu
"""

from __future__ import annotations

import sys
from pathlib import Path

# The submitted working directory (this file's parent's parent) wins over an installed mgr_batch.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgr_batch.cli import run  # noqa: E402

if __name__ == "__main__":
    # Inside a job Ray sets RAY_ADDRESS, and mgr-batch then joins that cluster (see execution.runtime).
    run(["train", *sys.argv[1:]])
