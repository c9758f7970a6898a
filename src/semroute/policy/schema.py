"""The ``policy:`` section of a route file, as written: shapes and ranges only.

Cross-references (a rule naming a model, a route or a tier; attribute values no model has; shadowed rules) are
checked by ``policy.compile`` once every file is read, with the same file:line errors. See docs/policy.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .._config_schema import Strict as _Strict
from .._config_schema import int_is_float as _int_is_float

Objective = Literal["quality", "cheapest", "blend"]
NoEligibleAction = Literal["deny", "fallback"]
Stage = Literal["pre", "post"]

_NUMERIC = ("quality", "cost", "latency", "max_cost", "quality_floor", "confidence_below", "confidence_at_least")


class Weights(_Strict):
    """The blend objective: score = quality * q + cost * (1 - cost_norm) + latency * (1 - latency_norm)."""

    quality: Annotated[float, Field(ge=0.0)] = 0.4
    cost: Annotated[float, Field(ge=0.0)] = 0.3
    latency: Annotated[float, Field(ge=0.0)] = 0.3

    _f = field_validator("quality", "cost", "latency", mode="before")(_int_is_float)

    @model_validator(mode="after")
    def _not_all_zero(self) -> Weights:
        if self.quality + self.cost + self.latency <= 0:
            raise ValueError("weights are all zero; give at least one a positive weight")
        return self


class Tier(_Strict):
    """What callers of one tier may use."""

    allow: list[str] | None = None  # only these models (None: any)
    exclude: list[str] = Field(default_factory=list)
    max_cost: Annotated[float, Field(ge=0.0)] | None = None  # estimated cost of one request, in the price unit
    objective: Objective | None = None
    quality_floor: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    weights: Weights | None = None
    description: str | None = None

    _f = field_validator("max_cost", "quality_floor", mode="before")(_int_is_float)


class Length(_Strict):
    min: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Length:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Condition(_Strict):
    """When a rule fires. Keys in one mapping must all hold (an implicit ``all``)."""

    regex: str | None = None
    keywords: Annotated[list[str], Field(min_length=1)] | None = None
    tokens: Length | None = None
    chars: Length | None = None
    tenant: Annotated[list[str], Field(min_length=1)] | None = None
    tier: Annotated[list[str], Field(min_length=1)] | None = None
    labels: dict[str, str | list[str]] | None = None  # label key -> accepted value(s); "*" = present
    pii: Annotated[list[str], Field(min_length=1)] | None = None  # any of these kinds; "any" = any kind
    route: Annotated[list[str], Field(min_length=1)] | None = None  # post-semantic: the route chosen
    confidence_below: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # post-semantic: the route's score
    confidence_at_least: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    all: Annotated[list[Condition], Field(min_length=1)] | None = None
    any: Annotated[list[Condition], Field(min_length=1)] | None = None
    not_: Condition | None = Field(default=None, alias="not")

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)
    _f = field_validator("confidence_below", "confidence_at_least", mode="before")(_int_is_float)

    @model_validator(mode="after")
    def _non_empty(self) -> Condition:
        if not self.model_fields_set:
            raise ValueError("condition is empty; give at least one of: " + ", ".join(CONDITION_KEYS))
        return self


class Action(_Strict):
    """What a fired rule does. ``deny``, ``route`` and ``model`` decide; the others constrain the choice."""

    deny: str | None = None  # the message the caller gets with PERMISSION_DENIED
    route: str | None = None
    model: str | None = None
    require: dict[str, str | list[str]] | None = None  # model attribute -> value(s) the model must have
    allow: Annotated[list[str], Field(min_length=1)] | None = None
    exclude: Annotated[list[str], Field(min_length=1)] | None = None
    objective: Objective | None = None
    quality_floor: Annotated[float, Field(ge=0.0, le=1.0)] | None = None

    _f = field_validator("quality_floor", mode="before")(_int_is_float)

    @model_validator(mode="after")
    def _non_empty(self) -> Action:
        if not self.model_fields_set:
            raise ValueError("action is empty; give at least one of: " + ", ".join(Action.model_fields))
        return self


class Rule(_Strict):
    name: str
    when: Condition
    then: Action
    # pre: before the encoder (may decide alone); post: after the semantic step (may read route and confidence).
    # Default: post if the condition reads the route or the confidence, else pre.
    stage: Stage | None = None
    description: str | None = None


class NoEligible(_Strict):
    """What happens when every candidate is excluded."""

    action: NoEligibleAction = "deny"
    model: str | None = None  # action fallback: this model, if it passes the hard constraints itself

    @model_validator(mode="after")
    def _model_iff_fallback(self) -> NoEligible:
        if self.action == "fallback" and self.model is None:
            raise ValueError("action 'fallback' needs 'model': the compliant model to send such requests to")
        if self.action == "deny" and self.model is not None:
            raise ValueError("action 'deny' takes no 'model'; use action 'fallback' to name one")
        return self


class PolicySpec(_Strict):
    """The whole ``policy:`` section (declared in exactly one route file)."""

    default_tier: str | None = None
    objective: Objective = "quality"
    quality_floor: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    weights: Weights = Field(default_factory=Weights)
    expected_output_tokens: Annotated[int, Field(ge=0, le=10_000_000)] = 500
    no_eligible: NoEligible = Field(default_factory=NoEligible)
    tiers: dict[str, Tier] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    _f = field_validator("quality_floor", mode="before")(_int_is_float)


CONDITION_KEYS = ("regex", "keywords", "tokens", "chars", "tenant", "tier", "labels", "pii", "route",
                  "confidence_below", "confidence_at_least", "all", "any", "not")
POST_KEYS = frozenset({"route", "confidence_below", "confidence_at_least"})
MODEL_ATTRIBUTES = ("deployment", "tags")  # what ``require`` may name
