"""Fit per-route thresholds on labelled validation data to a stated objective.

Objectives:
- ``accuracy``: maximise overall accuracy (fallback counted as a class). ``oos_share`` reweights the
  out-of-scope examples to the share expected in production (validation sets rarely have the right prior).
- ``precision``: for each route, the lowest threshold at which the route's precision reaches ``target``.

Overfitting guard: a route's own optimum is shrunk towards the best global threshold in proportion to how
little evidence it has: t_r = (n_r * t_r_hat + prior * t_global) / (n_r + prior), where n_r is the number of
validation queries whose best route is r. A route with no validation queries keeps t_global.

Confidence model (on by default, see confidence.py): first fit the probability that the best route is right from
several signals (score, margin, kNN, head, nearest similarity, "none" probability), on the same weighted
validation data; thresholds are then fitted on that probability. Skipped, and recorded as such, when the data
are too few (under MIN_EXAMPLES queries or MIN_CLASS of either outcome).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .confidence import MIN_CLASS, MIN_EXAMPLES, SIGNALS, ConfidenceModel, fit_confidence
from .errors import DataError
from .evaluation import ScoredExample

Objective = Literal["accuracy", "precision"]
GRID = np.round(np.arange(0.0, 1.0001, 0.005), 3)


@dataclass(frozen=True)
class Calibration:
    objective: Objective
    global_threshold: float
    thresholds: dict[str, float]
    evidence: dict[str, int]
    prior: float
    oos_share: float | None
    target: float | None
    details: dict[str, Any] = field(default_factory=dict)
    confidence: ConfidenceModel | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective, "global_threshold": self.global_threshold, "thresholds": self.thresholds,
            "evidence": self.evidence, "shrinkage_prior": self.prior, "oos_share": self.oos_share,
            "target": self.target, **self.details,
            "confidence_model": self.confidence.to_dict() if self.confidence is not None else None,
        }


def _weights(scored: Sequence[ScoredExample], oos_share: float | None) -> np.ndarray:
    oos = np.array([s.truth is None for s in scored])
    w = np.ones(len(scored))
    if oos_share is not None:
        if not 0 < oos_share < 1:
            raise DataError("--oos-share must be between 0 and 1")
        if not oos.any() or oos.all():
            raise DataError("--oos-share needs both in-scope and out-of-scope (route: null) examples")
        w[oos] = oos_share / oos.sum()
        w[~oos] = (1 - oos_share) / (~oos).sum()
    return w


def calibrate(
    scored: Sequence[ScoredExample],
    route_names: Sequence[str],
    *,
    objective: Objective = "accuracy",
    oos_share: float | None = None,
    target: float | None = None,
    prior: float = 20.0,
    confidence: bool = True,
) -> Calibration:
    if not scored:
        raise DataError("no validation examples")
    w = _weights(scored, oos_share)
    model, why = _fit_confidence(scored, w) if confidence else (None, "not requested")
    if model is not None:
        conf = model.confidence([s.signals for s in scored])
        scored = [replace(s, score=float(c)) if s.signals else s for s, c in zip(scored, conf, strict=True)]
    score = np.array([s.score for s in scored])
    best = np.array([s.best or "" for s in scored])
    vetoed = np.array([s.vetoed for s in scored])
    truth = np.array([s.truth or "" for s in scored])
    is_oos = np.array([s.truth is None for s in scored])
    hit = (best == truth) & ~is_oos  # routing to the best route would be right
    routable = (best != "") & ~vetoed

    def acc_at(t: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # weighted number of correct decisions among `mask` for each threshold in t
        routed = routable[mask][None, :] & (score[mask][None, :] >= t[:, None])
        good = (routed & hit[mask][None, :]) | (~routed & is_oos[mask][None, :])
        return (good * w[mask][None, :]).sum(1)  # type: ignore[no-any-return]

    def prec_at(t: np.ndarray, mask: np.ndarray) -> np.ndarray:
        routed = routable[mask][None, :] & (score[mask][None, :] >= t[:, None])
        tp = (routed & hit[mask][None, :]).sum(1)
        n = routed.sum(1)
        return np.where(n > 0, tp / np.maximum(n, 1), 1.0)

    everything = np.ones(len(scored), dtype=bool)
    if objective == "accuracy":
        global_t = float(GRID[int(np.argmax(acc_at(GRID, everything)))])
    elif objective == "precision":
        if target is None or not 0 < target <= 1:
            raise DataError("objective 'precision' needs --target between 0 and 1 (e.g. 0.95)")
        ok = np.flatnonzero(prec_at(GRID, everything) >= target)
        global_t = float(GRID[ok[0]]) if len(ok) else 1.0
    else:
        raise DataError(f"unknown objective '{objective}'; use accuracy or precision")

    thresholds: dict[str, float] = {}
    evidence: dict[str, int] = {}
    for r in route_names:
        mask = best == r
        n_r = int(mask.sum())
        evidence[r] = n_r
        if n_r == 0:
            thresholds[r] = global_t
            continue
        if objective == "accuracy":
            vals = acc_at(GRID, mask)
            cands = GRID[vals >= vals.max() - 1e-12]
            own = float(cands[np.argmin(np.abs(cands - global_t))])  # among ties, the one nearest the global
        else:
            ok = np.flatnonzero(prec_at(GRID, mask) >= target)
            own = float(GRID[ok[0]]) if len(ok) else 1.0
        thresholds[r] = round((n_r * own + prior * global_t) / (n_r + prior), 4)
    return Calibration(objective, global_t, thresholds, evidence, prior, oos_share, target,
                       details={"confidence": why}, confidence=model)


def _fit_confidence(scored: Sequence[ScoredExample], w: np.ndarray) -> tuple[ConfidenceModel | None, str]:
    usable = np.array([len(s.signals) == len(SIGNALS) for s in scored])
    correct = np.array([s.truth is not None and s.best == s.truth and not s.vetoed for s in scored])
    n_ok, n_bad = int((correct & usable).sum()), int((~correct & usable).sum())
    if usable.sum() < MIN_EXAMPLES or min(n_ok, n_bad) < MIN_CLASS:
        return None, (f"skipped: {n_ok} right and {n_bad} wrong best routes; a confidence model needs "
                      f"{MIN_EXAMPLES}+ queries and {MIN_CLASS}+ of each (add out-of-scope examples)")
    signals = np.array([s.signals for s, u in zip(scored, usable, strict=True) if u])
    model = fit_confidence(signals, correct[usable], w[usable])
    return model, f"fitted on {int(usable.sum())} queries ({n_bad} whose best route was wrong or out of scope)"
