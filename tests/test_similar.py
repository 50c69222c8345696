"""``mgr-batch similar``: the k nearest songs by cosine similarity of stored vectors, checked against numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mgr_batch.cli import main
from mgr_batch.io import schemas, similar

DIMS = 24


def embeddings_part(vectors: np.ndarray, ids: list[str], feature_id: str = "aaaaaaaaaaaa") -> pa.Table:
    """Rows of the embeddings table in its own schema (the vector in its stored type, float16 or float32)."""
    n = len(ids)
    values = {
        "song_id": ids,
        "path": [f"/music/{i}.mp3" for i in ids],
        "feature_id": [feature_id] * n,
        "feature": ["test"] * n,
        "model_id": [feature_id] * n,
        "layer": ["test"] * n,
        "dims": [vectors.shape[1]] * n,
        "n_clips": [3] * n,
    }
    schema = schemas.arrow_schema("embeddings")
    arrays = []
    for field in schema:
        if field.name == "vector":
            item = field.type.value_type
            flat = pa.array(vectors.reshape(-1).astype(item.to_pandas_dtype()), item)
            arrays.append(pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * vectors.shape[1]), flat))
        else:
            arrays.append(pa.array(values[field.name], field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def stored(vectors: np.ndarray) -> np.ndarray:
    """The vectors as the table keeps them, in float64."""
    item = schemas.arrow_schema("embeddings").field("vector").type.value_type
    return vectors.astype(item.to_pandas_dtype()).astype(np.float64)


@pytest.fixture
def catalog(tmp_path) -> tuple[Path, np.ndarray, list[str]]:
    """60 songs near 4 centres in two parts, one zero vector, and 5 songs of another kind of vector."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, DIMS))
    vectors = centres[rng.integers(0, 4, 60)] + 0.4 * rng.standard_normal((60, DIMS))
    vectors[7] = 0.0
    ids = [f"{i:016x}" for i in range(60)]
    out = tmp_path / "out"
    (out / "embeddings").mkdir(parents=True)
    (out / "songs").mkdir()
    pq.write_table(embeddings_part(vectors[:35], ids[:35]), out / "embeddings" / "part-a.parquet")
    pq.write_table(embeddings_part(vectors[35:], ids[35:]), out / "embeddings" / "part-b.parquet")
    other = rng.standard_normal((5, 8))  # another feature: other length, never compared with the rest
    pq.write_table(
        embeddings_part(other, [f"other{i}" for i in range(5)], "bbbbbbbbbbbb"), out / "embeddings" / "part-c.parquet"
    )
    return out, vectors, ids


