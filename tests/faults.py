"""Real faults for the tests: a file object whose reads fail after N bytes, a TCP proxy on 127.0.0.1 that
resets its connections after N bytes from the server (a network that drops mid-file), and a ``tag`` run
killed mid-write."""

from __future__ import annotations

import io
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable


def tag_command(src: str, out: str, model: str, *extra: str) -> list[str]:
    """``mgr-batch tag`` as a subprocess, one song per task on 2 CPUs (many small parts to kill between)."""
    flags = ["-o", out, "--model", model, "--songs-per-task", "1", "--num-cpus", "2", *extra]
    return [sys.executable, "-m", "mgr_batch.cli", "tag", src, *flags]


def own_ray_env() -> dict[str, str]:
    """This environment without ``RAY_ADDRESS``: the subprocess starts an embedded Ray of its own."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def kill_mid_run(cmd: list[str], n_parts: Callable[[], int], *, at: int = 3, timeout: float = 240) -> None:
    """Run ``cmd`` in a session of its own and SIGKILL its process group (the driver and its embedded Ray) once
    ``n_parts()`` (the songs parts written so far) reaches ``at``; fails if the run ends first."""
    proc = subprocess.Popen(
        cmd, env=own_ray_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and n_parts() < at:
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_session(proc.pid)


def _session_members(sid: int) -> list[int]:
    """Pids of the live processes in session ``sid`` (Linux ``/proc``; field 6 of ``stat``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def kill_session(sid: int, *, timeout: float = 10.0) -> None:
    """SIGKILL every process left in session ``sid`` until none is: a killed run's Ray workers can sit in process
    groups of their own and would otherwise go on writing the killed run's batches after its rerun has begun."""
    deadline = time.time() + timeout
    while (left := _session_members(sid)) and time.time() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    assert not _session_members(sid), f"processes of the killed run are still alive: {_session_members(sid)}"


class FailingReader:
    """A seekable binary file over ``data`` whose reads raise ``ConnectionResetError`` once they reach byte
    ``fail_at`` (as a remote file's reads do when the connection drops). Not an ``io.BufferedReader``, so the
    decoders treat it as a remote file."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        self.buf = io.BytesIO(data)
        self.fail_at = fail_at

    def read(self, size: int = -1) -> bytes:
        pos, n = self.buf.tell(), len(self.buf.getbuffer())
        end = n if size is None or size < 0 else min(pos + size, n)
        if end > self.fail_at:
            raise ConnectionResetError(104, "Connection reset by peer")
        return self.buf.read(size)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.buf.seek(offset, whence)

    def tell(self) -> int:
        return self.buf.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.buf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ResettingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (host, port). A connection is reset (RST, SO_LINGER 0)
    once more than ``reset_after`` bytes have come back from the server on it, ``resets`` times in all (every
    time with None); after that, everything passes."""

    def __init__(self, upstream: tuple[str, int], *, reset_after: int, resets: int | None = None) -> None:
        self.upstream, self.reset_after, self.resets_left = upstream, reset_after, resets
        self.n_reset = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        """One thread per connection, so that closing a socket is never held up by a ``recv`` elsewhere."""
        server = socket.create_connection(self.upstream)
        back = 0  # bytes from the server to the client
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 30)
                if not ready:
                    break
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        break
                    server.sendall(data)
                if server in ready:
                    data = server.recv(65536)
                    if not data:
                        break
                    if back + len(data) > self.reset_after and self._take_reset():
                        client.sendall(data[: self.reset_after - back])
                        # RST both ways: the client sees "connection reset by peer"
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        break
                    client.sendall(data)
                    back += len(data)
        except OSError:
            pass
        client.close()
        server.close()

    def _take_reset(self) -> bool:
        with self.lock:
            if self.resets_left is not None and self.resets_left <= 0:
                return False
            if self.resets_left is not None:
                self.resets_left -= 1
            self.n_reset += 1
            return True

    def close(self) -> None:
        self.closed = True
        self.listener.close()
