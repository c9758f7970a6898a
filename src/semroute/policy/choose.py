"""Choosing among candidates: constraints first, then the objective.

Constraints, in this order (the first that fails is the cause recorded in the trace):
    runtime (RuntimeView.excluded), tier allow/exclude, rule allow/exclude, required attributes,
    context window >= input tokens + expected output tokens, estimated cost <= the cost ceiling.
The first four are *hard*: a no-eligible fallback model must pass them too. The last two are about this request's
size; the fallback model is exempt from them (it is the operator's declared answer for "nothing fits").

Objectives over the eligible candidates (ties keep the route's candidate order):
    quality   highest quality; candidates without any estimate rank after those with one. With no estimates at all
              this is the route's first eligible candidate: today's behaviour.
    cheapest  lowest estimated cost among those whose quality reaches the floor (a candidate with no estimate is
              taken to reach it: the operator listed it for this route). If none reaches it: highest quality.
    blend     w_q * q + w_c * (1 - cost_n) + w_l * (1 - latency_n), weights divided by their sum, where cost_n and
              latency_n are min-max normalised over the eligible candidates (0 = the cheapest / fastest, 1 = the
              dearest / slowest; 0 for all when they are equal). Unknown quality counts 0.5, unknown latency
              counts as the slowest.

Quality of a candidate: the per-query predicted quality when a predictor supplies one, else the route's estimate
for that candidate, else the model's declared ``quality``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..routes import ModelSpec
from .schema import Objective, Weights
from .types import Candidate, CandidateResult, RuntimeView

_UNKNOWN_QUALITY_IN_BLEND = 0.5


@dataclass(frozen=True)
class Constraints:
    """Everything that may exclude a candidate for one request (already merged from tier, rules and request)."""

    tier: str | None
    tier_allow: frozenset[str] | None
    tier_exclude: frozenset[str]
    rule_allow: frozenset[str] | None  # intersection of every fired rule's allow list
    rule_allow_by: str
    rule_exclude: Mapping[str, str]  # model -> the rule that excluded it
    require: Mapping[str, tuple[frozenset[str], str]]  # attribute -> (accepted values, the rule that said so)
    max_cost: float | None
    max_cost_by: str
    input_tokens: int
    output_tokens: int


def estimate_cost(spec: ModelSpec, tokens_in: int, tokens_out: int) -> float:
    return tokens_in / 1000 * spec.cost_per_1k_input + tokens_out / 1000 * spec.cost_per_1k_output


def hard_exclusion(model: str, spec: ModelSpec, c: Constraints, runtime: RuntimeView) -> str:
    """Why ``model`` may never serve this request (''), whatever its size: runtime, tier, rules, compliance."""
    if model in runtime.excluded:
        return f"runtime: {runtime.excluded[model]}"
    if c.tier_allow is not None and model not in c.tier_allow:
        return f"tier {c.tier}: not in its allow list"
    if model in c.tier_exclude:
        return f"tier {c.tier}: excluded"
    if c.rule_allow is not None and model not in c.rule_allow:
        return f"rule {c.rule_allow_by}: not in its allow list"
    if model in c.rule_exclude:
        return f"rule {c.rule_exclude[model]}: excluded"
    for attr, (values, rule) in c.require.items():
        have = _attribute(spec, attr)
        if have.isdisjoint(values):
            return (f"rule {rule}: requires {attr} {'/'.join(sorted(values))}, model has "
                    f"{'/'.join(sorted(have)) or 'none'}")
    return ""


def _attribute(spec: ModelSpec, attr: str) -> frozenset[str]:
    if attr == "deployment":
        return frozenset([spec.deployment]) if spec.deployment else frozenset()
    if attr == "tags":
        return frozenset(spec.tags)
    raise KeyError(attr)  # compile() refuses any other attribute


def evaluate(
    candidates: Sequence[Candidate],
    models: Mapping[str, ModelSpec],
    c: Constraints,
    runtime: RuntimeView,
    predicted: Mapping[str, float] | None,
) -> list[CandidateResult]:
    """Each candidate with its estimates and, if excluded, the first cause."""
    out = []
    for cand in candidates:
        spec = models[cand.model]
        cost = estimate_cost(spec, c.input_tokens, c.output_tokens)
        if predicted is not None and cand.model in predicted:
            quality, source = predicted[cand.model], "predicted"
        elif cand.quality is not None:
            quality, source = cand.quality, "route"
        elif spec.quality is not None:
            quality, source = spec.quality, "model"
        else:
            quality, source = None, ""
        latency = runtime.latency_ms.get(cand.model, spec.latency_ms)
        cause = hard_exclusion(cand.model, spec, c, runtime)
        if not cause and spec.context_window is not None and spec.context_window < c.input_tokens + c.output_tokens:
            cause = (f"context window {spec.context_window} < {c.input_tokens} input + {c.output_tokens} expected "
                     "output tokens")
        if not cause and c.max_cost is not None and cost > c.max_cost:
            cause = f"{c.max_cost_by}: estimated cost {cost:.6g} > ceiling {c.max_cost:.6g}"
        out.append(CandidateResult(cand.model, not cause, cause, quality, source, cost, latency))
    return out


def choose(
    results: list[CandidateResult], objective: Objective, floor: float, weights: Weights
) -> tuple[int | None, list[CandidateResult], str]:
    """Index of the chosen candidate in ``results`` (None: nothing eligible), results with scores, and a note."""
    eligible = [i for i, r in enumerate(results) if r.eligible]
    if not eligible:
        return None, results, "no eligible candidate"
    if objective == "quality":
        best = min(eligible, key=lambda i: (results[i].quality is None, -(results[i].quality or 0.0), i))
        return best, results, "highest quality" if results[best].quality is not None else "first eligible candidate"
    if objective == "cheapest":
        ok = [i for i in eligible if results[i].quality is None or results[i].quality >= floor]  # type: ignore[operator]
        if not ok:
            best = min(eligible, key=lambda i: (-(results[i].quality or 0.0), i))
            return best, results, f"none reaches quality floor {floor:g}: highest quality"
        best = min(ok, key=lambda i: (results[i].estimated_cost, i))
        return best, results, f"cheapest with quality >= {floor:g}"
    # blend
    total = weights.quality + weights.cost + weights.latency
    wq, wc, wl = weights.quality / total, weights.cost / total, weights.latency / total
    costs = [results[i].estimated_cost for i in eligible]
    lats = [results[i].latency_ms for i in eligible]
    known = [x for x in lats if x is not None]
    c_lo, c_hi = min(costs), max(costs)
    l_lo, l_hi = (min(known), max(known)) if known else (0.0, 0.0)
    scored = list(results)
    for i in eligible:
        r = results[i]
        q = r.quality if r.quality is not None else _UNKNOWN_QUALITY_IN_BLEND
        cost_n = (r.estimated_cost - c_lo) / (c_hi - c_lo) if c_hi > c_lo else 0.0
        if r.latency_ms is None:
            lat_n = 1.0 if known else 0.0
        else:
            lat_n = (r.latency_ms - l_lo) / (l_hi - l_lo) if l_hi > l_lo else 0.0
        scored[i] = _with_score(r, wq * q + wc * (1 - cost_n) + wl * (1 - lat_n))
    best = max(eligible, key=lambda i: (scored[i].score or 0.0, -i))
    return best, scored, f"best blend {wq:.2f}*quality + {wc:.2f}*cost + {wl:.2f}*latency"


def _with_score(r: CandidateResult, score: float) -> CandidateResult:
    from dataclasses import replace

    return replace(r, score=score)
