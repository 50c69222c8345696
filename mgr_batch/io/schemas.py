"""Output table schemas: ``schemas/*.json`` (the single source of truth) as pyarrow schemas."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

#: The tables of a tagging run, and every table mgr-batch writes.
TAG_TABLES = ("songs", "clips", "errors")
#: Tables a tagging run writes only when asked (``tag --timeline``, ``--embeddings``); pruned and cleared with the others.
OPTIONAL_TAG_TABLES = ("timeline", "embeddings")
TABLES = (*TAG_TABLES, *OPTIONAL_TAG_TABLES, "segments")

#: Version of the table layout, written into every Parquet part (``mgr_batch.schema_version``); raise it when a
#: column changes meaning or type.
SCHEMA_VERSION = 1
#: Parquet key-value metadata keys every part carries.
META_SCHEMA_VERSION, META_MODEL_ID, META_GENRES = (
    b"mgr_batch.schema_version",
    b"mgr_batch.model_id",
    b"mgr_batch.genres",
)

_TYPES = {
    "string": pa.string(),
    "binary": pa.binary(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "list<string>": pa.list_(pa.string()),
    "list<float16>": pa.list_(pa.float16()),
    "list<float32>": pa.list_(pa.float32()),
    "list<float64>": pa.list_(pa.float64()),
}


@functools.cache
def spec(name: str) -> dict[str, Any]:
    """The JSON schema document of table ``name``."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}")
    source = Path(__file__).resolve().parents[2] / "schemas" / f"{name}.json"  # a source checkout
    if not source.is_file():
        source = resources.files("mgr_batch.schemas_data") / f"{name}.json"  # an installed wheel
    return json.loads(source.read_text())


def arrow_schema(name: str, genres: tuple[str, ...] = ()) -> pa.Schema:
    """The pyarrow schema of table ``name``; genre probability columns follow the fixed ones."""
    doc = spec(name)
    fields = [pa.field(c["name"], _TYPES[c["type"]], nullable=c["nullable"]) for c in doc["columns"]]
    extra = doc.get("genre_columns")
    if extra:
        fields += [pa.field(f"{extra['prefix']}{g}", _TYPES[extra["type"]], nullable=False) for g in genres]
    return pa.schema(fields)


#: The name prefix of the genre probability columns of songs and clips (``genre_columns.prefix`` of their schemas).
PROBABILITY_PREFIX = "p_"


def probability_columns(genres: tuple[str, ...]) -> list[str]:
    """The probability column of each of ``genres``, in order (``p_<genre>``)."""
    return [f"{PROBABILITY_PREFIX}{g}" for g in genres]


def probability_genres(columns: list[str]) -> tuple[str, ...]:
    """The genres of the probability columns among ``columns``, in their order (the inverse of :func:`probability_columns`)."""
    return tuple(c[len(PROBABILITY_PREFIX) :] for c in columns if c.startswith(PROBABILITY_PREFIX))


def part_metadata(model_id: str, genres: tuple[str, ...]) -> dict[bytes, bytes]:
    """The key-value metadata of a Parquet part: schema version, model id and genre order (a JSON list)."""
    return {
        META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
        META_MODEL_ID: model_id.encode(),
        META_GENRES: json.dumps(list(genres)).encode(),
    }


def read_part_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    """``schema_version``, ``model_id`` and ``genres`` from a part's key-value metadata (None where absent)."""
    metadata = metadata or {}
    version = metadata.get(META_SCHEMA_VERSION)
    genres = metadata.get(META_GENRES)
    return {
        "schema_version": int(version) if version else None,
        "model_id": metadata[META_MODEL_ID].decode() if META_MODEL_ID in metadata else None,
        "genres": tuple(json.loads(genres)) if genres else None,
    }


def markdown() -> str:
    """``docs/schemas.md``: every table of ``schemas/*.json`` as a Markdown table (``python tools/schemas_doc.py`` writes it)."""
    lines = [
        "# Output tables",
        "",
        "<!-- Generated from schemas/*.json by `python tools/schemas_doc.py`; do not edit. -->",
        "",
        f"Schema version {SCHEMA_VERSION}. Every Parquet file carries the key-value metadata "
        f"`{META_SCHEMA_VERSION.decode()}`, `{META_MODEL_ID.decode()}` and `{META_GENRES.decode()}` "
        "(the genre order, a JSON list).",
        "",
    ]
    for name in TABLES:
        doc = spec(name)
        lines += [
            f"## `{name}`",
            "",
            doc.get("description", ""),
            "",
            "| column | type | nullable | description |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{c['name']}` | `{c['type']}` | {'yes' if c['nullable'] else 'no'} | {_md(c.get('description', ''))} |"
            for c in doc["columns"]
        ]
        extra = doc.get("genre_columns")
        if extra:
            lines.append(
                f"| `{extra['prefix']}<genre>` | `{extra['type']}` | no | {_md(extra.get('description', ''))} |"
            )
        lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")
