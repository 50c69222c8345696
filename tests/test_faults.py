"""Real faults during ``mgr-batch tag`` (no mocks): a worker node SIGKILLed on a multi-node Ray cluster, the S3
server stopped mid-run and started again, the driver SIGKILLed while writing to object storage, and the
output's disk full. Each ends with every input file in exactly one table, as a clean run leaves it.
(A reader that fails mid-file: tests/test_read_faults.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from audio_factory import write_noise, write_tone
from faults import kill_mid_run, own_ray_env, tag_command

from mgr_batch.cli import main

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("ray_cluster")]

HERE = Path(__file__).resolve().parent


def _catalog(folder: Path, n: int) -> set[str]:
    for i in range(n):
        if i % 2:
            write_noise(folder / f"n{i:02d}.wav", seconds=3.0 + i % 3, seed=i)
        else:
            write_tone(folder / f"t{i:02d}.flac", seconds=3.0 + i % 3, freq=200.0 + 30 * i)
    return {str(p) for p in folder.iterdir()}


def _read(fs, root: str, table: str) -> pd.DataFrame:
    """Every part of a table, each read whole: a half-written part would fail here."""
    parts = [
        p
        for p in fs.ls(f"{root}/{table}", detail=False)
        if p.endswith(".parquet") and not p.split("/")[-1].startswith(".")
    ]
    frames = []
    for p in parts:
        with fs.open(p, "rb") as f:
            frames.append(pq.read_table(f).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"song_id": [], "path": []})


def assert_exactly_once(songs: pd.DataFrame, errors: pd.DataFrame, clips: pd.DataFrame, listed: set[str]) -> None:
    assert set(songs["path"]) | set(errors["path"]) == listed
    assert len(songs) + len(errors) == len(listed) and songs["song_id"].is_unique and errors["song_id"].is_unique
    assert clips["clip_id"].is_unique
    assert clips.groupby("song_id").size().reindex(songs["song_id"]).tolist() == songs["n_clips"].tolist()


def _same_predictions(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = sorted(c for c in a.columns if c.startswith("p_"))
    left, right = a.set_index("path").sort_index(), b.set_index("path").sort_index()
    assert list(left.index) == list(right.index)
    pd.testing.assert_frame_equal(left[cols], right[cols], atol=1e-5)


def test_a_worker_node_killed_mid_run(tmp_path, tiny_model):
    """A head and two worker nodes (``ray.cluster_utils.Cluster``, in a subprocess of their own); one worker node
    is SIGKILLed (raylet and workers) once two songs parts are written. Ray retries the lost tasks and rebuilds
    lost blocks from lineage: the run completes, every file exactly once, the same predictions as a clean run."""
    src, out, result = tmp_path / "in", tmp_path / "out", tmp_path / "result.json"
    listed = _catalog(src, 12)
    env = own_ray_env() | {"PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run(
        [sys.executable, str(HERE / "cluster_run.py"), str(src), str(out), tiny_model, str(result)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(result.read_text())
    print("node-kill run:", info)
    assert info["nodes"] == 3 and "parts_at_kill" in info, info
    # The fault hit the run: the node died while one of its workers ran a task of the run, with work left.
    assert info["victim_busy"] and not info["victim_alive_after"], info
    assert info["parts_at_kill"] < len(listed), "killed after every batch was written"
    if info["code"] != 0:  # a failed run says why, and the rerun completes it
        assert info.get("error"), info
        assert main(["tag", str(src), "--output", str(out), "--model", tiny_model, "--songs-per-task", "1"]) == 0
    tables = {t: pd.read_parquet(out / t) for t in ("songs", "clips", "errors")}
    assert_exactly_once(tables["songs"], tables["errors"], tables["clips"], listed)
    assert tables["errors"].empty
    clean = tmp_path / "clean"
    assert main(["tag", str(src), "--output", str(clean), "--model", tiny_model]) == 0
    _same_predictions(tables["songs"], pd.read_parquet(clean / "songs"))


@pytest.fixture
def own_s3_server():
    """A moto S3 server of this test's own on a fixed port, which the test stops and starts again (moto keeps
    its buckets in this process, so a restarted server serves the same objects)."""
    import socket

    from moto.server import ThreadedMotoServer

    for var, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(var, value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    holder = {"server": ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)}
    holder["server"].start()
    holder["port"] = port
    yield holder
    holder["server"].stop()


def refuse_connections(port: int, seconds: float) -> int:
    """For ``seconds``, reset every connection to 127.0.0.1:``port`` at once, as a server that is down (a stopped
    server's port refuses them; this one counts them). Returns how many connections it refused."""
    import socket
    import struct

    refused, end = 0, time.monotonic() + seconds
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.settimeout(0.05)
        while time.monotonic() < end:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            conn.close()
            refused += 1
    return refused


def test_the_s3_server_stopped_mid_run_and_started_again(tmp_path, tiny_model, own_s3_server):
    """``tag s3:// -> s3://`` while the S3 server is down for 3 s. First the evidence that the fault hit the run:
    the server stopped while the run had work left, and the run's requests were refused meanwhile (counted on
    the server's port). Then what the run did: retried through it, or made the unread files ``read`` error
    rows, or failed; nothing half-written is visible; the rerun (which retries read errors) completes with
    every file exactly once."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = own_s3_server["port"]
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    bucket = f"fault-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    listed_local = _catalog(tmp_path / "in", 16)
    fs.put(str(tmp_path / "in") + "/", f"{bucket}/in/", recursive=True)
    listed = {f"s3://{bucket}/in/{Path(p).name}" for p in listed_local}
    flags = [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]
    tag = [
        "tag",
        f"s3://{bucket}/in",
        "--output",
        f"s3://{bucket}/out",
        "--model",
        tiny_model,
        "--songs-per-task",
        "1",
        *flags,
    ]
    outage: dict = {}

    def stop_and_start() -> None:
        watch = s3fs.S3FileSystem(**options, skip_instance_cache=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                parts = [p for p in watch.ls(f"{bucket}/out/songs", refresh=True) if p.endswith(".parquet")]
            except FileNotFoundError:
                parts = []
            if len(parts) >= 2:
                break
            time.sleep(0.1)
        outage["parts_at_stop"], outage["run_over_at_stop"] = len(parts), run_over.is_set()
        own_s3_server["server"].stop()
        outage["refused"] = refuse_connections(port, 3.0)
        own_s3_server["server"] = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        own_s3_server["server"].start()
        outage["restarted"] = True

    run_over = threading.Event()
    thread = threading.Thread(target=stop_and_start, daemon=True)
    thread.start()
    try:
        code = main(tag)  # 0 (retried through it, or read error rows) or 1 (a part could not be written)
    finally:
        run_over.set()
    thread.join(timeout=60)
    print("S3 outage:", outage, "exit code", code)
    # The fault happened, to this run: stopped with work left, the run's requests refused during the outage.
    assert outage.get("restarted") and outage["parts_at_stop"] < len(listed), outage
    assert not outage["run_over_at_stop"], outage
    assert outage["refused"] > 0, f"no request of the run reached the stopped server: {outage}"
    # What the run did about it.
    songs, errors = _read(fs, f"{bucket}/out", "songs"), _read(fs, f"{bucket}/out", "errors")
    assert code != 0 or len(songs) + len(errors) == len(listed), (code, len(songs), len(errors))
    if len(errors):
        assert set(errors["stage"]) == {"read"} and set(errors["error_type"]) == {"AudioReadError"}, errors

    assert main(tag) == 0
    fs.invalidate_cache()
    songs, errors, clips = (_read(fs, f"{bucket}/out", t) for t in ("songs", "errors", "clips"))
    assert_exactly_once(songs, errors, clips, listed)
    assert errors.empty, errors[["path", "message"]]
    run = json.loads(fs.cat_file(f"{bucket}/out/run.json"))
    assert run["n_songs"] == len(listed) and run["n_errors"] == 0


def test_the_driver_killed_while_writing_to_object_storage(tmp_path, tiny_model, s3_server, s3_bucket):
    """SIGKILL of the driver's process group (driver and embedded Ray) while it writes parts to S3; the rerun
    completes to the same tables as a clean run."""
    src = tmp_path / "in"
    listed = _catalog(src, 16)
    out = f"{s3_bucket}/out"
    fs = s3_server.fs

    def n_parts() -> int:
        try:
            return sum(p.endswith(".parquet") for p in fs.ls(f"{out}/songs", refresh=True))
        except FileNotFoundError:
            return 0

    kill_mid_run(tag_command(str(src), out, tiny_model, *s3_server.cli_options()), n_parts, timeout=180)
    fs.invalidate_cache()
    partial = _read(fs, out, "songs")
    assert 3 <= len(partial) < len(listed)

    assert (
        main(["tag", str(src), "-o", out, "--model", tiny_model, "--songs-per-task", "1", *s3_server.cli_options()])
        == 0
    )
    fs.invalidate_cache()
    songs, errors, clips = (_read(fs, out, t) for t in ("songs", "errors", "clips"))
    assert_exactly_once(songs, errors, clips, listed)
    run = json.loads(fs.cat_file(f"{out}/run.json"))
    assert run["n_skipped"] >= 3 and run["n_processed"] + run["n_skipped"] == len(listed)
    clean = tmp_path / "clean"
    assert main(["tag", str(src), "-o", str(clean), "--model", tiny_model]) == 0
    _same_predictions(songs, pd.read_parquet(clean / "songs"))


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted on a folder (needs root); skipped where mount fails."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_the_output_disk_full(tmp_path, tiny_model, small_disk, capsys):
    """The output folder's disk fills mid-run: the run fails loudly, no partial part is visible (temp files
    are removed), and after space is freed the rerun completes."""
    src = tmp_path / "in"
    listed = _catalog(src, 12)
    out = small_disk / "out"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))  # leaves ~96 KiB: room for a few batches' parts
    tag = ["tag", str(src), "--output", str(out), "--model", tiny_model, "--songs-per-task", "1"]
    assert main(tag) == 1
    assert "No space left on device" in capsys.readouterr().err
    for table in ("songs", "clips", "errors"):
        if (out / table).exists():
            assert not [p.name for p in (out / table).iterdir() if p.name.startswith(".tmp-")], "a temp file left"
            for part in (out / table).glob("*.parquet"):
                pq.read_table(part)  # every visible part is whole
    filler.unlink()
    assert main(tag) == 0
    songs, errors, clips = (pd.read_parquet(out / t) for t in ("songs", "errors", "clips"))
    assert_exactly_once(songs, errors, clips, listed)
