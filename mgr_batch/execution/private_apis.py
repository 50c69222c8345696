"""The private parts of Ray this package relies on, in one place, each with a test
(``tests/test_private_apis.py``) so that a Ray upgrade which moves one fails there first.

Standard library only at import: :mod:`mgr_batch.execution.worker_setup`, which every worker of an embedded
Ray imports at start, takes its logger name from here. (torch's one private probe sits behind
:func:`mgr_batch.models.precision.native_bfloat16`: the models may not import the execution layer.)
"""

from __future__ import annotations

from typing import Any

#: The logger of Ray Train's placement-group cleaner (``logging.getLogger(__name__)`` of a module under
#: ``ray.train.v2._internal``).
TRAIN_PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def global_node() -> Any | None:
    """The Ray node this process started or joined (``ray._private.worker._global_node``: its ``head`` flag and
    ``all_processes`` by kind), or None outside a Ray session."""
    import ray._private.worker

    return getattr(ray._private.worker, "_global_node", None)
