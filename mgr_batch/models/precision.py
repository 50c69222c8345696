"""The arithmetic of musicnn's forward passes (the pre-trained embedding networks): float32 or bfloat16.

On a CPU with Intel AMX tiles, oneDNN runs bfloat16 convolutions natively: MSD_musicnn took 0.47x its float32
CPU time on one thread there (``benchmarks/precision.py``). Elsewhere bfloat16 is emulated and no faster, so
``"auto"`` means bfloat16 on such a CPU and float32 on every other CPU and on GPUs. EfficientAT stays float32
whatever the setting: its depthwise convolutions took 1.18x longer in bfloat16 on the same CPU. Feature front
ends (log-mel, resampling) always run in float32; only the network's layers are cast.

A stage sets the precision for the work it does (:func:`networks`); the networks' call sites take it from
there and resolve it for the device they run on (:func:`autocast`), so the feature kinds keep their
``(clips, *, sr, cfg)`` signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import torch

from mgr_batch.config import PRECISIONS
from mgr_batch.errors import ConfigError

_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("mgr_batch_network_precision", default="float32")


#: torch's private probe for AMX tiles (``torch.cpu._is_amx_tile_supported``), the one private torch name the
#: package uses; ``tests/test_private_apis.py`` fails first where an upgrade moves it.
AMX_PROBE = "_is_amx_tile_supported"


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (Intel AMX tiles); False where this torch
    lacks :data:`AMX_PROBE`."""
    probe = getattr(torch.cpu, AMX_PROBE, None)
    return bool(probe()) if probe is not None else False


def resolve(precision: str, device: str | torch.device = "cpu") -> str:
    """``"float32"`` or ``"bfloat16"``: what ``precision`` (one of :data:`PRECISIONS`) means on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if torch.device(device).type == "cpu" and native_bfloat16() else "float32"


@contextlib.contextmanager
def networks(precision: str) -> Iterator[None]:
    """Within the block, the pre-trained networks run in ``precision`` (one of :data:`PRECISIONS`, checked)."""
    resolve(precision)
    token = _CURRENT.set(precision)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current(device: str | torch.device = "cpu") -> str:
    """What a network on ``device`` runs in here and now (``"float32"`` outside any :func:`networks` block)."""
    return resolve(_CURRENT.get(), device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The context a network's forward pass on ``device`` runs in: bfloat16 autocast, or nothing."""
    if current(device) == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
