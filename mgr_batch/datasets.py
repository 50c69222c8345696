"""Labelled data: labels from folders or manifests, split lists, and the leakage guard."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable
from typing import Any

import pandas as pd

from mgr_batch import storage
from mgr_batch.errors import ConfigError, LabelError, LeakageError

SPLITS = ("train", "valid", "test")


def stem(path: str) -> str:
    """File name without folder and extension: ``.../blues/blues.00012.ogg`` -> ``blues.00012``."""
    name = posixpath.basename(str(path).replace("\\", "/"))
    return name.rsplit(".", 1)[0] if "." in name else name


def read_list(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Stems of a split list file (one relative path per line, ``#`` comments and blanks skipped)."""
    lines = storage.read_text(uri, storage_options).splitlines()
    return [stem(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def labelled(
    data: str,
    storage_options: dict[str, Any] | None = None,
    *,
    train_list: str | None = None,
    valid_list: str | None = None,
) -> pd.DataFrame:
    """Listing of labelled audio with ``label`` and ``split`` columns.

    ``data`` is a folder tree ``<genre>/<file>`` (label = parent folder) or a manifest with ``path``
    and ``label`` (optionally ``split``). With split lists, files are matched on their stem (so
    ``blues.00012.ogg`` matches ``blues/blues.00012.wav``) and files in neither list are left out;
    with neither lists nor a ``split`` column, a deterministic 80/20 split by file stem is made.
    """
    files = storage.list_inputs(data, storage_options).files
    if "label" not in files.columns:
        files["label"] = [posixpath.basename(posixpath.dirname(str(p).replace("\\", "/"))) for p in files["path"]]
    files["label"] = files["label"].astype(str)
    files["stem"] = [stem(p) for p in files["path"]]
    if train_list or valid_list:
        lists = {
            "train": set(read_list(train_list, storage_options)) if train_list else set(),
            "valid": set(read_list(valid_list, storage_options)) if valid_list else set(),
        }
        both = sorted(lists["train"] & lists["valid"])
        if both:
            raise LeakageError(f"{len(both)} song(s) are in both the train and the valid list: {', '.join(both[:10])}")
        files["split"] = ["train" if s in lists["train"] else "valid" if s in lists["valid"] else "" for s in files["stem"]]
        files = files[files["split"] != ""].reset_index(drop=True)
        if files.empty:
            raise ConfigError("no file of DATA is named in the split lists (files are matched on their stem)")
    elif "split" not in files.columns:
        # By stem, so copies of one song (other folder or format) stay on one side.
        files["split"] = ["valid" if int(hashlib.sha1(s.encode()).hexdigest()[:8], 16) % 5 == 0 else "train" for s in files["stem"]]
    files["split"] = files["split"].astype(str)
    check_no_leakage(files)
    return files


def check_labels(labels: Iterable[str], genres: Iterable[str]) -> None:
    """Fail loudly when data holds labels the genre list does not know."""
    unknown = sorted(set(labels) - set(genres))
    if unknown:
        raise LabelError(f"labels not among the model's genres {sorted(genres)}: {', '.join(unknown)}")


def check_no_leakage(files: pd.DataFrame, *, groups: Iterable[str] = ("song_id", "stem", "artist")) -> None:
    """Fail when a song (by id or file stem) or an artist is in more than one split."""
    for col in groups:
        if col not in files.columns:
            continue
        per = files.groupby(col)["split"].nunique()
        leaks = sorted(map(str, per[per > 1].index))
        if leaks:
            raise LeakageError(f"{len(leaks)} {col} value(s) are on both sides of the split: {', '.join(leaks[:10])}")


def manifest_hash(files: pd.DataFrame) -> str:
    """Hash of what a model was trained on (stem, label, split), independent of where the data lives."""
    rows = sorted(f"{s}\t{lab}\t{sp}" for s, lab, sp in zip(files["stem"], files["label"], files["split"], strict=True))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
