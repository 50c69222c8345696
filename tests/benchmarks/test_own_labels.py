"""benchmarks/own_labels.py scores and compares two songs tables as it claims (the CLI runs are its own)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("own_labels", ROOT / "benchmarks" / "own_labels.py")
own_labels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(own_labels)


def _songs(genres: list[str], p_rock: list[float]) -> pd.DataFrame:
    paths = ["/x/gtzan/rock/rock.00001.ogg", "/x/gtzan/rock/rock.00002.ogg", "/x/gtzan/jazz/jazz.00001.ogg"]
    frame = pd.DataFrame(
        {
            "path": paths,
            "genre": genres,
            "uncertain": [False, True, False],
            "p_rock": p_rock,
            "p_jazz": [1 - p for p in p_rock],
        }
    )
    frame.index = frame["path"].map(own_labels.key)
    return frame


MANIFEST = pd.DataFrame(
    {
        "path": ["rock/rock.00001.ogg", "rock/rock.00002.ogg", "jazz/jazz.00001.ogg"],
        "label": ["rock", "rock", "jazz"],
        "split": ["valid", "valid", "valid"],
        "kind": ["full", "excerpt", "full"],
    }
)


def test_score_and_compare():
    a = _songs(["rock", "jazz", "jazz"], [0.9, 0.4, 0.2])
    b = _songs(["rock", "rock", "jazz"], [0.9, 0.55, 0.2])
    s = own_labels.score(a, MANIFEST, "valid")
    assert s["n"] == 3 and s["song_accuracy"] == pytest.approx(2 / 3)
    assert s["song_balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["song_accuracy_excerpt"] == 0.0 and s["n_full"] == 2
    c = own_labels.compare(a, b, MANIFEST["path"].tolist(), (1.0, 1.0))
    assert c["same_label"] == pytest.approx(2 / 3)
    assert c["max_probability_difference"] == pytest.approx(0.15)
    assert c["worst_song"] == "rock/rock.00002.ogg"
    assert c["max_probability_difference_untempered"] == pytest.approx(0.15)  # temperature 1: as written
    with pytest.raises(SystemExit, match="missing"):
        own_labels.score(a.iloc[:2], MANIFEST, "valid")


def test_untempered_undoes_the_temperature():
    z = np.array([[2.0, 0.5, -1.0], [0.0, 0.3, 0.1]])
    softmax = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    scaled = np.exp(z / 0.6) / np.exp(z / 0.6).sum(axis=1, keepdims=True)
    assert not np.allclose(scaled, softmax)
    np.testing.assert_allclose(own_labels.untempered(scaled, 0.6), softmax, rtol=1e-9)
