"""Write docs/schemas.md from schemas/*.json (``python tools/schemas_doc.py``; a test fails while it is stale)."""

from pathlib import Path

from mgr_batch.io.schemas import markdown

if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "docs" / "schemas.md"
    target.write_text(markdown())
    print(f"wrote {target}")
