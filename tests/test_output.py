"""mgr_batch.io.output: plan and prune without Ray, over a grid of what an output folder can hold for each listed
file (done, done as an error, changed, another model's, missing a required table, leftovers of a killed run);
and, through a real run, every table exists after it, empty with its schema when it has no rows."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audio_factory import write_tone

from mgr_batch.cli import main
from mgr_batch.config import GTZAN_GENRES
from mgr_batch.io import output, schemas
from mgr_batch.io.index import Output
from mgr_batch.io.schemas import arrow_schema
from mgr_batch.io.storage import list_inputs

MODEL = "cnn-aaaaaaaaaaaa"
OTHER = "cnn-bbbbbbbbbbbb"
GENRES = ("blues", "rock")

#: What the output holds for one listed file, and what plan must then say about it.
STATES = {
    "new": dict(todo=True, pruned=False),
    "done": dict(todo=False, pruned=False),
    "done_error": dict(todo=False, pruned=False),
    "changed": dict(todo=True, pruned=True),  # tagged, then the file was rewritten
    "other_model": dict(todo=True, pruned=True),
    "no_timeline": dict(todo=True, pruned=True),  # tagged without --timeline, rerun with it
    "orphan_clips": dict(todo=True, pruned=True),  # clips written, the run killed before its songs part
}


def _song(row: dict, model_id: str) -> dict:
    return {
        "song_id": row["song_id"],
        "path": row["path"],
        "size": int(row["size"]),
        "mtime": float(row["mtime"]),
        "duration_s": 3.0,
        "analyzed_s": 3.0,
        "sample_rate": 22050,
        "channels": 1,
        "decode_notes": "",
        "n_clips": 1,
        "used_start_s": [0.0],
        "used_end_s": [3.0],
        "truncated": False,
        "genre": "rock",
        "confidence": 0.9,
        "certainty": 1.0,
        "top3": ["rock", "blues"],
        "model_id": model_id,
        "p_blues": 0.1,
        "p_rock": 0.9,
    }


def _clip(row: dict, model_id: str) -> dict:
    return {
        "song_id": row["song_id"],
        "clip_id": f"{row['song_id']}-00000",
        "path": row["path"],
        "clip_index": 0,
        "start_s": 0.0,
        "end_s": 3.0,
        "genre": "rock",
        "confidence": 0.9,
        "model_id": model_id,
        "p_blues": 0.1,
        "p_rock": 0.9,
    }


def _error(row: dict, model_id: str) -> dict:
    return {
        "song_id": row["song_id"],
        "path": row["path"],
        "size": int(row["size"]),
        "mtime": float(row["mtime"]),
        "stage": "decode",
        "error_type": "AudioDecodeError",
        "message": "not audio",
        "model_id": model_id,
    }


def _timeline(row: dict, model_id: str) -> dict:
    return {
        "song_id": row["song_id"],
        "path": row["path"],
        "clip_index": 0,
        "step_index": 0,
        "time_s": 1.5,
        "genre": "rock",
        "probabilities": [0.1, 0.9],
        "model_id": model_id,
    }


def _write(out: Path, table: str, rows: list[dict], part: str) -> None:
    if rows:
        (out / table).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema(table, GENRES)), out / table / f"{part}.parquet")


def _listing(folder: Path, kind: str):
    if kind == "folder":
        return list_inputs(str(folder)).files
    manifest = folder.parent / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{p.name}\n" for p in sorted(folder.iterdir())))
    return list_inputs(str(manifest)).files


def _outputs(files, out: Path, *, require_timeline: bool) -> None:
    """Write what earlier runs left for each file (its state is its name's stem), as a run writes it: one batch
    per state, each batch's parts under one name in every table, a killed run's batch without its songs part."""
    by_state: dict[str, dict[str, list]] = {}
    for row in files.to_dict("records"):
        state = Path(row["path"]).stem.split("-")[0]
        rows = by_state.setdefault(state, {t: [] for t in ("songs", "clips", "errors", "timeline")})
        if state in ("done", "no_timeline"):
            rows["songs"].append(_song(row, MODEL))
            rows["clips"].append(_clip(row, MODEL))
            if state == "done" and require_timeline:
                rows["timeline"].append(_timeline(row, MODEL))
        elif state == "done_error":
            rows["errors"].append(_error(row, MODEL))
        elif state == "changed":
            rows["songs"].append(_song(row | {"size": row["size"] + 1, "mtime": row["mtime"] - 60}, MODEL))
            rows["clips"].append(_clip(row, MODEL))
        elif state == "other_model":
            rows["songs"].append(_song(row, OTHER))
            rows["clips"].append(_clip(row, OTHER))
        elif state == "orphan_clips":
            rows["clips"].append(_clip(row, MODEL))
    for state, rows in by_state.items():
        for table, table_rows in rows.items():
            _write(out, table, table_rows, f"part-{state}")


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "audio"
    folder.mkdir()
    for state in STATES:
        for k in range(2):
            (folder / f"{state}-{k}.wav").write_bytes(os.urandom(64 + k))
    return folder


@pytest.mark.parametrize("listing", ["folder", "manifest"])
@pytest.mark.parametrize("require_timeline", [False, True])
def test_plan_over_every_state(corpus, tmp_path, listing, require_timeline):
    files = _listing(corpus, listing)
    out = tmp_path / "out"
    _outputs(files, out, require_timeline=require_timeline)
    plan = output.plan(files, Output.open(str(out), None), MODEL, require=("timeline",) if require_timeline else ())

    state_of = {r["song_id"]: Path(r["path"]).stem.split("-")[0] for r in files.to_dict("records")}
    expect = {s: dict(e) for s, e in STATES.items()}
    if not require_timeline:
        expect["no_timeline"] = STATES["done"]
    todo = set(plan.todo["song_id"])
    for song_id, state in state_of.items():
        assert (song_id in todo) == expect[state]["todo"], f"{state}: todo"
        assert (song_id in plan.prune) == expect[state]["pruned"], f"{state}: pruned"
    assert plan.skipped == sum(not expect[s]["todo"] for s in state_of.values())
    assert plan.skipped + len(plan.todo) == len(files)


def test_rows_of_files_no_longer_listed(corpus, tmp_path):
    """A file gone from the listing keeps its rows (another run may list it again), unless they are another
    model's or leftovers of a killed run."""
    files = list_inputs(str(corpus)).files
    out = tmp_path / "out"
    gone = {"song_id": "0123456789abcdef", "path": "/gone.wav", "size": 1, "mtime": 1.0}
    gone_other = {"song_id": "fedcba9876543210", "path": "/gone-other.wav", "size": 1, "mtime": 1.0}
    gone_orphan = {"song_id": "00000000ffffffff", "path": "/gone-orphan.wav", "size": 1, "mtime": 1.0}
    _write(out, "songs", [_song(gone, MODEL), _song(gone_other, OTHER)], "part-x")
    _write(out, "clips", [_clip(gone, MODEL), _clip(gone_other, OTHER)], "part-x")
    _write(out, "clips", [_clip(gone_orphan, MODEL)], "part-y")  # a killed run's batch: no songs part
    plan = output.plan(files, Output.open(str(out), None), MODEL)
    assert gone["song_id"] not in plan.prune
    assert {gone_other["song_id"], gone_orphan["song_id"]} <= plan.prune
    assert len(plan.todo) == len(files)  # nothing listed is done


def test_prune_removes_exactly_the_rows_and_drops_emptied_parts(corpus, tmp_path):
    files = list_inputs(str(corpus)).files
    out = tmp_path / "out"
    _outputs(files, out, require_timeline=True)
    before = output.table_counts(str(out), None)
    tables = Output.open(str(out), None)
    plan = output.plan(files, tables, MODEL, require=("timeline",))
    kept = {t: output.read_column_set(str(out), t, ["song_id"], None) for t in ("songs", "clips", "errors")}
    expected_removed = sum(int(kept[t]["song_id"].isin(plan.prune).sum()) for t in kept)

    assert output.prune(tables, plan.prune) == expected_removed > 0
    after = output.table_counts(str(out), None)
    for t in ("songs", "clips", "errors"):
        left = output.read_column_set(str(out), t, ["song_id"], None)["song_id"]
        assert not set(left) & plan.prune
        assert len(left) == before[t] - int(kept[t]["song_id"].isin(plan.prune).sum()) == after[t]
    # every part that held only pruned rows is gone; no part is left empty
    for t in ("songs", "clips", "errors", "timeline"):
        for part in (out / t).glob("*.parquet"):
            assert pq.read_metadata(part).num_rows > 0
    # a second plan after pruning finds nothing left to prune but the redone files' absence
    again = output.plan(files, Output.open(str(out), None), MODEL, require=("timeline",))
    assert set(again.todo["song_id"]) == set(plan.todo["song_id"])
    assert not again.prune
    assert output.prune(Output.open(str(out), None), frozenset()) == 0


def test_deduplicate_keeps_one_copy_of_each_song_listed_under_two_parts(corpus, tmp_path):
    """A killed run's late batch and the rerun's batch hold the same songs under other part names: one copy is
    kept (the current one over a stale one, a song over an error), with its clips, and nothing else is touched."""
    files = list_inputs(str(corpus)).files.sort_values("path").reset_index(drop=True)
    out = tmp_path / "out"
    rows = files.to_dict("records")
    a, b, c, d, e = rows[:5]
    changed = b | {"size": b["size"] + 1}
    _write(out, "songs", [_song(r, MODEL) for r in (a, b, c)], "part-late")  # the killed run's late write
    _write(out, "clips", [_clip(r, MODEL) for r in (a, b, c)], "part-late")
    _write(out, "songs", [_song(a, MODEL), _song(changed, MODEL), _song(d, MODEL)], "part-rerun")
    _write(out, "clips", [_clip(a, MODEL), _clip(changed, MODEL), _clip(d, MODEL)], "part-rerun")
    _write(out, "errors", [_error(c, MODEL), _error(e, MODEL)], "part-rerun")

    # the rerun's a and the stale b (a songs and a clips row each), the error row of c
    assert output.deduplicate(Output.open(str(out), None), files, MODEL) == 5
    songs = pd.concat(pd.read_parquet(p).assign(part=p.stem) for p in sorted((out / "songs").glob("*.parquet")))
    clips = pd.concat(pd.read_parquet(p).assign(part=p.stem) for p in sorted((out / "clips").glob("*.parquet")))
    errors = pd.read_parquet(out / "errors")
    assert sorted(songs["song_id"]) == sorted(r["song_id"] for r in (a, b, c, d))
    by_song = dict(zip(songs["song_id"], songs["part"], strict=True))
    assert by_song[a["song_id"]] == "part-late"  # equal copies: the part first by name
    assert by_song[b["song_id"]] == "part-late"  # the copy whose size matches the listing
    assert songs.loc[songs["song_id"] == b["song_id"], "size"].item() == b["size"]
    assert list(errors["song_id"]) == [e["song_id"]]  # c's error row gave way to its songs row
    assert dict(zip(clips["song_id"], clips["part"], strict=True)) == by_song
    assert output.deduplicate(Output.open(str(out), None), files, MODEL) == 0


def _columns(out: Path, table: str) -> list[str]:
    return list(pd.read_parquet(out / table).columns)


@pytest.mark.usefixtures("ray_cluster")
def test_every_table_exists_after_a_run_even_with_no_rows(tmp_path, tiny_crnn):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        write_tone(src / f"t{i}.wav", seconds=3.0, freq=300.0 + 100 * i)
    tag = ["tag", str(src), "--output", str(out), "--model", tiny_crnn, "--timeline"]
    assert main(tag) == 0
    errors = pd.read_parquet(out / "errors")  # the README's example: a run with no errors still has the table
    assert errors.empty and list(errors.columns) == schemas.arrow_schema("errors").names
    assert pq.read_schema(out / "errors" / output.EMPTY_PART).equals(
        schemas.arrow_schema("errors"), check_metadata=False
    )
    assert len(pd.read_parquet(out / "songs")) == 2

    (src / "bad.wav").write_bytes(b"RIFF not audio")  # the rerun writes an error row: the empty part goes
    assert main(tag) == 0
    assert len(pd.read_parquet(out / "errors")) == 1 and not (out / "errors" / output.EMPTY_PART).exists()

    only_bad, out2 = tmp_path / "bad", tmp_path / "out2"
    only_bad.mkdir()
    (only_bad / "bad.wav").write_bytes(b"RIFF not audio")
    assert main(["tag", str(only_bad), "--output", str(out2), "--model", tiny_crnn, "--timeline"]) == 0
    for table in ("songs", "clips", "timeline"):
        assert pd.read_parquet(out2 / table).empty, table
        assert _columns(out2, table) == schemas.arrow_schema(table, GTZAN_GENRES).names, table
    assert len(pd.read_parquet(out2 / "errors")) == 1


def test_planning_reads_no_clip_row(corpus, tmp_path):
    """Once the index knows an output, a rerun's plan (and its counts) open no clips part of a whole batch: each
    is overwritten with garbage of the same size and modification time, and planning still says the same (the
    one part a killed run left without its songs part is still read: it is to be pruned)."""
    files = list_inputs(str(corpus)).files
    out = tmp_path / "out"
    _outputs(files, out, require_timeline=False)
    first = Output.open(str(out), None)
    expected = output.plan(files, first, MODEL)
    counts = first.counts()
    first.save()
    clip_parts = [p for p in sorted((out / "clips").glob("*.parquet")) if (out / "songs" / p.name).exists()]
    assert len(clip_parts) >= 3 and counts["clips"] > 0
    for part in clip_parts:  # the fault: no clips part can be read any more
        st = part.stat()
        part.write_bytes(b"\0" * st.st_size)
        os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))
        with pytest.raises(pa.ArrowInvalid):
            pq.read_metadata(part)
    tables = Output.open(str(out), None)
    again = output.plan(files, tables, MODEL)
    assert set(again.todo["song_id"]) == set(expected.todo["song_id"]) and again.prune == expected.prune
    assert tables.counts() == counts
    newcomer = files.iloc[:1].assign(song_id="feedfacefeedface", path="/new.wav")
    grown = output.plan(pd.concat([files, newcomer], ignore_index=True), tables, MODEL)
    assert "feedfacefeedface" in set(grown.todo["song_id"])


def test_a_file_is_done_only_with_a_row_of_its_size_and_mtime():
    """The plan's lookup: a song listed twice in the done rows counts as done when either row matches the file
    (the first row seen is not the only one asked), and a changed size or mtime is never done."""
    done = pd.DataFrame(
        {"song_id": ["a", "b", "b", "c"], "size": [1, 2, 3, 4], "mtime": [1.0, 2.0, 3.0, 4.0]},
    )
    files = pd.DataFrame(
        {
            "song_id": pd.array(["a", "b", "c", "d", "b"], dtype=pd.StringDtype("pyarrow")),
            "size": [1, 3, 4, 5, 9],
            "mtime": [1.0, 3.0, 4.5, 5.0, 2.0],
        }
    )
    assert output._is_done(files, done).tolist() == [True, True, False, False, False]
