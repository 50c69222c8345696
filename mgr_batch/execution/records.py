"""What every command writes beside its output: its summary (run.json) and its configuration (config.yaml,
secrets redacted), and the check that every listed file ended up in a table."""

from __future__ import annotations

import json
from typing import Any

from mgr_batch.config import dump_yaml, redacted
from mgr_batch.io import storage


def write_config(output: str, cfg: Any, storage_options: dict[str, Any] | None, *, name: str = "config.yaml") -> None:
    """``cfg`` (a config dataclass), secrets redacted, as YAML in ``output``/``name``, written atomically."""
    storage.write_bytes_atomic(storage.join(output, name), dump_yaml(redacted(cfg)).encode(), storage_options)


def write_json(output: str, name: str, payload: dict[str, Any], storage_options: dict[str, Any] | None) -> None:
    """``payload`` as indented JSON in ``output``/``name``, written atomically."""
    storage.write_bytes_atomic(storage.join(output, name), json.dumps(payload, indent=2).encode(), storage_options)


def write_run_record(
    output: str, summary: dict[str, Any], cfg: Any, storage_options: dict[str, Any] | None, *, name: str = "run.json"
) -> None:
    """The run's ``summary`` (``output``/``name``) and its config (``output``/config.yaml)."""
    write_json(output, name, summary, storage_options)
    write_config(output, cfg, storage_options)


def check_every_file_accounted(n_listed: int, n_songs: int, n_errors: int) -> None:
    """Every listed file is one song row or one error row; anything else is a bug, so it fails loudly."""
    if n_songs + n_errors != n_listed:
        raise RuntimeError(f"lost files: {n_listed} listed, {n_songs} songs + {n_errors} errors")
