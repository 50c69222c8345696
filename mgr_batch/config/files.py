"""Configs as files: YAML read and written beside every output, flags merged over a file, secrets redacted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from mgr_batch.errors import ConfigError


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (JSON and YAML safe)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def load_yaml(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML file, or {} for no file."""
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    return data


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` (None values ignored) into a copy of ``base``."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            earlier = out.get(key)
            merged = merge(earlier if isinstance(earlier, dict) else {}, value)
            # Overrides that set nothing leave a value that is not a mapping as it is, for from_dict to reject.
            if merged or (key in out and (earlier is None or isinstance(earlier, dict))):
                out[key] = merged
        else:
            out[key] = value
    return out


def dump_yaml(cfg: Any) -> str:
    """The config as YAML text (written next to every output)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


SECRET_WORDS = ("secret", "password", "token", "key", "credential")


def redacted(cfg: Any) -> Any:
    """A copy of a config whose storage options hide secret values (safe to write and log)."""
    options = getattr(cfg, "storage_options", None)
    if not options:
        return cfg
    return dataclasses.replace(cfg, storage_options=_redact(options))


def _redact(options: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _redact(v) if isinstance(v, dict) else "***" if any(w in str(k).lower() for w in SECRET_WORDS) else v
        for k, v in options.items()
    }
