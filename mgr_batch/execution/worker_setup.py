"""Run in every worker process of an embedded Ray (``worker_process_setup_hook``); standard library only,
since every worker imports it at start."""

from __future__ import annotations

import logging

#: Ray Train's placement-group cleaner asks the State API every second whether the run's controller
#: lives. An embedded Ray runs no dashboard, so there is no State API and each question logs a warning:
#: hundreds of lines over one training run, none of them about the run.
QUIET_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def setup() -> None:
    """Only errors from :data:`QUIET_LOGGERS`. A filter, not a level: Ray Train configures its loggers
    with ``logging.config.dictConfig``, which resets the levels of the ``ray.train`` loggers' children."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addFilter(_errors_only)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR
