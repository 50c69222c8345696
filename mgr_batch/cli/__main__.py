"""``python -m mgr_batch.cli``: the ``mgr-batch`` command."""

from mgr_batch.cli import run

run()
