"""Compaction: parts merged into large sorted files, safe at every step (a real SIGKILL after each), resume after."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from audio_factory import write_tone

from mgr_batch.cli import main
from mgr_batch.io import compaction, output, schemas

pytestmark = pytest.mark.usefixtures("ray_cluster")

N_SONGS, N_BAD = 8, 2
KEYS = {
    "songs": ["song_id"],
    "clips": ["song_id", "clip_index"],
    "errors": ["song_id"],
    "timeline": ["song_id", "clip_index", "step_index"],
}


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, tiny_crnn) -> tuple[Path, Path]:
    """A tag output of 8 songs and 2 broken files, one part per song (so there is something to merge)."""
    root = tmp_path_factory.mktemp("compaction")
    src, out = root / "in", root / "out"
    for i in range(N_SONGS):
        write_tone(src / f"s{i}.wav", seconds=3.0 + (i % 3) * 2.5, freq=220.0 + 50 * i)
    for i in range(N_BAD):
        (src / f"bad{i}.wav").write_bytes(b"not audio")
    cmd = ["tag", str(src), "-o", str(out), "--model", tiny_crnn, "--songs-per-task", "1", "--timeline"]
    assert main(cmd) == 0
    return src, out


def read_all(out: str, table: str, so=None) -> pd.DataFrame:
    """Every row of ``table`` as mgr-batch reads it (commit record honoured), sorted by the table's keys."""
    fs, parts = output.parts(out, table, so)
    frames = []
    for p in parts:
        with fs.open(p, "rb") as f:
            frames.append(pq.read_table(f).to_pandas())
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS[table])
    return frame.sort_values(KEYS[table]).reset_index(drop=True)


def assert_same_rows(out: str, reference: dict[str, pd.DataFrame], so=None) -> None:
    for table, ref in reference.items():
        got = read_all(out, table, so)
        assert not got.duplicated(KEYS[table]).any(), f"{table}: a row counted twice"
        pd.testing.assert_frame_equal(got, ref, check_dtype=False)


def test_compact_merges_sorts_and_keeps_metadata(tagged, tmp_path, tiny_crnn):
    src, original = tagged
    out = tmp_path / "out"
    shutil.copytree(original, out)
    reference = {t: read_all(str(out), t) for t in KEYS}
    before = {t: len(list((out / t).glob("*.parquet"))) for t in KEYS}
    assert before["songs"] >= 4
    assert main(["compact", str(out), "--target-rows", "5"]) == 0
    assert_same_rows(str(out), reference)
    after = {t: sorted((out / t).glob("*.parquet")) for t in KEYS}
    assert len(after["songs"]) == 2  # 8 rows in small parts, 5 rows at most per file
    assert all(pq.ParquetFile(p).metadata.num_rows <= 5 for p in after["songs"])
    assert not any((out / t / compaction.JOURNAL).exists() for t in KEYS)
    # a plain glob reader sees every row once after a compaction
    assert len(pd.read_parquet(out / "clips")) == len(reference["clips"])
    genres = tuple(c[2:] for c in reference["songs"].columns if c.startswith("p_"))
    model_id = reference["songs"]["model_id"].iloc[0]
    for table in KEYS:
        for p in (out / table).glob("*.parquet"):
            meta = schemas.read_part_metadata(pq.read_schema(p).metadata)
            assert meta == {"schema_version": schemas.SCHEMA_VERSION, "model_id": model_id, "genres": genres}, p
            if p.name.startswith(compaction.PREFIX):
                keys = pq.read_table(p, columns=KEYS[table]).to_pandas()
                assert keys.equals(keys.sort_values(KEYS[table]).reset_index(drop=True)), f"{p} not sorted"
    # compacting again merges nothing more; a rerun of tag skips every song, then redoes one changed file
    assert main(["compact", str(out), "--target-rows", "5"]) == 0
    assert_same_rows(str(out), reference)
    tag = ["tag", str(src), "-o", str(out), "--model", tiny_crnn, "--timeline", "--compact"]
    assert main(tag) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"], run["n_songs"], run["n_errors"]) == (
        0,
        N_SONGS + N_BAD,
        N_SONGS,
        N_BAD,
    )
    changed = tmp_path / "in"
    shutil.copytree(src, changed)
    time.sleep(0.01)
    write_tone(changed / "s0.wav", seconds=9.5, freq=300.0)
    tag = ["tag", str(changed), "-o", str(out), "--model", tiny_crnn, "--timeline"]  # other paths: all redone
    assert main(tag) == 0


