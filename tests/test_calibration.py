"""mgr_batch.evaluation.calibration: temperature scaling, expected calibration error, the uncertainty threshold."""

from __future__ import annotations

import numpy as np

from mgr_batch.evaluation import calibration as cal


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def overconfident(n: int = 2000, temperature: float = 2.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose true temperature is ``temperature`` (labels drawn from the calibrated ones)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, 5))
    y = np.array([rng.choice(5, p=p) for p in _softmax(logits)])
    return _softmax(logits * temperature), y


def test_temperature_scaling_is_undone_by_its_inverse():
    p, _ = overconfident(50)
    np.testing.assert_allclose(cal.apply_temperature(cal.apply_temperature(p, 2.0), 0.5), p, atol=1e-5)
    np.testing.assert_allclose(cal.apply_temperature(p, 1.0), p, atol=1e-6)


def test_fitted_temperature_recovers_the_true_one_and_lowers_the_error():
    p, y = overconfident()
    t = cal.fit_temperature(p, y)
    assert 2.1 < t < 2.9
    after = cal.apply_temperature(p, t)
    assert cal.ece(after, y) < 0.03 < cal.ece(p, y)
    assert (after.argmax(1) == p.argmax(1)).all()  # a temperature never changes the top genre


def test_ece_of_known_bins():
    # two songs at confidence 0.9 (one right), two at 0.6 (both right): |0.5-0.9|*2/4 + |1-0.6|*2/4 = 0.4
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    assert abs(cal.ece(p, y) - 0.4) < 1e-9
    bins = [b for b in cal.reliability(p, y) if b["n"]]
    assert [(b["n"], round(b["accuracy"], 3)) for b in bins] == [(2, 1.0), (2, 0.5)] and len(
        cal.reliability(p, y)
    ) == 15


def test_threshold_keeps_the_largest_most_certain_set_right_95_percent_of_the_time():
    p, y = overconfident(seed=2)
    t = cal.uncertainty_threshold(p, y)
    kept = cal.certainty(p) >= t
    assert (p.argmax(1) == y)[kept].mean() >= 0.95 and 0 < kept.mean() < 1
    # one step lower would let the rest fall below the target
    lower = cal.certainty(p) >= np.max(cal.certainty(p)[~kept])
    assert (p.argmax(1) == y)[lower].mean() < 0.95
    s = cal.flag_summary(p, y, t)
    assert abs(s["uncertain_share"] - (1 - kept.mean())) < 1e-9 and s["accuracy_not_uncertain"] >= 0.95
    assert cal.flag_summary(p, y, None)["uncertain_share"] is None


def test_reliability_diagram_is_a_png():
    p, y = overconfident(200)
    assert cal.reliability_png(p, cal.apply_temperature(p, 2.5), y).startswith(b"\x89PNG")
