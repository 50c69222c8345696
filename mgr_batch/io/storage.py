"""Where audio and outputs live: a path or URL plus fsspec storage options; listing and manifests."""

from __future__ import annotations

import contextlib
import errno
import glob as _glob
import hashlib
import io
import os
import posixpath
import stat
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pandas as pd
from fsspec.core import url_to_fs

from mgr_batch.config import AUDIO_EXTENSIONS
from mgr_batch.errors import ConfigError, InputNotFoundError
from mgr_batch.io.kinds import ignored_kind
from mgr_batch.io.walk import WALK_THREADS, arrow_listing, is_audio_name, to_frame, walk_local

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


def read_errors() -> tuple[type[BaseException], ...]:
    """What opening or reading a listed file raises when its bytes cannot be had (missing, permission denied,
    a network that still fails after fsspec's own retries): such a file gets an ``AudioReadError`` row.

    ``OSError``, and where s3fs is in use the errors it passes on: aiohttp's (a connection reset mid-body)
    and botocore's (an endpoint that does not answer). Only modules already imported are looked at (one
    not imported raised nothing), so that a local run never pays for importing them.
    """
    found: list[type[BaseException]] = [OSError]
    if "aiohttp" in sys.modules:
        found.append(sys.modules["aiohttp"].ClientError)
    if "botocore.exceptions" in sys.modules:
        found.append(sys.modules["botocore.exceptions"].BotoCoreError)
    return tuple(found)


#: The columns every listing has (``path_bytes``: null unless a name is not UTF-8, see :func:`.walk.readable`); manifests
#: may add more (label, split, artist, ...).
LISTING_COLUMNS = ("path", "song_id", "size", "mtime", "path_bytes")


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it (protocol stripped)."""
    return url_to_fs(uri, **(storage_options or {}))


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The path as the user would write it: absolute local path, or ``proto://bucket/key``."""
    if is_local(fs):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URL."""
    if is_remote(uri):
        return posixpath.join(uri, *parts)
    return os.path.join(uri, *parts)


def song_id_for(path: str) -> str:
    """Stable song id: the first 16 hex digits of the SHA-1 of the path's bytes (a local name's own bytes, also
    where they are not UTF-8: ``os.fsencode``)."""
    return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def openable(path: str, exact: bytes | None) -> str:
    """The name to open a listed file by: its exact bytes where the listing kept them (see :func:`.walk.readable`)."""
    return os.fsdecode(exact) if exact else path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def mtime_of(info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0


@dataclass(frozen=True)
class Listing:
    """The files an input names (``files``), those a folder held that are not audio (``ignored``), and how many
    of those of each kind (``ignored_kinds``: ``image``, ``text``, ``playlist``, ``system`` for ``.DS_Store``,
    AppleDouble ``._*`` and the like, ``other``)."""

    files: pd.DataFrame
    ignored: tuple[str, ...] = ()
    ignored_kinds: dict[str, int] = field(default_factory=dict)


def list_inputs(
    uri: str,
    storage_options: dict[str, Any] | None = None,
    *,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
) -> Listing:
    """List the audio files named by a folder, glob, single file or manifest (local or any fsspec URL).

    Folders are searched recursively and keep files whose extension is in ``extensions`` (AppleDouble ``._*``
    files never: they are macOS metadata); a glob or a manifest keeps exactly what it names (a manifest's
    relative paths resolve against its own folder). A path listed twice (two rows of a manifest, or two
    spellings of one path such as ``./a.mp3`` and ``a.mp3``) is listed once. Returns a table with ``path,
    song_id, size, mtime`` plus any other manifest columns, sorted by path.
    """
    extensions = tuple(e.lower() for e in extensions)
    fs, root = filesystem(uri, storage_options)
    ignored: list[str] = []
    if uri.lower().endswith(MANIFEST_SUFFIXES) and not _glob.has_magic(uri):
        files = read_manifest(fs, root, storage_options)
    elif _glob.has_magic(root) and not fs.exists(root):
        found = fs.glob(root, detail=True)
        files = _from_infos(fs, {p: i for p, i in found.items() if i.get("type") != "directory"})
        if files.empty:
            raise InputNotFoundError(f"input {uri!r}: the glob matches no file")
    elif not fs.exists(root):
        raise InputNotFoundError(f"input {uri!r} does not exist")
    elif fs.isdir(root):
        if is_local(fs):
            files, ignored = walk_local(os.path.abspath(root), extensions)  # sorted, each path once
        else:
            found = fs.find(root, detail=True, withdirs=False)
            keep = {p: i for p, i in found.items() if is_audio_name(posixpath.basename(p), extensions)}
            ignored = [full_uri(fs, p) for p in found if p not in keep]
            files = _from_infos(fs, keep)
        if files.empty:
            raise InputNotFoundError(f"input {uri!r}: the folder holds no audio file ({', '.join(extensions)})")
    else:
        files = _from_infos(fs, {root: fs.info(root)})
    if not (is_local(fs) and fs.isdir(root) and not _glob.has_magic(root)):  # a walk's listing is sorted already
        files = files.sort_values("path", kind="stable").reset_index(drop=True)
    ignored.sort()
    kinds = Counter(ignored_kind(posixpath.basename(p)) for p in ignored)
    return Listing(files=files, ignored=tuple(ignored), ignored_kinds=dict(sorted(kinds.items())))


def _frame(paths: list[str], sizes: list[int], mtimes: list[float]) -> pd.DataFrame:
    return to_frame(arrow_listing(paths, sizes, mtimes))


def _from_infos(fs: fsspec.AbstractFileSystem, infos: dict[str, dict[str, Any]]) -> pd.DataFrame:
    return _frame(
        [full_uri(fs, p) for p in infos],
        [int(i.get("size") or 0) for i in infos.values()],
        [mtime_of(i) for i in infos.values()],
    )


def read_manifest(fs: fsspec.AbstractFileSystem, root: str, storage_options: dict[str, Any] | None) -> pd.DataFrame:
    """The files a manifest (CSV or Parquet with a ``path`` column) names, as a listing (see
    :func:`mgr_batch.io.list_inputs`): relative paths resolved against its folder, each path once."""
    if not fs.exists(root):
        raise InputNotFoundError(f"manifest {full_uri(fs, root)!r} does not exist")
    with fs.open(root, "rb") as f:
        data = f.read()
    if root.lower().endswith(".csv"):
        table = pd.read_csv(io.BytesIO(data), dtype={"path": "string"}, keep_default_na=False)
    else:
        table = pd.read_parquet(io.BytesIO(data))
    if "path" not in table.columns:
        raise ConfigError(f"manifest {full_uri(fs, root)!r} has no 'path' column")
    base = posixpath.dirname(root) if not is_local(fs) else os.path.dirname(os.path.abspath(root))
    resolved = []
    for p in table["path"].astype(str):
        if "://" in p:
            scheme, rest = p.split("://", 1)
            resolved.append(f"{scheme}://{posixpath.normpath(rest)}")
        elif is_local(fs):
            resolved.append(os.path.abspath(os.path.join(base, os.path.expanduser(p))))
        else:
            resolved.append(fs.unstrip_protocol(posixpath.normpath(posixpath.join(base, p))))
    table = table.drop(columns=[c for c in ("song_id", "size", "mtime") if c in table.columns])
    table["path"] = pd.Series(resolved, dtype="string")
    table = table.drop_duplicates("path").reset_index(drop=True)  # one file named twice is one file
    resolved = list(table["path"])
    table.insert(1, "song_id", pd.Series([song_id_for(p) for p in resolved], dtype="string"))
    sizes, mtimes = stat_listed(resolved, storage_options)
    table.insert(2, "size", pd.Series(sizes, dtype="int64"))
    table.insert(3, "mtime", pd.Series(mtimes, dtype="float64"))
    table.insert(4, "path_bytes", pd.Series([None] * len(table), dtype=object))
    return table


#: Local files a thread stats per task (``ThreadPoolExecutor.map`` makes a future per item, whatever its
#: ``chunksize``: a manifest of 1,000,000 files spent 48 of its 66 s listing on futures, and most of 2.8 GB).
STAT_CHUNK = 4096


def stat_listed(paths: list[str], storage_options: dict[str, Any] | None) -> tuple[list[int], list[float]]:
    """Size and modification time of each path a manifest lists, as a folder listing gives them, so that a
    rerun notices a changed file: ``os.stat`` for local files (in a pool of threads); for remote ones one
    listing per folder (one request per 1000 keys on S3, instead of a HEAD per file), the folders listed in
    parallel. A path that is not there gets 0, 0 (its reader reports why)."""
    sizes, mtimes = [0] * len(paths), [0.0] * len(paths)
    folders: dict[str, list[int]] = {}
    local = []
    for i, p in enumerate(paths):
        if is_remote(p):
            folders.setdefault(posixpath.dirname(p), []).append(i)
        else:
            local.append(i)

    def stat_local(rows: list[int]) -> None:  # a chunk per task: a future per file cost more than its stat
        for i in rows:
            try:
                st = os.stat(paths[i].removeprefix("file://"))
            except OSError:
                continue
            sizes[i], mtimes[i] = st.st_size, st.st_mtime

    def list_folder(item: tuple[str, list[int]]) -> None:
        folder, rows = item
        fs, root = filesystem(folder, storage_options)
        fs.invalidate_cache(root)  # a listing cached by an earlier run in this process would hide a change
        try:
            infos = {full_uri(fs, info["name"]): info for info in fs.ls(root, detail=True)}
        except FileNotFoundError:
            return
        for i in rows:
            info = infos.get(paths[i])
            if info is not None and info.get("type") != "directory":
                sizes[i], mtimes[i] = int(info.get("size") or 0), mtime_of(info)

    with ThreadPoolExecutor(WALK_THREADS) as pool:
        list(pool.map(stat_local, [local[k : k + STAT_CHUNK] for k in range(0, len(local), STAT_CHUNK)]))
        list(pool.map(list_folder, folders.items()))
    return sizes, mtimes


def open_input(path: str, storage_options: dict[str, Any] | None = None):
    """Open a listed file for reading (a seekable binary file object).

    Local paths are opened as they are (no fsspec URL parsing, so ``a::b.wav`` is a file name, not a
    chained URL) and must be regular files: a FIFO or device raises ``OSError`` at once instead of
    blocking the reader forever.
    """
    if is_remote(path):
        return fsspec.open(path, "rb", **(storage_options or {})).open()
    local = path.removeprefix("file://")
    fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not wait
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), local)
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)", local)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_text(uri: str, storage_options: dict[str, Any] | None = None) -> str:
    fs, path = filesystem(uri, storage_options)
    if not fs.exists(path):
        raise InputNotFoundError(f"{uri!r} does not exist")
    with fs.open(path, "rt") as f:
        return f.read()


def write_bytes_atomic(uri: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` so readers see the whole file or nothing (temp name, then rename; S3 puts are atomic)."""
    fs, path = filesystem(uri, storage_options)
    parent = posixpath.dirname(path) if not is_local(fs) else os.path.dirname(path)
    fs.makedirs(parent, exist_ok=True)
    if is_local(fs):
        tmp = os.path.join(parent, f".tmp-{os.getpid()}-{os.path.basename(path)}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:  # a full disk, say: leave no half-written temp file behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    else:
        with fs.open(path, "wb") as f:
            f.write(data)
