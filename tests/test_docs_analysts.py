"""Every query of docs/analysts.md, run against a small real tag output (local and on a real S3 server)."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest
from audio_factory import write_noise, write_tone

from mgr_batch.cli import main

pytestmark = pytest.mark.usefixtures("ray_cluster")

DOC = Path(__file__).resolve().parent.parent / "docs" / "analysts.md"
BLOCKS = re.findall(r"```(sql|python)\n(.*?)```", DOC.read_text(), flags=re.S)
N_SONGS = 5


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_model, tiny_crnn) -> Path:
    """``tags/`` (with embeddings) and ``tags-crnn/`` of the same files, side by side."""
    root = tmp_path_factory.mktemp("analysts")
    src = root / "audio"
    for i in range(3):
        write_tone(src / "jazz" / f"t{i}.wav", seconds=3.0 + 2 * i, freq=300.0 + 70 * i)
    for i in range(2):
        write_noise(src / "rock" / f"n{i}.flac", seconds=4.0, seed=i)
    (src / "rock" / "broken.mp3").write_bytes(b"not audio")
    assert main(["tag", str(src), "-o", str(root / "tags"), "--model", tiny_model, "--embeddings"]) == 0
    assert main(["tag", str(src), "-o", str(root / "tags-crnn"), "--model", tiny_crnn]) == 0
    return root


def test_the_doc_has_every_kind_of_query():
    text = DOC.read_text()
    assert len(BLOCKS) >= 10
    for needle in (
        "GROUP BY genre",
        "confidence >=",
        "error_type",
        "folder",
        "list_cosine_similarity",
        "array_cosine_similarity",
        "JOIN",
        "s3://",
    ):
        assert needle in text


def _check(ns: dict, where: str) -> None:
    """What the blocks' results must hold, whatever library made them."""
    per_genre = ns.get("per_genre")
    if per_genre is not None:
        if isinstance(per_genre, pd.Series):
            total = int(per_genre.sum())
        else:
            total = int(per_genre["songs"].sum())
        assert total == N_SONGS, where
    songs = pd.read_parquet("tags/songs")
    if "clips" in ns:
        n = songs.set_index("song_id").loc[ns["song_id"], "n_clips"]
        assert len(ns["clips"]) == n > 0, where
    if "neighbours" in ns:
        assert len(ns["neighbours"]) == N_SONGS - 1, where
    for name in ("errors_by_type", "mix_by_folder", "confident"):
        if name in ns:
            assert len(ns[name]) > 0, f"{where}: {name} is empty"
    if "both" in ns:
        assert len(ns["both"]) == N_SONGS, where
    if "like" in ns:  # the same answer as `mgr-batch similar`
        from mgr_batch.io.similar import similar

        like = pd.DataFrame(ns["like"] if isinstance(ns["like"], pd.DataFrame) else ns["like"].to_pandas())
        want = similar("tags", song=ns["song_id"], k=10)
        assert like["song_id"].tolist() == [w["song_id"] for w in want], where
        assert like["similarity"].tolist() == pytest.approx([w["similarity"] for w in want], abs=1e-4), where


@pytest.mark.parametrize("index", [i for i, (_, code) in enumerate(BLOCKS) if "s3://" not in code])
def test_local_query(index, outputs, monkeypatch):
    monkeypatch.chdir(outputs)
    kind, code = BLOCKS[index]
    if kind == "sql":
        rows = duckdb.sql(code).fetchall()
        assert rows, f"block {index} returned nothing"
        return
    ns: dict = {}
    exec(compile(code, f"analysts.md block {index}", "exec"), ns)
    _check(ns, f"block {index}")


@pytest.mark.parametrize("index", [i for i, (_, code) in enumerate(BLOCKS) if "s3://" in code])
def test_s3_query(index, outputs, s3_server, s3_bucket, monkeypatch):
    monkeypatch.chdir(outputs)
    s3_server.fs.put(str(outputs / "tags") + "/", f"{s3_bucket}/tags/", recursive=True)
    kind, code = BLOCKS[index]
    code = code.replace("s3://catalog", s3_bucket).replace("http://127.0.0.1:9000", s3_server.endpoint)
    assert kind == "python"
    ns: dict = {}
    exec(compile(code, f"analysts.md block {index}", "exec"), ns)
    _check(ns, f"block {index} (s3)")
    assert isinstance(ns["per_genre"], pd.Series | pd.DataFrame | pl.DataFrame)
