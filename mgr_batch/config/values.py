"""Config values from plain dicts (YAML, flags): types and ranges checked, one line per bad value."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from mgr_batch.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "") -> T:
    """Build the dataclass ``cls`` from nested dicts, rejecting unknown keys by name."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where=f"{where}{name}.")
    return cls(**kwargs)


#: Numeric config fields by name (a name means the same thing in every config) and the values they take:
#: at least 1, positive, or not negative. A value outside fails where the config is built, before Ray starts.
AT_LEAST_ONE = frozenset(
    {
        "sr",
        "batch_size",
        "num_workers",
        "songs_per_task",
        "num_cpus",
        "cpus_per_worker",
        "epochs",
        "crops",
        "n_fft",
        "hop_length",
        "n_mels",
        "n_mfcc",
        "order",
        "max_lag",
        "k_max",
        "n_clusters",
        "scale_neighbours",
    }
)


POSITIVE = frozenset({"max_duration", "clip_seconds", "hop_seconds", "window_seconds", "cycle_epochs", "scale", "fmax"})


#: ``lr`` 0 is a frozen run (its tests check the pre-trained body survives a Train worker unchanged).
NOT_NEGATIVE = frozenset({"silence_threshold", "num_gpus", "weight_decay", "fmin", "min_segment_seconds", "lr"})


#: String config fields that take one of a few values (others are checked by their dataclass).
CHOICES = {"resample_quality": ("HQ", "VHQ", "MQ", "LQ", "QQ")}


#: Fields with a least value of their own.
AT_LEAST = {"folds": 2}


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(hint: Any, value: Any, *, where: str) -> Any:
    """``value`` as the type ``hint`` says, checked for type and range; one-line ConfigError otherwise."""
    key = where.rstrip(".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where=where)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key} must be a mapping, not {value!r}")
        return from_dict(hint, value, where=where)
    if origin is tuple and value is not None:
        if isinstance(value, str):  # "blues,rock" as a convenience for flags and env vars
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key {key} must be a list of strings, not {value!r}")
        return tuple(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key} must be a mapping, not {value!r}")
        return value
    if hint in _TYPE_NAMES:
        # bool is an int to Python, and "22050" a string to YAML: neither passes for a number here.
        fits = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value, fits = float(value), True
        if not fits:
            raise ConfigError(f"config key {key} must be {_TYPE_NAMES[hint]}, not {value!r}")
        if hint in (int, float):
            _check_range(key, value)
        elif hint is str and key.rsplit(".", 1)[-1] in CHOICES:
            _check_choice(key, value)
    return value


def _check_choice(key: str, value: str) -> None:
    choices = CHOICES[key.rsplit(".", 1)[-1]]
    if value not in choices:
        raise ConfigError(f"config key {key} must be one of {', '.join(choices)}, not {value!r}")


def _check_range(key: str, value: float) -> None:
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key} must be finite, not {value}")
    if name in AT_LEAST_ONE and value < 1:
        raise ConfigError(f"config key {key} must be at least 1, not {value}")
    if name in POSITIVE and not value > 0:
        raise ConfigError(f"config key {key} must be positive, not {value}")
    if name in NOT_NEGATIVE and value < 0:
        raise ConfigError(f"config key {key} must not be negative, not {value}")
    if name in AT_LEAST and value < AT_LEAST[name]:
        raise ConfigError(f"config key {key} must be at least {AT_LEAST[name]}, not {value}")
