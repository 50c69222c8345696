"""A table folder of an output, listed once: its visible Parquet parts and the version of each (size and
modification time, or an ETag on object storage), the temp files killed writers left."""

from __future__ import annotations

import functools
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mgr_batch.io import compaction, storage


@dataclass
class Part:
    """One visible Parquet file of a table: its ``version`` (size and modification time, or ETag), ``rows``, and
    the ``batches`` it holds (None: not known, a file merged by an older version)."""

    name: str
    version: str
    rows: int
    batches: frozenset[str] | None


@dataclass
class Table:
    """One table folder as listed now: its visible parts' versions, and the temp files killed writers left."""

    fs: Any
    root: str
    versions: dict[str, str] = field(default_factory=dict)
    temp: list[str] = field(default_factory=list)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name) if is_local(self.fs) else posixpath.join(self.root, name)


def is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def version_of(info: dict[str, Any]) -> str:
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{int(info.get('size') or 0)}:{tag}"


def list_table(output: str, table: str, so: dict[str, Any] | None) -> Table:
    """List ``output/table`` once: its visible Parquet parts (see :func:`compaction.visible`) and temp files."""
    fs, root = storage.filesystem(storage.join(output, table), so)
    fs.invalidate_cache(root)  # other processes (workers, a compaction) write there: never a stale listing
    listed = Table(fs=fs, root=root)
    try:
        found = _scan_local(root) if is_local(fs) else _scan(fs, root)
    except (FileNotFoundError, NotADirectoryError):
        return listed
    names = {}
    has_journal = False
    for base, path, version in found:
        if base.startswith(".tmp-"):
            listed.temp.append(path)
        elif base == compaction.JOURNAL:
            has_journal = True
        elif _is_part(base):
            try:
                names[base] = version()
            except FileNotFoundError:  # gone since the folder was read, as if listed a moment later
                continue
    journal = compaction.read_journal(fs, root) if has_journal else None
    visible = set(compaction.visible(sorted(names), journal))
    listed.versions = {n: v for n, v in names.items() if n in visible}
    return listed


def _is_part(base: str) -> bool:
    return base.endswith(".parquet") and not base.startswith((".", "_"))


def _scan(fs: Any, root: str) -> list[tuple[str, str, Callable[[], str]]]:
    """Each entry of folder ``root`` as ``(name, path, version)`` (``version()``: see :func:`version_of`)."""
    return [
        (posixpath.basename(info["name"].rstrip("/")), info["name"], functools.partial(version_of, info))
        for info in fs.ls(root, detail=True)
    ]


def _scan_local(root: str) -> list[tuple[str, str, Callable[[], str]]]:
    """:func:`_scan` of a local folder in one ``scandir``, a part's version from its entry's ``stat`` as fsspec's
    local ``ls`` gives it (size of a link's target, the link's own mtime), the other entries never stat'ed."""
    prefix = os.path.join(root, "")
    with os.scandir(root) as it:
        entries = list(it)
    return [(e.name, prefix + e.name, functools.partial(_entry_version, e)) for e in entries]


def _entry_version(entry: os.DirEntry) -> str:
    """:func:`version_of` the entry's ``stat``."""
    st = entry.stat(follow_symlinks=False)
    size = st.st_size
    if entry.is_symlink():
        try:
            size = entry.stat().st_size
        except OSError:
            size = 0
    return f"{size}:{st.st_mtime or ''}"
