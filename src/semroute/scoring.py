"""From nearest utterances to a Decision: per-route scores, thresholds, fallback.

Scores are aggregated *within* each route (max, or the mean of the route's own top-k hits), never by taking top-k
across all routes: otherwise a route with many near-duplicate utterances crowds the others out of the neighbour
list. A route whose retrieved hits are fewer than k gets the lowest retrieved similarity for each missing hit (its
unseen utterances are at most that similar), so one lucky hit does not make a route confident.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .policy.types import CandidateResult, TraceStep
from .routes import Aggregation


class Reason(enum.StrEnum):
    """Why a decision came out as it did."""

    MATCHED = "matched"  # best route cleared its threshold
    BELOW_THRESHOLD = "below_threshold"  # best route's score under its threshold: fallback
    NEGATIVE_MATCH = "negative_match"  # closer to a negative (or fallback) example than to the route's: fallback
    NO_MATCH = "no_match"  # no route had any hit among the neighbours: fallback
    NO_ELIGIBLE_MODEL = "no_eligible_model"  # the policy excluded every candidate: its declared fallback model
    RULE = "rule"  # a policy rule forced the route or the model
    # runtime feedback (semroute.runtime): the model differs from what the meaning alone chose, and why
    ESCALATION_BUDGET_EXHAUSTED = "escalation_budget_exhausted"  # escalation asked, tenant's budget spent: kept
    ESCALATED = "escalated"  # the caller's answer was unsure: the next model up the ladder
    BREAKER_OPEN = "breaker_open"  # the chosen model's circuit breaker is open: the next available one
    STICKY = "sticky"  # the conversation keeps the (stronger) model it already has
    COST_BUDGET_EXHAUSTED = "cost_budget_exhausted"  # the tenant's spend is past its budget: no pricier model


@dataclass(frozen=True)
class RouteScore:
    route: str
    score: float


@dataclass(frozen=True)
class Neighbour:
    text: str
    route: str
    similarity: float
    negative: bool = False


@dataclass(frozen=True)
class Timings:
    tokenize_ns: int = 0
    encode_ns: int = 0
    search_ns: int = 0
    score_ns: int = 0
    queue_ns: int = 0

    @property
    def total_ns(self) -> int:
        return self.tokenize_ns + self.encode_ns + self.search_ns + self.score_ns + self.queue_ns


@dataclass(frozen=True)
class Decision:
    """The answer for one query."""

    route: str | None
    model: str
    score: float
    threshold: float | None
    fallback: bool
    reason: Reason
    margin: float
    scores: list[RouteScore]
    neighbours: list[Neighbour]
    index_version: str
    truncated: bool = False
    n_tokens: int = 0
    timings: Timings = field(default_factory=Timings)
    # what a confidence model reads (confidence.SIGNALS); kept for calibration, not sent to clients
    signals: tuple[float, ...] = field(default=(), repr=False, compare=False)
    # the policy's part (policy/engine.py); empty when no policy ran
    policy_version: str = ""
    trace: tuple[TraceStep, ...] = ()
    pii_kinds: tuple[str, ...] = ()  # kinds only, never values
    estimated_cost: float | None = None
    tier: str = ""
    objective: str = ""
    rule: str = ""  # the rule that forced the route or model, if any
    candidates: tuple[CandidateResult, ...] = ()
    # plug-in: a per-query quality estimate per model (a predictor fills it in); replaces declared qualities
    predicted_quality: Mapping[str, float] | None = field(default=None, repr=False, compare=False)
    # runtime feedback: answered from the decision cache (nothing encoded), the model's endpoint when it declares
    # several, and what the feedback loop did, in order
    cached: bool = False
    endpoint: str | None = None
    feedback_trace: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "model": self.model,
            "score": round(self.score, 6),
            "threshold": self.threshold,
            "fallback": self.fallback,
            "reason": self.reason.value,
            "margin": round(self.margin, 6),
            "scores": [{"route": s.route, "score": round(s.score, 6)} for s in self.scores],
            "neighbours": [
                {"text": n.text, "route": n.route, "similarity": round(n.similarity, 6), "negative": n.negative}
                for n in self.neighbours
            ],
            "index_version": self.index_version,
            "truncated": self.truncated,
            "n_tokens": self.n_tokens,
            "cached": self.cached,
            "endpoint": self.endpoint,
            "feedback_trace": list(self.feedback_trace),
            "timings_ns": {
                "tokenize": self.timings.tokenize_ns,
                "encode": self.timings.encode_ns,
                "search": self.timings.search_ns,
                "score": self.timings.score_ns,
                "queue": self.timings.queue_ns,
            },
            "policy_version": self.policy_version,
            "tier": self.tier,
            "pii_kinds": list(self.pii_kinds),
            "estimated_cost": None if self.estimated_cost is None else round(self.estimated_cost, 8),
            "objective": self.objective,
            "rule": self.rule,
            "candidates": [c.to_dict() for c in self.candidates],
            "trace": [t.to_dict() for t in self.trace],
        }


@dataclass(frozen=True)
class RouteTable:
    """What scoring needs from a bundle: route names, models, thresholds, and which route each row belongs to."""

    names: list[str]
    models: list[str]
    thresholds: npt.NDArray[np.float64]
    row_route: npt.NDArray[np.int64]  # index row -> route id; -1 for a fallback (out-of-scope) example
    row_negative: npt.NDArray[np.bool_]
    row_text: list[str]
    fallback_model: str
    n_positive: npt.NDArray[np.int64]  # utterances per route: a route with 2 examples is averaged over 2

    # Plain-Python copies of the per-row arrays, made once: scoring walks a query's ~32 neighbours in a Python
    # loop, where indexing numpy arrays element by element costs more than the arithmetic.
    @functools.cached_property
    def row_route_list(self) -> list[int]:
        return self.row_route.tolist()  # type: ignore[no-any-return]

    @functools.cached_property
    def row_negative_list(self) -> list[bool]:
        return self.row_negative.tolist()  # type: ignore[no-any-return]

    @functools.cached_property
    def n_positive_list(self) -> list[int]:
        return self.n_positive.tolist()  # type: ignore[no-any-return]


def route_scores(
    table: RouteTable,
    sims: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int64],
    aggregation: Aggregation,
    top_k: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-route scores for one query's neighbours.

    Returns (scores, positive_max, negative_max), each of length n_routes; -inf where a route had no hit.
    """
    n = len(table.names)
    scores = np.full(n, -np.inf)
    neg_max = np.full(n, -np.inf)
    pos_max = np.full(n, -np.inf)
    # Python scalars throughout: for one query's few dozen hits this is several times faster than numpy
    # (measured: the whole post-encoder decision went from ~115 to ~60 us). Same float64 arithmetic, in the same
    # order, as the array version it replaces.
    hits = [(i, s) for i, s in zip(ids.tolist(), sims.tolist(), strict=True) if i >= 0]
    if not hits:
        return scores, pos_max, neg_max
    floor = hits[-1][1]
    row_route, row_negative = table.row_route_list, table.row_negative_list
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    best: dict[int, float] = {}
    neg_best: dict[int, float] = {}
    for i, s in hits:
        r = row_route[i]
        if r < 0:  # fallback examples vote for no route (see fallback_similarity)
            continue
        if row_negative[i]:
            if s > neg_best.get(r, -math.inf):
                neg_best[r] = s
            continue
        if s > best.get(r, -math.inf):
            best[r] = s
        # mean of each route's own top_k hits; hits arrive sorted by similarity, so the first k are its best
        c = counts.get(r, 0)
        if c < top_k:
            sums[r] = sums.get(r, 0.0) + s
            counts[r] = c + 1
    if neg_best:
        neg_max[list(neg_best)] = list(neg_best.values())
    if best:
        pos_max[list(best)] = list(best.values())
    if aggregation == "max":
        return pos_max.copy(), pos_max, neg_max
    n_positive = table.n_positive_list
    for r, total in sums.items():
        k = min(top_k, n_positive[r])
        scores[r] = (total + (k - counts[r]) * floor) / k
    return scores, pos_max, neg_max


