"""Run in every worker process of an embedded Ray (``worker_process_setup_hook``); standard library only
(:mod:`~mgr_batch.execution.private_apis` is too), since every worker imports it at start."""

from __future__ import annotations

import logging
import os

from mgr_batch.execution.private_apis import TRAIN_PLACEMENT_GROUP_CLEANER_LOGGER

#: Ray Train's placement-group cleaner asks the State API every second whether the run's controller
#: lives. An embedded Ray runs no dashboard, so there is no State API and each question logs a warning:
#: hundreds of lines over one training run, none of them about the run.
QUIET_LOGGERS = (TRAIN_PLACEMENT_GROUP_CLEANER_LOGGER,)


def setup() -> None:
    """Only errors from :data:`QUIET_LOGGERS` (a filter, not a level: Ray Train configures its loggers
    with ``logging.config.dictConfig``, which resets the levels of the ``ray.train`` loggers' children).
    ``RAY_ADDRESS`` names this worker's own cluster, for code that looks a cluster up by it, such as the
    State API client of that cleaner: with two embedded Rays on one machine it found both and died with
    a traceback."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addFilter(_errors_only)
    if not os.environ.get("RAY_ADDRESS"):
        import ray  # already imported: this runs in a Ray worker

        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR
