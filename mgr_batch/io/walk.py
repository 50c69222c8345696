"""A local folder tree walked by a pool of threads into a listing table (see :func:`arrow_listing`)."""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
from concurrent.futures import Future, ThreadPoolExecutor

import pandas as pd
import pyarrow as pa


def readable(path: str) -> tuple[str, bytes | None]:
    """A listed path as the tables show it, and its exact bytes where they differ: a local name that is not UTF-8
    (Python holds its bytes as lone surrogates, ``os.fsdecode``) shows each such byte as ``\\xNN``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace"), raw
    return path, None


def is_audio_name(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions) and not name.startswith("._")


#: Threads that walk a local folder tree (``os.scandir`` and ``stat`` release the GIL).
WALK_THREADS = 8


def walk_local(root: str, extensions: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]]:
    """The listing of the audio files under ``root`` (see :func:`arrow_listing`), and the other files' paths.

    Folders are read by a pool of threads (:func:`_read_folder`). A folder reached twice through symlinks is
    read once."""
    chunks: list[tuple[bytes, pa.Table]] = []
    ignored: list[str] = []
    seen: set[tuple[int, int]] = set()
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()

    with ThreadPoolExecutor(WALK_THREADS) as pool:

        def read(folder: str) -> None:
            pool.submit(_read_folder, folder, extensions).add_done_callback(finished.put)

        read(root)
        pending = 1
        while pending:  # folders as they finish: waiting costs nothing per folder still pending
            subdirs, found, other = finished.get().result()
            pending -= 1
            if found is not None:
                chunks.append(found)
            ignored.extend(other)
            for d in subdirs:
                try:
                    st = os.stat(d)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    read(d)
                    pending += 1
    # Each folder's files come sorted; folders in the order of their paths give the listing sorted by path, unless
    # a folder with files holds another (their paths interleave): then the whole listing is sorted.
    chunks.sort(key=lambda chunk: chunk[0])
    table = pa.concat_tables([t for _, t in chunks]) if chunks else arrow_listing([], [], [])
    if any(b.startswith(a) for (a, _), (b, _) in itertools.pairwise(chunks)):
        table = table.sort_by("path")
    return to_frame(table), ignored


def _read_folder(
    folder: str, extensions: tuple[str, ...]
) -> tuple[list[str], tuple[bytes, pa.Table] | None, list[str]]:
    """One folder of a walk: its subfolders, its audio files (None when it has none) as a listing table sorted by
    path with the UTF-8 of their shown folder (``path`` up to its last ``/``), and its other files. The table is
    built in the thread that found them, so that a million paths never wait as Python objects.

    One ``scandir`` of the folder's descriptor, so that each file's ``stat`` resolves its name rather than its
    whole path (a file whose ``stat`` fails, such as a symlink loop, is listed with its link's own, and its
    reader says why). A folder that cannot be read is listed as empty."""
    subdirs: list[str] = []
    audio: list[os.DirEntry] = []
    other: list[str] = []
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return subdirs, None, other
    try:
        try:
            with os.scandir(fd) as it:
                entries = list(it)
        except OSError:
            return subdirs, None, other
        prefix = os.path.join(folder, "")
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(prefix + e.name)
            elif is_audio_name(e.name, extensions):
                audio.append(e)
            else:
                other.append(prefix + e.name)
        sizes, mtimes = [], []
        for e in audio:
            try:
                st = e.stat()
            except OSError:
                st = e.stat(follow_symlinks=False)
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime)
    finally:
        os.close(fd)
    if not audio:
        return subdirs, None, other
    found = arrow_listing([prefix + e.name for e in audio], sizes, mtimes).sort_by("path")
    shown = found["path"][0].as_py()
    return subdirs, (shown[: shown.rindex("/") + 1].encode("utf-8"), found), other


def arrow_listing(paths: list[str], sizes: list[int], mtimes: list[float]) -> pa.Table:
    """``path`` (readable), ``song_id``, ``size``, ``mtime`` and ``path_bytes`` (null unless the name is not
    UTF-8, see :func:`readable`)."""
    sha1 = hashlib.sha1
    try:
        "".join(paths).encode("utf-8")  # every name UTF-8 (the rule): no name needs its bytes kept
        shown, exact = paths, pa.nulls(len(paths), pa.binary())
    except UnicodeEncodeError:
        shown, exact = zip(*map(readable, paths), strict=True)
    return pa.table(
        {
            "path": pa.array(shown, pa.string()),
            "song_id": pa.array(
                [sha1(p.encode("utf-8", "surrogateescape")).hexdigest()[:16] for p in paths], pa.string()
            ),
            "size": pa.array(sizes, pa.int64()),
            "mtime": pa.array(mtimes, pa.float64()),
            "path_bytes": pa.array(exact, pa.binary()),
        }
    )


def to_frame(table: pa.Table) -> pd.DataFrame:
    """A listing table as pandas, its strings kept in Arrow (a million paths take their bytes, not objects)."""
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
