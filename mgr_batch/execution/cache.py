"""Stage objects built once per worker process: the decode tasks' stand-in for an actor's lifetime."""

from __future__ import annotations

import gc
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

#: Stage objects :func:`call_cached` built in this process, least recently used first.
_CACHED: OrderedDict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = OrderedDict()


#: How many a process keeps (a worker process of a long Ray session may serve several runs).
CACHED_STAGES = 2


def call_cached(
    batch: dict[str, np.ndarray], *, stage: type, kwargs: dict[str, Any] | None = None, freeze_gc: bool = False
) -> dict[str, np.ndarray]:
    """``stage(**kwargs)(batch)``, building the stage object (e.g. a :class:`Predictor`, which loads a model)
    once per process and keeping it for the next batches, as an actor would: plain tasks can then run the
    model where they decode.

    With ``freeze_gc`` (for worker processes that only run such tasks), every object alive once the stage is
    built, the imported modules and the model among them, moves to the cyclic GC's permanent generation
    (``gc.freeze``): full collections stop walking them again and again. The GC had taken 8% of the decode
    workers' CPU time on the throughput benchmark's Ogg catalog, 2% after. Reference counting still frees
    them; only cycles among them would outlive their use.
    """
    kwargs = kwargs or {}
    key = f"{stage.__module__}.{stage.__qualname__}:{json.dumps(kwargs, sort_keys=True, default=repr)}"
    obj = _CACHED.pop(key, None)
    if obj is None:
        obj = stage(**kwargs)
        if freeze_gc:
            gc.freeze()
        while len(_CACHED) >= CACHED_STAGES:
            _CACHED.popitem(last=False)
    _CACHED[key] = obj
    return obj(batch)