def test_tag_compact_and_resume_after(tagged, tmp_path, tiny_crnn):
    src, _ = tagged
    out = tmp_path / "out"
    tag = ["tag", str(src), "-o", str(out), "--model", tiny_crnn, "--songs-per-task", "1", "--timeline"]
    assert main([*tag, "--compact"]) == 0
    assert len(list((out / "songs").glob("*.parquet"))) == 1 and len(list((out / "clips").glob("*.parquet"))) == 1
    reference = {t: read_all(str(out), t) for t in KEYS}
    assert len(reference["songs"]) == N_SONGS and len(reference["errors"]) == N_BAD
    time.sleep(0.01)
    write_tone(src / "s1.wav", seconds=10.0, freq=500.0)  # changed: pruned out of the compacted file, redone
    try:
        assert main(tag) == 0
    finally:
        write_tone(src / "s1.wav", seconds=3.0 + 2.5, freq=270.0)
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"], run["n_songs"]) == (1, N_SONGS + N_BAD - 1, N_SONGS)
    songs = read_all(str(out), "songs")
    assert songs["song_id"].is_unique and len(songs) == N_SONGS
    clips = read_all(str(out), "clips")
    assert clips.groupby("song_id").size().reindex(songs["song_id"]).tolist() == songs["n_clips"].tolist()


def _kill_at_every_step(out: str, make_copy, reference, so=None, extra: list[str] = (), last: int | None = None) -> int:
    """Run ``compact`` in a real subprocess killed (SIGKILL) after step k, for every k (up to ``last``); after
    each kill the output reads as before, and the next ``compact`` repairs it and finishes. Returns the
    number of steps."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    k = 0
    while last is None or k < last:
        k += 1
        make_copy()
        cmd = [sys.executable, "-m", "mgr_batch.cli", "compact", out, "--target-rows", "5", *extra]
        proc = subprocess.run(cmd, env={**env, compaction.KILL_AT_ENV: str(k)}, capture_output=True, timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        assert_same_rows(out, reference, so)  # mgr-batch's readers, mid-compaction
        assert main(["compact", out, "--target-rows", "5", *extra]) == 0  # repairs, then finishes
        assert_same_rows(out, reference, so)
    if last is not None:
        return k
    assert k > 10  # several groups of five steps each were interrupted
    return k - 1


def test_a_kill_at_every_step_loses_and_doubles_nothing(tagged, tmp_path):
    _, original = tagged
    out = tmp_path / "out"
    reference = {t: read_all(str(original), t) for t in KEYS}

    def make_copy():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(original, out)

    steps = _kill_at_every_step(str(out), make_copy, reference)
    assert steps % 5 == 0


def test_a_kill_at_every_step_on_s3(tagged, s3_server, s3_bucket):
    _, original = tagged
    out = f"{s3_bucket}/tags"
    reference = {t: read_all(str(original), t) for t in ("songs", "clips", "errors")}
    tables = [t for t in ("songs", "clips", "errors")]

    def make_copy():
        if s3_server.fs.exists(out):
            s3_server.fs.rm(out, recursive=True)
        for t in tables:
            s3_server.fs.put(str(original / t) + "/", f"{out}/{t}/", recursive=True)
        s3_server.fs.invalidate_cache()

    so = s3_server.options
    # only the tables listed: the timeline's parts (each over 5 rows) merge nothing and would add no step.
    # The five steps of the first group: each kind of step once (the local test kills at every step).
    assert _kill_at_every_step(out, make_copy, reference, so, extra=s3_server.cli_options(), last=5) == 5


def test_merges_as_ray_tasks(tagged, tmp_path):
    """On a cluster each merge is a Ray task: it writes the same sorted file as the threads do, and a task's
    storage error reaches the caller as its own type (the CLI's one-line error), wrapped by Ray."""
    import ray

    from mgr_batch.config import CompactConfig, RayConfig
    from mgr_batch.execution.compact import compact_output, in_ray_tasks

    _, out = tagged
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    reference = {t: read_all(str(out), t) for t in KEYS}
    summary = compact_output(str(copy), None, CompactConfig(target_rows=5), RayConfig())  # Ray is up: tasks
    assert summary["tables"]["clips"]["merged_groups"] >= 2
    assert_same_rows(str(copy), reference)
    clips = summary["tables"]["clips"]
    assert clips["parts_after"] < clips["parts_before"]
    assert len(list((copy / "clips").glob(f"{compaction.PREFIX}*.parquet"))) == clips["merged_groups"]

    table = compaction._table(str(copy), "songs", None)
    job = compaction.Merge(table, ["part-missing.parquet"], {"part-missing.parquet": None}, None)
    with pytest.raises(FileNotFoundError) as raised:
        in_ray_tasks([job])
    assert isinstance(raised.value, ray.exceptions.RayTaskError)  # it ran as a task, and failed there
