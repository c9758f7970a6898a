"""Evaluation with the policy on and off, side by side: which models the queries went to, what they cost, how
many were refused, per tier. Used by ``semroute eval`` (the "policy" key of its JSON).

Both sides are priced the same way (the policy's estimate: input tokens as UTF-8 bytes / 4, the policy's
``expected_output_tokens``, the models' prices), so the difference is the policy's doing. Policy off is the
semantic step alone: the route's first candidate, or the fallback model.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from ..errors import PolicyDeniedError, RequestError
from ..labelled import Example
from ..router import Router
from .choose import estimate_cost
from .engine import estimate_tokens
from .types import RequestContext


def context_of(ex: Example, tier: str | None = None) -> RequestContext:
    md = ex.metadata or {}
    return RequestContext(tenant=md.get("tenant", ""), tier=tier if tier is not None else md.get("user_tier", ""),
                          labels=dict(md.get("labels", {})))


def policy_side_by_side(router: Router, examples: Sequence[Example], tiers: Sequence[str] | None = None
                        ) -> dict[str, Any]:
    """Policy on vs off. ``tiers``: evaluate every example under each of these tiers (default: each example's own
    metadata, or the default tier)."""
    engine = router.policy
    if engine is None:
        return {"policy_version": "", "note": "the route files declare no policy"}
    out_tokens = engine.spec.expected_output_tokens
    off_models: list[str] = []
    off_cost: list[float] = []
    for ex in examples:
        d = router.route(ex.text, top_scores=1, top_neighbours=0, policy=False)
        off_models.append(d.model)
        off_cost.append(estimate_cost(engine.models[d.model], estimate_tokens(ex.text.encode("utf-8")), out_tokens))
    runs = [(t, [context_of(ex, t) for ex in examples]) for t in tiers] if tiers else [(None, [context_of(ex)
                                                                                          for ex in examples])]
    by_tier: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "denied": 0, "cost_on": 0.0, "cost_off": 0.0,
                                                              "models_on": Counter(), "changed": 0})
    rules: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    invalid: list[str] = []
    for _, ctxs in runs:
        for i, (ex, ctx) in enumerate(zip(examples, ctxs, strict=True)):
            try:
                tier, _ = engine.resolve_tier(ctx.tier)
            except RequestError as e:
                invalid.append(f"example {i + 1}: {e}")
                continue
            row = by_tier[tier or "(none)"]
            row["n"] += 1
            row["cost_off"] += off_cost[i]
            try:
                d = router.route(ex.text, context=ctx, top_scores=1, top_neighbours=0)
            except PolicyDeniedError:
                row["denied"] += 1
                reasons["denied"] += 1
                continue
            row["cost_on"] += d.estimated_cost or 0.0
            row["models_on"][d.model] += 1
            row["changed"] += d.model != off_models[i]
            reasons[d.reason.value] += 1
            rules.update(t.subject for t in d.trace if t.kind == "rule fired")
    tiers_out = {
        name: {**{k: v for k, v in row.items() if k != "models_on"}, "models_on": dict(row["models_on"]),
               "cost_ratio": row["cost_on"] / row["cost_off"] if row["cost_off"] else 0.0}
        for name, row in by_tier.items()
    }
    return {
        "policy_version": engine.version,
        "assumption": f"input tokens = UTF-8 bytes / 4, {out_tokens} output tokens per request, declared prices; "
                      "denied requests cost nothing on the policy side",
        "off": {"cost": sum(off_cost) * len(runs), "models": dict(Counter(off_models))},
        "on": {"cost": sum(r["cost_on"] for r in by_tier.values()),
               "denied": sum(r["denied"] for r in by_tier.values()), "reasons": dict(reasons),
               "rules_fired": dict(rules)},
        "by_tier": tiers_out,
        "invalid": invalid[:20],
    }
