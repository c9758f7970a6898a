"""Cost-quality measures for routing between a weak (cheap) and a strong (expensive) model.

A router gives each prompt a score (here: the predicted gain of the strong model over the weak one); sending the
``k`` highest-scoring prompts to the strong model, for every ``k`` from 0 to n, traces the quality reached
against the share of strong calls. From that curve (the RouteLLM paper's measures, Ong et al. 2024):

- PGR(share) = (quality - weak quality) / (strong quality - weak quality): the performance gap recovered;
- APGR = the area under PGR over the strong-call share in [0, 1] (random router: 0.5);
- CPT(x%) = the smallest strong-call share whose PGR reaches x% (random: x%);
- AIQ (RouterBench, Hu et al. 2024) = the area under the upper convex hull of quality against normalised cost;
- cost saved at 95% of the strong model's quality, with the models' prices.

Prompts with equal scores are one group: within a group the curve is the expected one under random tie-breaking
(a straight line), so a router that cannot tell prompts apart scores exactly like the random router.

    >>> c = curve(scores, weak=w, strong=s)
    >>> c.apgr, c.cpt(0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Curve:
    """Quality against strong-call share, exactly, at every number of strong calls 0..n."""

    share: Array  # (n+1,) k / n
    quality: Array  # (n+1,) mean quality when the k highest-scored prompts go to the strong model
    weak_quality: float
    strong_quality: float

    @property
    def n(self) -> int:
        return len(self.share) - 1

    @property
    def gap(self) -> float:
        return self.strong_quality - self.weak_quality

    @property
    def pgr(self) -> Array:
        if self.gap <= 0:
            raise ValueError("the strong model is not better than the weak one on this data: PGR is undefined")
        return (self.quality - self.weak_quality) / self.gap

    @property
    def apgr(self) -> float:
        return float(np.trapezoid(self.pgr, self.share))

    def cpt(self, target: float) -> float:
        """The smallest strong-call share at which PGR reaches ``target`` (linear between integer call counts)."""
        pgr = self.pgr
        above = np.flatnonzero(pgr >= target - 1e-12)
        if len(above) == 0:
            return 1.0
        i = int(above[0])
        if i == 0:
            return 0.0
        lo, hi = pgr[i - 1], pgr[i]
        frac = (target - lo) / (hi - lo) if hi > lo else 1.0
        return float(self.share[i - 1] + frac * (self.share[i] - self.share[i - 1]))

    def share_for_quality(self, quality: float) -> float:
        """The smallest strong-call share reaching ``quality`` (1.0 if never reached)."""
        if self.gap <= 0:
            return 0.0 if self.weak_quality >= quality else 1.0
        return self.cpt((quality - self.weak_quality) / self.gap)

    @property
    def aiq(self) -> float:
        """Area under the upper convex hull of (share, quality): RouterBench's AIQ with cost normalised so that
        all-weak is 0 and all-strong is 1 (two models: the normalised cost is the strong-call share)."""
        hull = upper_hull(self.share, self.quality)
        return float(np.trapezoid(hull[:, 1], hull[:, 0]))


def _group_gains(scores: Array, gain: Array) -> tuple[Array, Array]:
    """(group sizes, group gain sums) of prompts with equal scores, best score first."""
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], gain[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sizes = np.diff(np.r_[starts, len(s)])
    sums = np.add.reduceat(g, starts) if len(g) else np.zeros(0)
    return sizes.astype(np.float64), sums.astype(np.float64)


def curve(scores: npt.ArrayLike, *, weak: npt.ArrayLike, strong: npt.ArrayLike) -> Curve:
    """The cost-quality curve of routing by ``scores`` (higher: send to the strong model).

    ``weak`` and ``strong`` are each prompt's observed quality from each model (e.g. 1.0 correct, 0.0 wrong)."""
    sc = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weak, dtype=np.float64)
    s = np.asarray(strong, dtype=np.float64)
    if not (sc.shape == w.shape == s.shape) or sc.ndim != 1 or len(sc) == 0:
        raise ValueError("scores, weak and strong must be non-empty 1-d arrays of one length")
    n = len(sc)
    sizes, sums = _group_gains(sc, s - w)
    # within a tie group of size m and gain sum G, taking j of its prompts gains j * G / m in expectation
    per = np.repeat(sums / sizes, sizes.astype(np.int64))
    gain = np.r_[0.0, np.cumsum(per)]
    quality = (w.sum() + gain) / n
    return Curve(np.arange(n + 1) / n, quality, float(w.mean()), float(s.mean()))


def oracle_scores(weak: npt.ArrayLike, strong: npt.ArrayLike) -> Array:
    """Scores of the router that knows the outcomes: strong first where it gains, never where it loses."""
    return np.asarray(strong, dtype=np.float64) - np.asarray(weak, dtype=np.float64)


def upper_hull(x: Array, y: Array) -> npt.NDArray[np.float64]:
    """The upper convex hull of the points, from the smallest to the largest x (monotone chain)."""
    pts = sorted(zip(x.tolist(), y.tolist(), strict=True))
    hull: list[tuple[float, float]] = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] is on or below the chord
                hull.pop()
            else:
                break
        hull.append(p)
    return np.array(hull, dtype=np.float64)


def reliability(predicted: npt.ArrayLike, observed: npt.ArrayLike, bins: int = 10) -> dict[str, Any]:
    """Predicted against observed quality in equal-width bins of the prediction, and the expected calibration
    error (ECE: the count-weighted mean |observed - predicted| over bins) and Brier score."""
    p = np.asarray(predicted, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        mp, mo = float(p[m].mean()), float(o[m].mean())
        rows.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(m.sum()), "predicted": mp, "observed": mo})
        ece += m.sum() / len(p) * abs(mo - mp)
    return {"bins": rows, "ece": float(ece), "brier": float(np.mean((p - o) ** 2)), "n": len(p)}


def summary(c: Curve, *, prices: tuple[float, float] | None = None) -> dict[str, Any]:
    """The headline numbers of one curve. ``prices``: (weak, strong) cost per request, for the cost saved at 95%
    of the strong model's quality; without them the strong-call share stands in for cost."""
    share95 = c.share_for_quality(0.95 * c.strong_quality)
    out: dict[str, Any] = {
        "apgr": c.apgr, "cpt50": c.cpt(0.5), "cpt80": c.cpt(0.8), "cpt95": c.cpt(0.95), "aiq": c.aiq,
        "weak_quality": c.weak_quality, "strong_quality": c.strong_quality, "n": c.n,
        "share_at_95pct_strong_quality": share95,
    }
    if prices is not None:
        cw, cs = prices
        cost = (1 - share95) * cw + share95 * cs
        out["cost_saved_at_95pct_strong_quality"] = 1 - cost / cs if cs > 0 else 0.0
    else:
        out["cost_saved_at_95pct_strong_quality"] = 1 - share95
    return out
