"""The values the policy layer passes around: what a request says, what runtime state says, what the trace says.

``RuntimeView`` and ``Decision.predicted_quality`` are the two plug-in points for later stages (docs/policy.md,
"Plug-in points"): runtime feedback supplies exclusions and observed latencies, a quality predictor supplies a
per-query quality estimate per model. Neither needs changes to the choice itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .schema import Objective


@dataclass(frozen=True)
class Candidate:
    """A model a route may go to, with the route's own quality estimate for it (None: the model's default)."""

    model: str
    quality: float | None = None


@dataclass(frozen=True)
class RequestContext:
    """What a request tells the policy besides its text. Options may only tighten the tier's settings."""

    tenant: str = ""
    tier: str = ""  # as requested ("" = the default tier, if one is declared)
    labels: Mapping[str, str] = field(default_factory=dict)
    max_cost: float | None = None  # min()-ed with the tier's ceiling
    quality_floor: float | None = None  # max()-ed with the tier's floor
    objective: Objective | None = None


@dataclass(frozen=True)
class RuntimeView:
    """What runtime state says about models at the moment of one decision (issue 12 fills it in).

    ``excluded``: model -> why it must not be chosen now (an open breaker, a spent budget). Applied like any other
    constraint, with the reason in the trace; a no-eligible fallback model is refused too if excluded here.
    ``latency_ms``: model -> observed latency, replacing the declared ``latency_ms`` in the blend objective.
    """

    excluded: Mapping[str, str] = field(default_factory=dict)
    latency_ms: Mapping[str, float] = field(default_factory=dict)


EMPTY_RUNTIME = RuntimeView()


class RuntimeSource(Protocol):
    """Where the router gets a RuntimeView for one request (the default has none)."""

    def view(self, ctx: RequestContext) -> RuntimeView: ...


class QualityPredictor(Protocol):
    """Per-query quality estimates from the query's embedding (issue 13's predictor): one mapping model ->
    probability of a good answer per row of ``vectors``. When a decision has one, it replaces the declared quality
    of every candidate it names."""

    def predict(self, vectors: Any) -> list[Mapping[str, float]]: ...


class NoRuntime:
    def view(self, ctx: RequestContext) -> RuntimeView:
        return EMPTY_RUNTIME


@dataclass(frozen=True)
class TraceStep:
    """One step of a decision, in order. ``stage``: pii, pre, semantic, post, tier, constraint, candidate,
    objective, decision. ``kind`` says what happened; ``subject`` names the rule/model/route; ``detail`` why."""

    stage: str
    kind: str
    subject: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "kind": self.kind, "subject": self.subject, "detail": self.detail}

    def __str__(self) -> str:
        subject = f" {self.subject}" if self.subject else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"[{self.stage}] {self.kind}{subject}{detail}"


@dataclass(frozen=True)
class CandidateResult:
    """One candidate as the choice saw it."""

    model: str
    eligible: bool
    excluded_by: str = ""  # why not eligible (first cause)
    quality: float | None = None
    quality_source: str = ""  # predicted, route, model or "" (unknown)
    estimated_cost: float = 0.0
    latency_ms: float | None = None
    score: float | None = None  # the objective's score, when it computes one (blend)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "eligible": self.eligible, "excluded_by": self.excluded_by,
            "quality": self.quality, "quality_source": self.quality_source,
            "estimated_cost": round(self.estimated_cost, 8), "latency_ms": self.latency_ms,
            "score": None if self.score is None else round(self.score, 6),
        }