def fallback_similarity(
    table: RouteTable, sims: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]
) -> float:
    """Similarity of the nearest fallback (out-of-scope) example among the neighbours; -inf if none."""
    valid = ids >= 0
    fb = table.row_route[ids[valid]] < 0
    return float(sims[valid][fb].max()) if fb.any() else -np.inf


def decide(
    table: RouteTable,
    scores: npt.NDArray[np.float64],
    neg_max: npt.NDArray[np.float64],
    pos_max: npt.NDArray[np.float64],
    *,
    index_version: str,
    neighbours: list[Neighbour],
    top_scores: int = 5,
    confidence: float | None = None,
    fallback_max: float = -np.inf,
    order: npt.NDArray[np.intp] | None = None,
    truncated: bool = False,
    n_tokens: int = 0,
    timings: Timings | None = None,
    signals: tuple[float, ...] = (),
    predicted_quality: Mapping[str, float] | None = None,
) -> Decision:
    """Pick the best route; fall back when it is below its threshold or vetoed by a negative example.

    With ``confidence`` (a calibrated confidence model's probability that the best route is right), the threshold
    applies to it and it is the decision's score; the margin stays in raw route-score units. ``order`` is
    ``np.argsort(-scores, kind="stable")`` if the caller has it already; the last four arguments are carried into
    the Decision as they are."""
    if order is None:
        order = np.argsort(-scores, kind="stable")
    top = order[: max(top_scores, 2)].tolist()  # Python scalars: numpy scalars are slow one at a time
    top_values = scores[top].tolist()
    best = top[0]
    best_score = top_values[0]
    runner_up = top_values[1] if len(top) > 1 and math.isfinite(top_values[1]) else 0.0
    listed = [
        RouteScore(table.names[i], v) for i, v in zip(top[:top_scores], top_values, strict=False) if math.isfinite(v)
    ]
    common: dict[str, Any] = {
        "scores": listed, "neighbours": neighbours, "index_version": index_version, "truncated": truncated,
        "n_tokens": n_tokens, "timings": timings or Timings(), "signals": signals,
        "predicted_quality": predicted_quality,
    }
    if not math.isfinite(best_score):
        return Decision(None, table.fallback_model, 0.0, None, True, Reason.NO_MATCH, 0.0, **common)
    threshold = float(table.thresholds[best])
    margin = best_score - runner_up
    if confidence is not None:
        best_score = confidence
    if neg_max[best] > pos_max[best] or fallback_max > pos_max[best]:
        return Decision(
            None, table.fallback_model, best_score, threshold, True, Reason.NEGATIVE_MATCH, margin, **common
        )
    if best_score < threshold:
        return Decision(
            None, table.fallback_model, best_score, threshold, True, Reason.BELOW_THRESHOLD, margin, **common
        )
    return Decision(
        table.names[best], table.models[best], best_score, threshold, False, Reason.MATCHED, margin, **common
    )
