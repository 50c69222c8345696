"""mgr_batch.evaluation.datasets: labels from folders and manifests, split lists on stems, the leakage guard."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from audio_factory import write_tone

from mgr_batch.errors import ConfigError, LabelError, LeakageError
from mgr_batch.evaluation import datasets


@pytest.fixture
def gtzan_like(tmp_path):
    """A tiny GTZAN-shaped tree: <genre>/<genre>.0000N.wav, three genres x three songs (0.1 s each)."""
    root = tmp_path / "gtzan"
    for genre in ("blues", "jazz", "rock"):
        for i in range(3):
            write_tone(root / genre / f"{genre}.{i:05d}.wav", seconds=0.1, freq=200.0 + 100 * i)
    (root / "README.txt").write_text("not audio")
    return root


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/a/blues/blues.00012.ogg", "blues.00012"),
        ("s3://b/blues/blues.00012.wav", "blues.00012"),
        ("blues.00012", "blues"),
        ("noext", "noext"),
        ("C:\\data\\jazz\\jazz.00001.au", "jazz.00001"),
        ("/x/Café – 01.flac", "Café – 01"),
    ],
)
def test_stem(path, expected):
    assert datasets.stem(path) == expected


def test_labels_from_folders(gtzan_like):
    files = datasets.labelled(str(gtzan_like))
    assert len(files) == 9
    for path, label in zip(files["path"], files["label"], strict=True):
        assert label == path.split("/")[-2]
    assert sorted(set(files["label"])) == ["blues", "jazz", "rock"]
    assert set(files["split"]) <= {"train", "valid"}
    assert list(files["stem"]) == [datasets.stem(p) for p in files["path"]]


def test_default_split_is_deterministic_by_stem(gtzan_like):
    first = datasets.labelled(str(gtzan_like))
    second = datasets.labelled(str(gtzan_like))
    pd.testing.assert_frame_equal(first[["path", "split"]], second[["path", "split"]])
    for stem, split in zip(first["stem"], first["split"], strict=True):
        assert split == ("valid" if int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) % 5 == 0 else "train")


def test_split_lists_match_on_stem(gtzan_like, tmp_path):
    # lists name .ogg files under other folders, with comments and blank lines; the data holds .wav
    (tmp_path / "train.txt").write_text("# train\nblues/blues.00000.ogg\njazz/jazz.00001.ogg\n\nrock/rock.00002.ogg\n")
    (tmp_path / "valid.txt").write_text("blues/blues.00001.ogg\n  \nelsewhere/rock.00000.au\nmissing/pop.00000.ogg\n")
    files = datasets.labelled(
        str(gtzan_like), train_list=str(tmp_path / "train.txt"), valid_list=str(tmp_path / "valid.txt")
    )
    assert dict(zip(files["stem"], files["split"], strict=True)) == {
        "blues.00000": "train",
        "jazz.00001": "train",
        "rock.00002": "train",
        "blues.00001": "valid",
        "rock.00000": "valid",
    }
    assert all(p.endswith(".wav") for p in files["path"])  # files in neither list are left out


def test_only_a_train_list(gtzan_like, tmp_path):
    (tmp_path / "train.txt").write_text("blues/blues.00000.wav\n")
    files = datasets.labelled(str(gtzan_like), train_list=str(tmp_path / "train.txt"))
    assert list(files["stem"]) == ["blues.00000"] and list(files["split"]) == ["train"]


def test_a_stem_in_both_lists_is_leakage(gtzan_like, tmp_path):
    (tmp_path / "train.txt").write_text("blues/blues.00000.wav\njazz/jazz.00000.wav\n")
    (tmp_path / "valid.txt").write_text("blues/blues.00000.ogg\n")  # same song, other format
    with pytest.raises(LeakageError, match="blues.00000"):
        datasets.labelled(
            str(gtzan_like), train_list=str(tmp_path / "train.txt"), valid_list=str(tmp_path / "valid.txt")
        )


def test_lists_naming_no_file_raise(gtzan_like, tmp_path):
    (tmp_path / "train.txt").write_text("pop/pop.00000.wav\n")
    with pytest.raises(ConfigError, match="stem"):
        datasets.labelled(str(gtzan_like), train_list=str(tmp_path / "train.txt"))


def test_read_list(tmp_path):
    (tmp_path / "l.txt").write_text("# header\n  a/b.wav  \n\n#c/d.wav\nx.ogg\n")
    assert datasets.read_list(str(tmp_path / "l.txt")) == ["b", "x"]


def test_manifest_labels_and_splits(gtzan_like, tmp_path):
    pd.DataFrame(
        {
            "path": ["gtzan/blues/blues.00000.wav", "gtzan/jazz/jazz.00000.wav", "gtzan/rock/rock.00000.wav"],
            "label": ["country", "jazz", "rock"],  # the manifest's label wins over the folder
            "split": ["train", "valid", "train"],
        }
    ).to_csv(tmp_path / "m.csv", index=False)
    files = datasets.labelled(str(tmp_path / "m.csv"))
    assert list(files["label"]) == ["country", "jazz", "rock"]
    assert list(files["split"]) == ["train", "valid", "train"]


def test_a_manifest_whose_splits_leak_raises(tmp_path):
    pd.DataFrame(
        {
            "path": ["a/x.wav", "b/x.ogg", "c/y.wav"],
            "label": ["rock", "rock", "jazz"],
            "split": ["train", "valid", "train"],
        }
    ).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(LeakageError, match="stem"):
        datasets.labelled(str(tmp_path / "m.csv"))


@pytest.mark.parametrize(
    "frame, column",
    [
        (pd.DataFrame({"song_id": ["s1", "s1", "s2"], "split": ["train", "valid", "train"]}), "song_id"),
        (pd.DataFrame({"song_id": ["s1", "s2"], "stem": ["a", "a"], "split": ["train", "valid"]}), "stem"),
        (
            pd.DataFrame(
                {"song_id": ["s1", "s2"], "stem": ["a", "b"], "artist": ["X", "X"], "split": ["train", "test"]}
            ),
            "artist",
        ),
    ],
)
def test_check_no_leakage_on_a_leaking_frame(frame, column):
    with pytest.raises(LeakageError, match=column):
        datasets.check_no_leakage(frame)


def test_check_no_leakage_passes_a_clean_frame():
    frame = pd.DataFrame(
        {
            "song_id": ["s1", "s2", "s3"],
            "stem": ["a", "a", "c"],
            "artist": ["X", "X", "Y"],
            "split": ["train", "train", "valid"],
        }
    )
    datasets.check_no_leakage(frame)
    datasets.check_no_leakage(frame.assign(artist=["X", "Y", "Y"]), groups=("song_id",))  # artist not checked


def test_check_labels():
    datasets.check_labels(["rock", "jazz", "rock"], ["jazz", "rock", "pop"])
    with pytest.raises(LabelError, match="polka, zouk"):
        datasets.check_labels(["rock", "zouk", "polka"], ["jazz", "rock"])


def _frame(rows):
    return pd.DataFrame(rows, columns=["stem", "label", "split"])


def test_manifest_hash_is_order_independent():
    rows = [("a", "rock", "train"), ("b", "jazz", "valid"), ("c", "rock", "train")]
    h = datasets.manifest_hash(_frame(rows))
    assert len(h) == 16 and int(h, 16) >= 0
    assert datasets.manifest_hash(_frame(rows[::-1])) == h
    assert datasets.manifest_hash(_frame(rows).assign(path=["/x/a", "/y/b", "/z/c"])) == h  # location does not count


@pytest.mark.parametrize(
    "rows",
    [
        [("a", "rock", "train"), ("b", "jazz", "valid")],  # one song fewer
        [("a", "rock", "train"), ("b", "jazz", "train"), ("c", "rock", "train")],  # other split
        [("a", "pop", "train"), ("b", "jazz", "valid"), ("c", "rock", "train")],  # other label
    ],
)
def test_manifest_hash_changes_with_content(rows):
    base = [("a", "rock", "train"), ("b", "jazz", "valid"), ("c", "rock", "train")]
    assert datasets.manifest_hash(_frame(rows)) != datasets.manifest_hash(_frame(base))


def test_default_split_keeps_equal_stems_together(tmp_path):
    root = tmp_path / "tracks"
    for genre in ("rock", "jazz"):
        for i in range(40):  # with 40 shared stems a per-path split puts some stem on both sides (p > 0.9999)
            write_tone(root / genre / f"{i:02d}.wav", seconds=0.01)
    files = datasets.labelled(str(root))
    assert (files.groupby("stem")["split"].nunique() == 1).all()


def _songs(n_per: int = 6, artists: bool = False) -> pd.DataFrame:
    rows = []
    for g in ("rock", "jazz", "pop"):
        for i in range(n_per):
            row = {
                "path": f"/d/{g}/{g}.{i:05d}.wav",
                "song_id": f"{g}{i}",
                "stem": f"{g}.{i:05d}",
                "label": g,
                "split": "train",
            }
            if artists:
                row["artist"] = f"{g}-artist-{i // 2}"
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("folds", [2, 3])
@pytest.mark.parametrize("artists", [False, True])
def test_grouped_folds_never_split_a_song_or_an_artist(folds, artists):
    files = _songs(artists=artists)
    fold = datasets.grouped_folds(files, folds=folds, seed=0)
    assert set(fold) == set(range(folds))
    key = "artist" if artists else "stem"
    assert (files.assign(fold=fold).groupby(key)["fold"].nunique() == 1).all()
    assert (pd.Series(fold).value_counts() > 0).all()


def test_grouped_folds_refuse_too_few_groups():
    with pytest.raises(ConfigError):
        datasets.grouped_folds(_songs(n_per=1), folds=5)


def test_restrict_by_list_and_split(tmp_path):
    files = _songs()
    files.loc[files["label"] == "pop", "split"] = "valid"
    (tmp_path / "l.txt").write_text("rock/rock.00001.wav\npop/pop.00002.ogg\n")
    assert sorted(datasets.restrict(files, list_uri=str(tmp_path / "l.txt"))["stem"]) == ["pop.00002", "rock.00001"]
    assert set(datasets.restrict(files, split="valid")["label"]) == {"pop"}
    with pytest.raises(ConfigError):
        datasets.restrict(files, split="test")


def test_evaluating_training_songs_is_refused():
    files = _songs()
    datasets.check_not_trained_on(files, ["other.00001"])
    datasets.check_not_trained_on(files, None)
    with pytest.raises(LeakageError, match="rock.00002"):
        datasets.check_not_trained_on(files, ["rock.00002"])
