"""Resumable, incremental tagging: reruns do only what is missing, and a killed run loses nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from audio_factory import write_noise, write_tone
from faults import kill_mid_run, own_ray_env, tag_command

from mgr_batch.cli import main

pytestmark = pytest.mark.usefixtures("ray_cluster")


def tables(out: Path) -> dict[str, pd.DataFrame]:
    empty = pd.DataFrame({"song_id": pd.Series(dtype=str), "clip_id": pd.Series(dtype=str)})
    return {t: pd.read_parquet(out / t) if (out / t).exists() else empty for t in ("songs", "clips", "errors")}


def assert_consistent(out: Path, n_files: int) -> dict[str, pd.DataFrame]:
    t = tables(out)
    assert t["songs"]["song_id"].is_unique and t["errors"]["song_id"].is_unique
    assert not set(t["songs"]["song_id"]) & set(t["errors"]["song_id"])
    assert len(t["songs"]) + len(t["errors"]) == n_files
    assert not t["clips"]["clip_id"].duplicated().any()
    per_song = t["clips"].groupby("song_id").size()
    assert per_song.reindex(t["songs"]["song_id"]).tolist() == t["songs"]["n_clips"].tolist()
    return t


def test_incremental_reruns(tmp_path, tiny_model):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        write_tone(src / f"t{i}.wav", seconds=4.0 + i, freq=300.0 + 100 * i)
    (src / "bad.wav").write_bytes(b"no")
    tag = ["tag", str(src), "--output", str(out), "--model", tiny_model]
    assert main(tag) == 0
    assert_consistent(out, 4)

    write_noise(src / "new1.flac", seconds=3.0)
    write_noise(src / "new2.ogg", seconds=7.0, seed=3)
    assert main(tag) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"], run["n_songs"], run["n_errors"]) == (2, 4, 5, 1)
    assert_consistent(out, 6)

    time.sleep(0.01)
    write_tone(src / "t0.wav", seconds=9.0)  # changed: other length, new mtime
    assert main(tag) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"]) == (1, 5)
    t = assert_consistent(out, 6)
    assert t["songs"].set_index("path").loc[str(src / "t0.wav"), "n_clips"] == 3

    assert main([*tag, "--force"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"]) == (6, 0)
    assert_consistent(out, 6)


def test_rerun_with_other_clip_settings_is_refused(tmp_path, tiny_model, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    write_tone(src / "a.wav", seconds=4.0)
    assert main(["tag", str(src), "-o", str(out), "--model", tiny_model]) == 0
    assert main(["tag", str(src), "-o", str(out), "--model", tiny_model, "--hop-seconds", "1"]) == 2
    assert "other clip settings" in capsys.readouterr().err


def test_a_killed_run_reruns_to_the_clean_result(tmp_path, tiny_model):
    src = tmp_path / "in"
    n = 24
    for i in range(n):
        write_tone(src / f"s{i:02d}.wav", seconds=3.0 + (i % 4), freq=200.0 + 37 * i)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main(["tag", str(src), "-o", str(clean), "--model", tiny_model, "--songs-per-task", "1"]) == 0

    cmd = tag_command(str(src), str(killed), tiny_model)
    kill_mid_run(cmd, lambda: len(list((killed / "songs").glob("*.parquet"))))
    partial = len(list((killed / "songs").glob("*.parquet")))
    assert 3 <= partial < n

    assert (
        subprocess.run(
            cmd, env=own_ray_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300
        ).returncode
        == 0
    )
    run = json.loads((killed / "run.json").read_text())
    assert run["n_skipped"] >= 3 and run["n_processed"] + run["n_skipped"] == n
    a, b = assert_consistent(clean, n), assert_consistent(killed, n)
    cols = [c for c in a["songs"].columns if c.startswith("p_")]
    left = a["songs"].set_index("song_id").sort_index()
    right = b["songs"].set_index("song_id").sort_index()
    assert list(left.index) == list(right.index)
    pd.testing.assert_frame_equal(left[cols], right[cols], atol=1e-5)
    assert len(a["clips"]) == len(b["clips"])


def test_a_changed_file_listed_in_a_manifest_is_redone(tmp_path, tiny_model):
    """Manifest rows take the size and modification time a folder listing gives, so resume notices a change."""
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        write_tone(src / f"m{i}.wav", seconds=3.0, freq=300.0 + 100 * i)
    pd.DataFrame({"path": ["m0.wav", "m1.wav"]}).to_csv(src / "list.csv", index=False)
    tag = ["tag", str(src / "list.csv"), "--output", str(out), "--model", tiny_model]
    assert main(tag) == 0
    assert main(tag) == 0
    assert json.loads((out / "run.json").read_text())["n_skipped"] == 2
    write_tone(src / "m0.wav", seconds=7.0, freq=500.0)  # changed after it was tagged
    assert main(tag) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"]) == (1, 1)
    songs = assert_consistent(out, 2)["songs"].set_index("path")
    assert songs.loc[str(src / "m0.wav"), "n_clips"] == 2 and songs.loc[str(src / "m0.wav"), "size"] > 0


def test_a_changed_object_listed_in_an_s3_manifest_is_redone(tmp_path, tiny_model, s3_server, s3_bucket):
    fs = s3_server.fs
    for i in range(3):
        write_tone(tmp_path / f"o{i}.wav", seconds=3.0, freq=300.0 + 100 * i)
        fs.put(str(tmp_path / f"o{i}.wav"), f"{s3_bucket}/in/sub/o{i}.wav")
    fs.pipe(f"{s3_bucket}/in/list.csv", b"path\nsub/o0.wav\nsub/o1.wav\nsub/o2.wav\n")
    out = tmp_path / "out"
    tag = ["tag", f"{s3_bucket}/in/list.csv", "--output", str(out), "--model", tiny_model, *s3_server.cli_options()]
    assert main(tag) == 0
    songs = pd.read_parquet(out / "songs")
    assert (songs["size"] > 0).all() and (songs["mtime"] > 0).all()
    write_tone(tmp_path / "o1.wav", seconds=6.5, freq=800.0)
    fs.put(str(tmp_path / "o1.wav"), f"{s3_bucket}/in/sub/o1.wav")
    assert main(tag) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["n_processed"], run["n_skipped"]) == (1, 2)
    songs = assert_consistent(out, 3)["songs"].set_index("path")
    assert songs.loc[f"{s3_bucket}/in/sub/o1.wav", "n_clips"] == 2
