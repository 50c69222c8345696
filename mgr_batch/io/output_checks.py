"""Checks of an output folder before a run writes into it, and what its errors/ table holds so far."""

from __future__ import annotations

import json
from typing import Any

from mgr_batch.config import ClipConfig, to_dict
from mgr_batch.errors import ConfigError
from mgr_batch.io import output, storage
from mgr_batch.io.schemas import TAG_TABLES


def errors_by_type(out: str, so: dict[str, Any] | None) -> dict[str, int]:
    """Rows of ``out``/errors/ per ``error_type``, sorted by type."""
    types = output.read_column_set(out, "errors", ["error_type"], so)["error_type"]
    return {str(k): int(v) for k, v in sorted(types.value_counts().items())}


def check_same_clips(out: str, clip_cfg: ClipConfig, so: dict[str, Any] | None) -> None:
    """A rerun must cut clips as the earlier run did, or its rows would not be comparable."""
    fs, path = storage.filesystem(storage.join(out, "run.json"), so)
    if fs.exists(path):
        earlier = json.loads(fs.cat_file(path)).get("clips")
        if earlier is not None and earlier != to_dict(clip_cfg):
            raise ConfigError(
                f"output {out!r} was made with other clip settings ({earlier}); use --force or another --output"
            )


def check_output_free(output: str, storage_options: dict[str, Any] | None) -> None:
    """``output`` holds none of the tag tables (an evaluation tags into a fresh folder)."""
    fs, path = storage.filesystem(output, storage_options)
    taken = [t for t in TAG_TABLES if fs.exists(storage.join(path, t))]
    if taken:
        raise ConfigError(
            f"output {output!r} already holds {', '.join(taken)}/ from an earlier run; choose another --output"
        )
