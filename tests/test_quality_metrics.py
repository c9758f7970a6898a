"""The cost-quality measures, recomputed by hand on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from semroute.quality.metrics import curve, oracle_scores, reliability, summary, upper_hull


def test_curve_by_hand() -> None:
    # 4 prompts. weak right on 0 and 1, strong right on 0, 2 and 3. Gains (strong - weak): 0, -1, +1, +1.
    weak = [1, 1, 0, 0]
    strong = [1, 0, 1, 1]
    scores = [0.1, 0.0, 0.9, 0.5]  # order: 2 (+1), 3 (+1), 0 (0), 1 (-1)
    c = curve(scores, weak=weak, strong=strong)
    # quality with k strong calls: weak total 2, then +1, +1, 0, -1 -> 2, 3, 4, 4, 3 out of 4
    assert c.quality.tolist() == [0.5, 0.75, 1.0, 1.0, 0.75]
    assert c.weak_quality == 0.5 and c.strong_quality == 0.75
    # PGR = (q - 0.5) / 0.25 = 0, 1, 2, 2, 1; trapezoid over steps of 0.25: 0.25 * (0/2 + 1 + 2 + 2 + 1/2)
    assert c.pgr.tolist() == [0.0, 1.0, 2.0, 2.0, 1.0]
    assert c.apgr == pytest.approx(0.25 * 5.5)
    # PGR 50% is reached halfway between 0 and 1 strong calls: share 0.125
    assert c.cpt(0.5) == pytest.approx(0.125)
    assert c.cpt(1.0) == pytest.approx(0.25)
    # upper hull of (0, .5), (.25, .75), (.5, 1), (.75, 1), (1, .75): area = .25*(.5+.75)/2 + .25*(.75+1)/2
    #   + .25 * 1 + .25 * (1 + .75) / 2
    assert c.aiq == pytest.approx(0.25 * (0.625 + 0.875 + 1.0 + 0.875))


def test_ties_are_the_expected_curve_and_random_scores_half() -> None:
    rng = np.random.default_rng(0)
    weak = rng.integers(0, 2, 500)
    strong = np.maximum(weak, rng.integers(0, 2, 500))
    flat = curve(np.zeros(500), weak=weak, strong=strong)  # one tie group: the random router's expected curve
    assert flat.apgr == pytest.approx(0.5)
    assert flat.cpt(0.5) == pytest.approx(0.5, abs=1e-9)
    assert flat.cpt(0.8) == pytest.approx(0.8, abs=1e-9)
    oracle = curve(oracle_scores(weak, strong), weak=weak, strong=strong)
    gainers = int(((strong - weak) > 0).sum())
    assert oracle.cpt(1.0) == pytest.approx(gainers / 500)
    assert oracle.apgr > 0.5


def test_summary_cost_saved_by_hand() -> None:
    weak = [1, 1, 0, 0]
    strong = [1, 0, 1, 1]
    s = summary(curve([0.1, 0.0, 0.9, 0.5], weak=weak, strong=strong), prices=(1.0, 10.0))
    # 95% of the strong quality is 0.7125: reached at PGR 0.85, i.e. 0.85 of the way to one strong call
    assert s["share_at_95pct_strong_quality"] == pytest.approx(0.25 * 0.85)
    share = 0.25 * 0.85
    assert s["cost_saved_at_95pct_strong_quality"] == pytest.approx(1 - ((1 - share) * 1 + share * 10) / 10)
    assert s["n"] == 4


def test_upper_hull_and_reliability() -> None:
    hull = upper_hull(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.2, 1.0]))
    assert hull.tolist() == [[0.0, 0.0], [1.0, 1.0]]  # (0.5, 0.2) lies under the chord
    r = reliability([0.05, 0.15, 0.15, 0.95], [0, 0, 1, 1], bins=10)
    assert [b["n"] for b in r["bins"]] == [1, 2, 1]
    # ECE = 1/4*|0-.05| + 2/4*|.5-.15| + 1/4*|1-.95|
    assert r["ece"] == pytest.approx(0.25 * 0.05 + 0.5 * 0.35 + 0.25 * 0.05)
    assert r["brier"] == pytest.approx((0.05**2 + 0.15**2 + 0.85**2 + 0.05**2) / 4)
