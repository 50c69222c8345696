"""docs/schemas.md is generated from schemas/*.json and must not go stale."""

from pathlib import Path

from mgr_batch.io import schemas


def test_schemas_doc_is_current():
    doc = Path(__file__).resolve().parent.parent / "docs" / "schemas.md"
    assert doc.read_text() == schemas.markdown(), "docs/schemas.md is stale: run python tools/schemas_doc.py"


def test_schemas_doc_lists_every_column():
    text = schemas.markdown()
    for name in schemas.TABLES:
        assert f"## `{name}`" in text
        for column in schemas.spec(name)["columns"]:
            assert f"| `{column['name']}` |" in text
