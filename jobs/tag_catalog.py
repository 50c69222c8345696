"""Ray job entry point for ``mgr-batch tag``: tag a music catalog with genres on the cluster the job runs on.

Usage (from the repository root, with ``ray dashboard cluster.yaml`` forwarding port 8265)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/tag_catalog.py s3://bucket/audio --output s3://bucket/tags --num-workers 4 --num-gpus 1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The submitted working directory (this file's parent's parent) wins over an installed mgr_batch.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgr_batch.cli import main  # noqa: E402


def cli_args(args: list[str]) -> list[str]:
    """``args``, led by ``--address auto`` inside a Ray job (RAY_ADDRESS set) unless they give an address.

    Ray sets RAY_ADDRESS (the cluster's GCS address) for a job's entrypoint, and ``ray.init(address="auto")``
    joins that cluster. Without an address mgr-batch passes ``num_cpus`` to ``ray.init``, which Ray refuses
    when RAY_ADDRESS makes it join a cluster. An ``--address`` in ``args`` (argparse also takes a prefix
    such as ``--addr``) comes later, so it would win anyway.
    """
    given = any(len(opt) > 2 and "--address".startswith(opt) for opt in (a.split("=", 1)[0] for a in args))
    if os.environ.get("RAY_ADDRESS") and not given:
        return ["--address", "auto", *args]
    return list(args)


if __name__ == "__main__":
    sys.exit(main(["tag", *cli_args(sys.argv[1:])]))
