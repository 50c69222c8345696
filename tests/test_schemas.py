"""mgr_batch.io.schemas: schemas/*.json as pyarrow schemas, genre columns after the fixed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgr_batch.io import schemas

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def json_doc(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", schemas.TABLES)
def test_spec_is_the_json_file(name):
    assert schemas.spec(name) == json_doc(name)
    assert schemas.spec(name)["name"] == name


@pytest.mark.parametrize("name", schemas.TABLES)
def test_every_column_is_typed_and_described(name):
    columns = json_doc(name)["columns"]
    names = [c["name"] for c in columns]
    assert len(names) == len(set(names))
    for column in columns:
        assert isinstance(column["nullable"], bool)
        assert column["description"].strip()


@pytest.mark.parametrize("name", schemas.TABLES)
@pytest.mark.parametrize("genres", [(), ("blues",), ("blues", "rock", "hip hop")])
def test_arrow_schema_has_the_json_columns_in_order(name, genres):
    """Names, order and nullability; the types are checked on written tables (tests/test_writer.py), and a
    type the JSON names but the module cannot build fails here."""
    doc = json_doc(name)
    schema = schemas.arrow_schema(name, genres)
    expected = [(c["name"], c["nullable"]) for c in doc["columns"]]
    if "genre_columns" in doc:
        expected += [(f"{doc['genre_columns']['prefix']}{g}", False) for g in genres]
    assert [(f.name, f.nullable) for f in schema] == expected


def test_genre_columns_only_where_declared():
    genres = ("jazz", "rock")
    assert schemas.arrow_schema("songs", genres).names[-2:] == ["p_jazz", "p_rock"]
    assert schemas.arrow_schema("clips", genres).names[-2:] == ["p_jazz", "p_rock"]
    assert schemas.arrow_schema("errors", genres) == schemas.arrow_schema("errors")
    assert schemas.probability_columns(genres) == ["p_jazz", "p_rock"]


@pytest.mark.parametrize(
    "table, columns",
    [
        ("songs", ["song_id", "path", "genre", "confidence", "certainty", "top3", "duration_s", "model_id"]),
        ("clips", ["song_id", "clip_id", "clip_index", "start_s", "end_s", "genre", "confidence"]),
        ("errors", ["song_id", "path", "stage", "error_type", "message"]),
    ],
)
def test_tables_hold_the_documented_columns(table, columns):
    assert set(columns) <= set(schemas.arrow_schema(table).names)


def test_unknown_table():
    with pytest.raises(KeyError):
        schemas.spec("tracks")