def numpy_nearest(vectors: np.ndarray, i: int, k: int) -> list[tuple[int, float]]:
    m = stored(vectors)
    norms = np.linalg.norm(m, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sims = np.nan_to_num(m @ m[i] / (norms * norms[i]))
    sims[i] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return [(int(j), float(sims[j])) for j in order]


def test_the_k_nearest_are_numpys(catalog, capsys):
    out, vectors, ids = catalog
    for i in (0, 12, 40):
        assert main(["similar", str(out), "--song", ids[i], "--k", "5", "--json"]) == 0
        found = json.loads(capsys.readouterr().out)
        want = numpy_nearest(vectors, i, 5)
        assert [f["song_id"] for f in found] == [ids[j] for j, _ in want]
        assert [f["similarity"] for f in found] == pytest.approx([s for _, s in want], abs=1e-5)
        assert [f["path"] for f in found] == [f"/music/{ids[j]}.mp3" for j, _ in want]
        assert ids[i] not in {f["song_id"] for f in found}
    assert (out / "_similar" / "index.json").is_file()


def test_by_path_as_a_table_and_k_past_the_catalog(catalog, capsys):
    out, vectors, ids = catalog
    assert main(["similar", str(out), "--song", f"/music/{ids[3]}.mp3", "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "similarity", "song_id", "path"]
    assert [line.split()[2] for line in lines[1:]] == [ids[j] for j, _ in numpy_nearest(vectors, 3, 3)]
    found = similar.similar(str(out), song="other2", k=50)  # only its own kind: 4 others
    assert sorted(f["song_id"] for f in found) == ["other0", "other1", "other3", "other4"]


def test_the_zero_vector_is_like_nothing(catalog):
    out, _, ids = catalog
    found = similar.similar(str(out), song=ids[7], k=3)
    assert len(found) == 3 and all(f["similarity"] == 0.0 for f in found)


def test_a_new_part_is_seen_by_the_next_query(catalog):
    out, vectors, ids = catalog
    assert similar.similar(str(out), song=ids[0], k=1)[0]["song_id"] != "twin"
    pq.write_table(embeddings_part(vectors[:1] * 2.0, ["twin"]), out / "embeddings" / "part-d.parquet")
    best = similar.similar(str(out), song=ids[0], k=1)[0]
    assert best["song_id"] == "twin" and best["similarity"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--song", "0000000000000000", "--k", "0"], "--k must be at least 1"),
        (["--song", "nope"], "is not in"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(catalog, capsys, argv, message):
    out, _, _ = catalog
    assert main(["similar", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_an_output_without_vectors(tmp_path, capsys):
    (tmp_path / "songs").mkdir()
    assert main(["similar", str(tmp_path), "--song", "x"]) == 2
    assert "no embeddings/ table" in capsys.readouterr().err
    assert main(["similar", str(tmp_path / "missing"), "--song", "x"]) == 2


def answer(out: Path, song: str, k: int, threshold: int) -> list[tuple[str, float]]:
    return [
        (f["song_id"], f["similarity"]) for f in similar.similar(str(out), song=song, k=k, index_threshold=threshold)
    ]


def assert_same(approximate: list[tuple[str, float]], exact: list[tuple[str, float]]) -> None:
    assert [s for s, _ in approximate] == [s for s, _ in exact]
    assert [v for _, v in approximate] == pytest.approx([v for _, v in exact], abs=1e-6)


def test_past_the_threshold_the_index_answers_as_exact_search_and_is_kept_beside_the_tables(catalog):
    out, _, ids = catalog
    for song in ids[:7] + ids[8:60:5]:
        assert_same(answer(out, song, 10, threshold=20), answer(out, song, 10, threshold=10**9))
    kept = sorted(p.name for p in (out / "_similar").iterdir())
    index = json.loads((out / "_similar" / "index.json").read_text())
    # only the kind of 60 vectors has one: the other kind's 5 stay under the threshold
    (key,) = index["ann"]
    assert f"{key}.usearch" in kept and f"{key}.usearch-keys.npy" in kept and len(kept) == 2 * 2 + 1 + 2
    assert index["ann"][key] == index["parts"]
    assert len(np.load(out / "_similar" / f"{key}.usearch-keys.npy")) == 60
    assert answer(out, "other0", 4, threshold=20) == answer(out, "other0", 4, threshold=10**9)


def test_the_index_follows_a_redone_and_a_removed_song(catalog):
    out, vectors, ids = catalog
    before = [s for s, _ in answer(out, ids[0], 59, threshold=20)]
    far = max(range(37, 60), key=lambda i: before.index(ids[i]))  # of the second part, the least like ids[0]
    assert before.index(ids[far]) > 0 and ids[36] in before
    redone = vectors[35:].copy()
    redone[far - 35] = 3.0 * vectors[0]  # redone: now the song most like ids[0]
    keep = [i for i in range(25) if i != 36 - 35]  # ids[36] removed
    pq.write_table(embeddings_part(redone[keep], [ids[35 + i] for i in keep]), out / "embeddings" / "part-b.parquet")
    after = answer(out, ids[0], 59, threshold=20)
    assert after[0][0] == ids[far] and after[0][1] == pytest.approx(1.0, abs=1e-5)
    assert ids[36] not in [s for s, _ in after] and len(after) == 58
    assert_same(after, answer(out, ids[0], 59, threshold=10**9))
    (key,) = json.loads((out / "_similar" / "index.json").read_text())["ann"]
    assert (
        len(np.load(out / "_similar" / f"{key}.usearch-keys.npy")) == 59
    )  # the old vector of the redone song gone too
    (out / "embeddings" / "part-b.parquet").unlink()  # its songs pruned
    gone = answer(out, ids[0], 59, threshold=20)
    assert len(gone) == 34 and not {s for s, _ in gone} & set(ids[35:])
    assert_same(gone, answer(out, ids[0], 59, threshold=10**9))


def test_an_index_answer_short_of_k_is_searched_exactly():
    """HNSW can come back with fewer songs than asked for; the query then answers by exact search, not short."""
    from usearch.index import Index

    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((60, DIMS)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    keys = np.arange(100, 160, dtype=np.uint64)
    ann = Index(ndim=DIMS, metric="cos", dtype="f16")
    ann.add(keys[:5], matrix[:5])  # an index that reaches 5 of the 60 songs
    assert len(ann.search(matrix[0], 11).keys) == 5  # the fault: an answer short of what was asked
    rows, sims = similar._nearest_approximate(
        ann, pa.table({"key": keys}), matrix, matrix[0], 10, exclude=np.array([0])
    )
    exact_rows, exact_sims = similar._nearest_normalized(matrix, matrix[0], 10, exclude=np.array([0]))
    assert len(rows) == 10 and list(rows) == list(exact_rows) and np.allclose(sims, exact_sims)
