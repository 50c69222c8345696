"""Labelled data: labels from folders or manifests, split lists, and the leakage guard."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from mgr_batch.config import AUDIO_EXTENSIONS
from mgr_batch.errors import ConfigError, LabelError, LeakageError
from mgr_batch.io import storage


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
    make_split: bool = True,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
) -> pd.DataFrame:
    """Listing of labelled audio with ``label`` and ``split`` columns.

    ``data`` is a folder tree ``<genre>/<file>`` (label = parent folder) or a manifest with ``path``
    and ``label`` (optionally ``split``). With split lists, files are matched on their stem (so
    ``blues.00012.ogg`` matches ``blues/blues.00012.wav``) and files in neither list are left out;
    with neither lists nor a ``split`` column, a deterministic 80/20 split by file stem is made. A folder
    tree keeps the files whose extension is in ``extensions``.
    """
    files = storage.list_inputs(data, storage_options, extensions=extensions).files
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
        files["split"] = [
            "train" if s in lists["train"] else "valid" if s in lists["valid"] else "" for s in files["stem"]
        ]
        files = files[files["split"] != ""].reset_index(drop=True)
        if files.empty:
            raise ConfigError("no file of DATA is named in the split lists (files are matched on their stem)")
    elif "split" not in files.columns and not make_split:
        files["split"] = ""
    elif "split" not in files.columns:
        # By stem, so copies of one song (other folder or format) stay on one side.
        files["split"] = [
            "valid" if int(hashlib.sha1(s.encode()).hexdigest()[:8], 16) % 5 == 0 else "train" for s in files["stem"]
        ]
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


def restrict(
    files: pd.DataFrame,
    *,
    list_uri: str | None = None,
    split: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Only the songs named in a list file (by stem) and/or of one manifest split."""
    if list_uri:
        keep = set(read_list(list_uri, storage_options))
        files = files[files["stem"].isin(keep)]
    if split:
        files = files[files["split"] == split]
    if files.empty:
        raise ConfigError("no song of DATA is left after --list/--split")
    return files.reset_index(drop=True)


def group_keys(files: pd.DataFrame, group_by: str | None = None) -> pd.Series:
    """What must stay on one side of a split: ``group_by`` if given, else ``artist`` if known, else the stem."""
    column = group_by or ("artist" if "artist" in files.columns else "stem")
    if column not in files.columns:
        raise ConfigError(f"cannot group folds by {column!r}: DATA has no such column")
    return files[column].astype(str)


def grouped_folds(files: pd.DataFrame, *, folds: int, group_by: str | None = None, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) per song; stratified by label, and a group never straddles two folds.

    Folds are made of songs (never of clips), grouped by :func:`group_keys`.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if folds < 2:
        raise ConfigError("--folds must be at least 2")
    groups = group_keys(files, group_by)
    if groups.nunique() < folds:
        raise ConfigError(f"{groups.nunique()} groups cannot make {folds} folds")
    out = np.full(len(files), -1)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(files)), files["label"], groups)):
        out[test] = k
    return out


TRAIN_SONGS_LIMIT = 100_000


def training_songs(files: pd.DataFrame) -> list[str] | None:
    """The training songs' stems to store in a checkpoint (None when too many to keep)."""
    stems = sorted(set(files.loc[files["split"] == "train", "stem"]))
    return stems if len(stems) <= TRAIN_SONGS_LIMIT else None


def check_not_trained_on(files: pd.DataFrame, trained: list[str] | None) -> None:
    """Fail when a song to evaluate was in the model's training data (matched on the file stem)."""
    if not trained:
        return
    seen = sorted(set(files["stem"]) & set(trained))
    if seen:
        raise LeakageError(f"{len(seen)} song(s) to evaluate were in the model's training data: {', '.join(seen[:10])}")
