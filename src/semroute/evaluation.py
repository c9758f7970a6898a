"""Evaluation on labelled data: accuracy with fallback as a class, in-scope accuracy, fallback precision and
recall, per-route P/R/F1, confusions, cost against sending everything to the fallback model, latency, and
threshold sweeps. Calibration (calibration.py) and reports (report.py) build on ``ScoredExample``.

Each query is routed alone (batch 1), as production traffic arrives, so the latency reported is a real decision.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .labelled import Example
from .router import Router
from .scoring import Reason

# Cost assumption, stated in every report: an average LLM request of this many tokens.
TOKENS_IN = 500
TOKENS_OUT = 250


@dataclass(frozen=True)
class ScoredExample:
    """What any threshold needs to re-decide a query: its best route, that route's score, and whether a
    negative example vetoed it."""

    text: str
    truth: str | None
    best: str | None
    score: float
    vetoed: bool
    latency_s: float
    signals: tuple[float, ...] = ()  # what a confidence model reads (confidence.SIGNALS)


def score_examples(router: Router, examples: Sequence[Example]) -> list[ScoredExample]:
    out = []
    for ex in examples:
        t = time.perf_counter()
        d = router.route(ex.text, top_scores=1, top_neighbours=0, policy=False)
        lat = time.perf_counter() - t
        best = d.scores[0].route if d.scores else None
        out.append(
            ScoredExample(ex.text, ex.route, best, d.score, d.reason == Reason.NEGATIVE_MATCH, lat, d.signals)
        )
    return out


def decide_at(scored: Sequence[ScoredExample], thresholds: Mapping[str, float] | float) -> list[str | None]:
    """Decisions if the thresholds were these (one global value or one per route)."""
    out: list[str | None] = []
    for s in scored:
        th = thresholds if isinstance(thresholds, float | int) else thresholds.get(s.best or "", 1.0)
        out.append(s.best if s.best is not None and not s.vetoed and s.score >= th else None)
    return out


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": tp + fn}


def metrics(
    truth: Sequence[str | None],
    pred: Sequence[str | None],
    *,
    route_models: Mapping[str, str] | None = None,
    model_costs: Mapping[str, tuple[float, float]] | None = None,
    fallback_model: str | None = None,
) -> dict[str, Any]:
    n = len(truth)
    correct = sum(t == p for t, p in zip(truth, pred, strict=True))
    in_scope = [(t, p) for t, p in zip(truth, pred, strict=True) if t is not None]
    fb_tp = sum(t is None and p is None for t, p in zip(truth, pred, strict=True))
    fb_pred = sum(p is None for p in pred)
    fb_true = sum(t is None for t in truth)
    labels = sorted({x for x in (*truth, *pred) if x is not None})
    per_route = {}
    for r in labels:
        tp = sum(t == r and p == r for t, p in zip(truth, pred, strict=True))
        fp = sum(t != r and p == r for t, p in zip(truth, pred, strict=True))
        fn = sum(t == r and p != r for t, p in zip(truth, pred, strict=True))
        per_route[r] = _prf(tp, fp, fn)
    confusions = Counter(
        (t or "(fallback)", p or "(fallback)") for t, p in zip(truth, pred, strict=True) if t != p
    )
    out: dict[str, Any] = {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "in_scope_n": len(in_scope),
        "in_scope_accuracy": sum(t == p for t, p in in_scope) / len(in_scope) if in_scope else 0.0,
        "fallback_n": fb_true,
        "fallback_rate": fb_pred / n if n else 0.0,
        "fallback_precision": fb_tp / fb_pred if fb_pred else 0.0,
        "fallback_recall": fb_tp / fb_true if fb_true else 0.0,
        "per_route": per_route,
        "top_confusions": [{"truth": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(20)],
    }
    if route_models and model_costs and fallback_model:
        out["cost"] = cost(pred, route_models, model_costs, fallback_model)
    return out


def _request_cost(costs: tuple[float, float]) -> float:
    return TOKENS_IN / 1000 * costs[0] + TOKENS_OUT / 1000 * costs[1]


def cost(
    pred: Sequence[str | None],
    route_models: Mapping[str, str],
    model_costs: Mapping[str, tuple[float, float]],
    fallback_model: str,
) -> dict[str, Any]:
    fb = _request_cost(model_costs[fallback_model])
    routed = sum(_request_cost(model_costs[route_models[p]]) if p is not None else fb for p in pred)
    everything = fb * len(pred)
    return {
        "assumption": f"{TOKENS_IN} input + {TOKENS_OUT} output tokens per request, declared model prices",
        "routed": routed,
        "all_fallback": everything,
        "ratio": routed / everything if everything else 0.0,
        "saving": 1 - routed / everything if everything else 0.0,
    }


def latency(scored: Sequence[ScoredExample]) -> dict[str, float]:
    xs = sorted(s.latency_s for s in scored)
    return {
        "median_ms": statistics.median(xs) * 1e3,
        "p99_ms": xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))] * 1e3,
        "n": len(xs),
    }


def sweep(scored: Sequence[ScoredExample], grid: Sequence[float] | None = None, **cost_kw: Any) -> list[dict[str, Any]]:
    """Metrics at each global threshold: the data behind the threshold and cost-quality plots."""
    truth = [s.truth for s in scored]
    grid = grid if grid is not None else [round(x, 3) for x in np.arange(0.0, 1.0001, 0.01)]
    rows = []
    for t in grid:
        m = metrics(truth, decide_at(scored, float(t)), **cost_kw)
        rows.append({
            "threshold": float(t), **{k: m[k] for k in ("accuracy", "in_scope_accuracy", "fallback_rate",
                                                          "fallback_precision", "fallback_recall")},
            "cost_ratio": m["cost"]["ratio"] if "cost" in m else None,
        })
    return rows


def evaluate(router: Router, examples: Sequence[Example]) -> tuple[dict[str, Any], list[ScoredExample]]:
    """The full evaluation of a bundle as it stands (its own thresholds)."""
    scored = score_examples(router, examples)
    th = dict(zip(router.bundle.table.names, router.bundle.table.thresholds.tolist(), strict=True))
    kw = cost_inputs(router)
    m = metrics([s.truth for s in scored], decide_at(scored, th), **kw)
    m["latency"] = latency(scored)
    m["index_version"] = router.version
    return m, scored


def cost_inputs(router: Router) -> dict[str, Any]:
    b = router.bundle
    return {
        "route_models": dict(zip(b.table.names, b.table.models, strict=True)),
        "model_costs": {k: (v.cost_per_1k_input, v.cost_per_1k_output) for k, v in b.models.items()},
        "fallback_model": b.table.fallback_model,
    }
