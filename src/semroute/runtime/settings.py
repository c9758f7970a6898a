"""The route files' ``feedback:`` section: circuit breakers, latency tracking, escalation, budgets, the decision
cache and sticky conversations. Declared once (in any one route file), validated at load with ``file:line: field``
errors, compiled into the bundle beside the routes (so it is versioned and reloaded with them).

    feedback:
      breaker: {failures: 5, window_s: 60, cooldown_s: 30, probes: 1}
      escalation: {threshold: 0.5, ladder: [small-chat, code-medium, frontier-large]}
      budgets:
        default: {escalations_per_minute: 10, escalations_per_day: 200, cost_per_day: 5.0}
        tenants: {acme: {escalations_per_day: 1000}}
      cache: {enabled: true, size: 10000, ttl_s: 300}
      conversations: {ttl_s: 1800}
      endpoints: {frontier-large: [us-east, eu-west]}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field

from .._config_schema import NAME_RE as _NAME_RE
from .._config_schema import Strict as _Strict
from .._config_schema import int_is_float
from ..errors import ConfigError

Float = Annotated[float, BeforeValidator(int_is_float)]  # `window_s: 60` is a perfectly good number of seconds
TENANT_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class BreakerSpec(_Strict):
    """Open after ``failures`` failed outcomes within ``window_s`` (or, when ``error_rate`` is set, once at least
    ``min_requests`` outcomes in the window failed at that rate or more); after ``cooldown_s`` let ``probes``
    requests through (half-open); one success closes it, one failure opens it again."""

    failures: Annotated[int, Field(ge=1, le=10_000)] = 5
    window_s: Annotated[Float, Field(gt=0, le=86_400)] = 60.0
    error_rate: Annotated[Float, Field(gt=0, le=1)] | None = None
    min_requests: Annotated[int, Field(ge=1, le=100_000)] = 20
    cooldown_s: Annotated[Float, Field(gt=0, le=86_400)] = 30.0
    probes: Annotated[int, Field(ge=1, le=100)] = 1


class LatencySpec(_Strict):
    """Observed latency per model and endpoint: an exponentially weighted moving average of reported latencies,
    new = alpha * sample + (1 - alpha) * old."""

    alpha: Annotated[Float, Field(gt=0, le=1)] = 0.2


class EscalationSpec(_Strict):
    """A caller whose answer came back with confidence under ``threshold`` (per route in ``routes``) gets the next
    model up the ``ladder`` (weakest first). Without a ladder, every declared model in order of price."""

    threshold: Annotated[Float, Field(ge=0, le=1)] = 0.5
    routes: dict[str, Annotated[Float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    ladder: list[str] | None = None


class BudgetSpec(_Strict):
    """Per tenant. Absent (null) means no limit. Minutes and days are fixed UTC windows."""

    escalations_per_minute: Annotated[int, Field(ge=0)] | None = 10
    escalations_per_day: Annotated[int, Field(ge=0)] | None = 200
    cost_per_day: Annotated[Float, Field(ge=0)] | None = None


class BudgetsSpec(_Strict):
    default: BudgetSpec = Field(default_factory=BudgetSpec)
    tenants: dict[str, BudgetSpec] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> BudgetSpec:
        return self.tenants.get(tenant, self.default)


class CacheSpec(_Strict):
    """Opt-in: a cached answer skips the encoder, so its stage timings (and the batcher's load) change."""

    enabled: bool = False
    size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    ttl_s: Annotated[Float, Field(gt=0, le=86_400)] = 300.0


class ConversationSpec(_Strict):
    ttl_s: Annotated[Float, Field(gt=0, le=7 * 86_400)] = 1800.0


class FeedbackSpec(_Strict):
    breaker: BreakerSpec = Field(default_factory=BreakerSpec)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    escalation: EscalationSpec = Field(default_factory=EscalationSpec)
    budgets: BudgetsSpec = Field(default_factory=BudgetsSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    conversations: ConversationSpec = Field(default_factory=ConversationSpec)
    # model -> its endpoints (e.g. regions); a decision names the one chosen. Undeclared: one unnamed endpoint.
    endpoints: dict[str, list[str]] = Field(default_factory=dict)


def check_feedback(
    spec: FeedbackSpec,
    models: Sequence[str],
    routes: Sequence[str],
    *,
    file: str | Path,
    line: Callable[[list[str | int]], int | None],
) -> None:
    """Cross-checks the schema cannot make: names must refer to declared models, routes and valid tenants."""

    def fail(path: list[str | int], message: str, hint: str) -> ConfigError:
        where = "feedback" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        return ConfigError(message, file=file, line=line(["feedback", *path]), field=where, hint=hint)

    known = ", ".join(sorted(models))
    ladder = spec.escalation.ladder
    if ladder is not None:
        if len(ladder) < 2:
            raise fail(["escalation", "ladder"], "a ladder needs at least two models",
                       "list models from the weakest (cheapest) to the strongest, or remove 'ladder'")
        for i, m in enumerate(ladder):
            if m not in models:
                raise fail(["escalation", "ladder", i], f"model '{m}' is not declared",
                           f"declare it under 'models' or use one of: {known}")
            if m in ladder[:i]:
                raise fail(["escalation", "ladder", i], f"model '{m}' appears twice", "list each model once")
    for r in spec.escalation.routes:
        if r not in routes:
            raise fail(["escalation", "routes", r], f"route '{r}' is not declared",
                       f"use one of: {', '.join(sorted(routes))}")
    for t in spec.budgets.tenants:
        if not TENANT_RE.match(t):
            raise fail(["budgets", "tenants", t], f"invalid tenant '{t}'",
                       "tenants are 1-64 characters of letters, digits, '_', '.', ':', '-' (as sent in requests)")
    for m, eps in spec.endpoints.items():
        if m not in models:
            raise fail(["endpoints", m], f"model '{m}' is not declared", f"use one of: {known}")
        if not eps:
            raise fail(["endpoints", m], "the endpoint list is empty", "name at least one endpoint or remove it")
        for i, e in enumerate(eps):
            if not _NAME_RE.match(e):
                raise fail(["endpoints", m, i], f"invalid endpoint name '{e}'",
                           "use 1-64 characters: lowercase letters, digits, '_', '-', '.'")
            if e in eps[:i]:
                raise fail(["endpoints", m, i], f"endpoint '{e}' appears twice", "list each endpoint once")
