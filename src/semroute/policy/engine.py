"""The policy engine: one bundle's policy, run around the semantic step.

Order of evaluation (docs/policy.md):
    1. tier: the request's ``user_tier`` (or the default tier); unknown -> INVALID_ARGUMENT (or the default tier)
    2. detection: PII kinds, and one RE2 pass for every regex and keyword list of every rule
    3. pre rules, in file order: deny stops at once; the first ``route``/``model`` decides (the encoder is then
       skipped); constraint actions (require, allow, exclude, objective, quality_floor) accumulate
    4. the semantic step (unless a pre rule decided): route, score
    5. post rules, in file order, reading the route and its confidence too; same semantics
    6. candidates: the forced model, else the route's (or the fallback's) candidates
    7. constraints (choose.py), then the objective; nothing eligible -> the declared no_eligible behaviour

    >>> pre = engine.pre("my SSN is 078-05-1120", RequestContext(tier="free"))
    >>> decision = engine.finish(pre, semantic_decision)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import PolicyDeniedError, RequestError
from ..routes import ModelSpec
from ..scoring import Decision, Reason
from .choose import Constraints, choose, estimate_cost, evaluate, hard_exclusion
from .pii import PiiDetector
from .rules import Facts, Gate, PatternSet, Test, compile_condition, gate, reads_post
from .schema import Objective, PolicySpec, Rule, Tier
from .types import EMPTY_RUNTIME, Candidate, CandidateResult, RequestContext, RuntimeView, TraceStep


def estimate_tokens(data: bytes) -> int:
    """Input tokens, estimated as UTF-8 bytes / 4 rounded up: the usual rule of thumb for the BPE tokenizers LLMs
    use on English. The router cannot know each model's tokenizer; this is for context windows and prices."""
    return (len(data) + 3) // 4


@dataclass
class _Acc:
    """What fired rules have said so far for one request."""

    steps: list[TraceStep]
    allow: frozenset[str] | None = None
    allow_by: str = ""
    exclude: dict[str, str] = field(default_factory=dict)
    require: dict[str, tuple[frozenset[str], str]] = field(default_factory=dict)
    objective: tuple[Objective, str] | None = None
    floor: tuple[float, str] | None = None
    route: str | None = None
    model: str | None = None
    rule: str = ""  # the rule that decided


@dataclass(frozen=True)
class PreResult:
    """The pre-semantic half of a decision."""

    ctx: RequestContext
    tier: str | None
    facts: Facts
    acc: _Acc

    @property
    def decided(self) -> bool:
        """A pre rule forced a route or a model: the encoder is not needed."""
        return self.acc.route is not None or self.acc.model is not None


class PolicyEngine:
    """Compiled policy of one bundle. Thread-safe (read-only after construction)."""

    def __init__(
        self,
        spec: PolicySpec,
        models: Mapping[str, ModelSpec],
        route_candidates: Mapping[str, Sequence[Candidate]],
        fallback_candidates: Sequence[Candidate],
    ) -> None:
        self.spec = spec
        self.models = dict(models)
        self.route_candidates = {k: tuple(v) for k, v in route_candidates.items()}
        self.fallback_candidates = tuple(fallback_candidates)
        self.detector = PiiDetector()
        self.patterns = PatternSet()
        self.pre_rules = _RuleIndex()
        self.post_rules = _RuleIndex()
        for rule in spec.rules:
            test = compile_condition(rule.when, self.patterns)
            post = rule.stage == "post" or (rule.stage is None and reads_post(rule.when))
            (self.post_rules if post else self.pre_rules).add(rule, test, gate(rule.when, self.patterns))
        self.patterns.compile()
        doc = {
            "policy": spec.model_dump(mode="json", by_alias=True),
            "models": {k: v.model_dump(mode="json") for k, v in sorted(self.models.items())},
            "routes": {k: [[c.model, c.quality] for c in v] for k, v in sorted(self.route_candidates.items())},
            "fallback": [[c.model, c.quality] for c in self.fallback_candidates],
        }
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        self.version = f"p-{digest[:12]}"

    def describe(self) -> dict[str, Any]:
        """The policy and the model attributes it reads (Info's policy_json)."""
        return {
            "version": self.version,
            "policy": self.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "models": {k: v.model_dump(mode="json", exclude_none=True) for k, v in self.models.items()},
            "routes": {k: [{"model": c.model, "quality": c.quality} for c in v]
                       for k, v in self.route_candidates.items()},
            "fallback": [{"model": c.model, "quality": c.quality} for c in self.fallback_candidates],
        }

    # --- step 1-3 ----------------------------------------------------------------------------------------------

    def resolve_tier(self, requested: str, field_name: str = "metadata.user_tier") -> tuple[str | None, str]:
        """(tier applied, note). With no tiers declared, ``user_tier`` stays a free-form label."""
        tiers, default = self.spec.tiers, self.spec.default_tier
        if not tiers:
            return None, "no tiers declared"
        if requested in tiers:
            return requested, "requested"
        if default is not None:
            return default, "default tier" if not requested else f"unknown tier '{requested}': default tier"
        if not requested:
            raise RequestError(field_name, f"is empty and no default tier is declared; send one of: "
                                           f"{', '.join(tiers)}")
        raise RequestError(field_name, f"unknown tier '{requested}'; send one of: {', '.join(tiers)}")

    def pre(self, text: str, ctx: RequestContext, *, field_prefix: str = "metadata") -> PreResult:
        tier, note = self.resolve_tier(ctx.tier, f"{field_prefix}.user_tier")
        data = text.encode("utf-8", "surrogatepass")
        pii = self.detector.detect_bytes(data)
        facts = Facts(
            chars=len(text), tokens=estimate_tokens(data), matched=self.patterns.match(data), tenant=ctx.tenant,
            tier=tier or ctx.tier, labels=ctx.labels, pii=pii,
        )
        acc = _Acc(steps=[TraceStep("tier", "applied", tier or "", note)])
        acc.steps.append(TraceStep("pii", "detected" if pii else "none", ",".join(sorted(pii))))
        self._apply(self.pre_rules, facts, acc, "pre")
        return PreResult(ctx, tier, facts, acc)

    def _apply(self, rules: _RuleIndex, facts: Facts, acc: _Acc, stage: str) -> None:
        for rule, test in rules.open(facts):
            if not test(facts):
                continue
            a = rule.then
            acts = ", ".join(f"{k}={_short(getattr(a, k))}" for k in sorted(a.model_fields_set))
            if a.deny is not None:
                acc.steps.append(TraceStep(stage, "rule fired", rule.name, f"deny: {a.deny}"))
                raise PolicyDeniedError(f"denied by rule '{rule.name}': {a.deny}")
            decided_before = acc.route is not None or acc.model is not None
            if (a.route is not None or a.model is not None) and decided_before:
                acts += f" (route/model ignored: rule '{acc.rule}' decided first)"
            elif a.route is not None or a.model is not None:
                acc.route, acc.model, acc.rule = a.route, a.model, rule.name
            if a.allow is not None:
                allow = frozenset(a.allow)
                acc.allow = allow if acc.allow is None else acc.allow & allow
                acc.allow_by = f"{acc.allow_by}+{rule.name}" if acc.allow_by else rule.name
            for m in a.exclude or []:
                acc.exclude.setdefault(m, rule.name)
            for attr, values in (a.require or {}).items():
                vs = frozenset([values] if isinstance(values, str) else values)
                if attr in acc.require:  # two rules require the same attribute: a model must satisfy both
                    prev, by = acc.require[attr]
                    vs, name = prev & vs, f"{by}+{rule.name}"
                else:
                    name = rule.name
                acc.require[attr] = (vs, name)
            if a.objective is not None and acc.objective is None:
                acc.objective = (a.objective, rule.name)
            if a.quality_floor is not None and (acc.floor is None or a.quality_floor > acc.floor[0]):
                acc.floor = (a.quality_floor, rule.name)
            acc.steps.append(TraceStep(stage, "rule fired", rule.name, acts))

    # --- steps 5-7 ---------------------------------------------------------------------------------------------

    def finish(
        self,
        pre: PreResult,
        semantic: Decision | None,
        *,
        index_version: str,
        runtime: RuntimeView = EMPTY_RUNTIME,
    ) -> Decision:
        """The final decision: post rules, candidates, constraints, objective. Raises PolicyDeniedError."""
        acc = replace(pre.acc, steps=list(pre.acc.steps), exclude=dict(pre.acc.exclude),
                      require=dict(pre.acc.require))
        facts = pre.facts
        if semantic is not None:
            seen = semantic.route if semantic.route is not None else "fallback"
            acc.steps.append(TraceStep("semantic", "route", seen,
                                       f"score {semantic.score:.3f}, reason {semantic.reason.value}"))
            facts = replace(facts, route=seen, confidence=semantic.score)
        elif acc.route is not None:
            facts = replace(facts, route=acc.route)
        self._apply(self.post_rules, facts, acc, "post")

        ctx, tier_name = pre.ctx, pre.tier
        tier = self.spec.tiers.get(tier_name) if tier_name else None
        route: str | None
        if acc.model is not None:
            candidates: Sequence[Candidate] = (Candidate(acc.model),)
            route = None
        elif acc.route is not None:
            candidates, route = self.route_candidates[acc.route], acc.route
        elif semantic is not None and semantic.route is not None:
            candidates, route = self.route_candidates[semantic.route], semantic.route
        else:
            candidates, route = self.fallback_candidates, None
        objective, objective_by = self._objective(acc, ctx, tier)
        floor = max(x for x in (self.spec.quality_floor, tier.quality_floor if tier else None,
                                acc.floor[0] if acc.floor else None, ctx.quality_floor) if x is not None)
        max_cost, max_cost_by = _ceiling(tier_name, tier, ctx)
        c = Constraints(
            tier=tier_name, tier_allow=frozenset(tier.allow) if tier and tier.allow is not None else None,
            tier_exclude=frozenset(tier.exclude) if tier else frozenset(), rule_allow=acc.allow,
            rule_allow_by=acc.allow_by, rule_exclude=acc.exclude, require=acc.require, max_cost=max_cost,
            max_cost_by=max_cost_by, input_tokens=facts.tokens, output_tokens=self.spec.expected_output_tokens,
        )
        predicted = semantic.predicted_quality if semantic is not None else None
        results = evaluate(candidates, self.models, c, runtime, predicted)
        weights = (tier.weights if tier and tier.weights else None) or self.spec.weights
        best, results, note = choose(results, objective, floor, weights)
        for r in results:
            if r.eligible:
                q = f"quality {r.quality:.2f} ({r.quality_source})" if r.quality is not None else "quality unknown"
                score = f", score {r.score:.3f}" if r.score is not None else ""
                acc.steps.append(TraceStep("candidate", "eligible", r.model,
                                           f"{q}, est. cost {r.estimated_cost:.6g}{score}"))
            else:
                acc.steps.append(TraceStep("constraint", "excluded", r.model, r.excluded_by))
        reason = semantic.reason if semantic is not None else Reason.RULE
        if acc.rule:
            reason = Reason.RULE
        if best is None:
            model, chosen_cost = self._no_eligible(results, c, runtime, acc, route)
            reason = Reason.NO_ELIGIBLE_MODEL
        else:
            model, chosen_cost = results[best].model, results[best].estimated_cost
            acc.steps.append(TraceStep("objective", objective, model, f"{note} (objective from {objective_by})"))
        acc.steps.append(TraceStep("decision", "model", model, f"reason {reason.value}"))
        base = semantic if semantic is not None else _synthetic(index_version)
        return replace(
            base,
            route=route,
            model=model,
            fallback=route is None and acc.model is None and (semantic is None or semantic.fallback),
            reason=reason,
            policy_version=self.version,
            trace=tuple(acc.steps),
            pii_kinds=tuple(sorted(facts.pii)),
            estimated_cost=chosen_cost,
            tier=tier_name or "",
            objective=objective,
            rule=acc.rule,
            candidates=tuple(results),
        )

    def _objective(self, acc: _Acc, ctx: RequestContext, tier: Tier | None) -> tuple[Objective, str]:
        if acc.objective is not None:
            return acc.objective[0], f"rule {acc.objective[1]}"
        if ctx.objective is not None:
            return ctx.objective, "request"
        if tier is not None and tier.objective is not None:
            return tier.objective, "tier"
        return self.spec.objective, "policy default"

    def _no_eligible(
        self, results: list[CandidateResult], c: Constraints, runtime: RuntimeView, acc: _Acc, route: str | None
    ) -> tuple[str, float]:
        causes = "; ".join(f"{r.model}: {r.excluded_by}" for r in results)
        what = f"route '{route}'" if route else ("the forced model" if acc.model else "the fallback")
        ne = self.spec.no_eligible
        if ne.action == "fallback" and ne.model is not None:
            spec = self.models[ne.model]
            refused = hard_exclusion(ne.model, spec, c, runtime)
            if not refused:
                acc.steps.append(TraceStep("objective", "no eligible model", ne.model,
                                           f"declared no_eligible fallback ({causes})"))
                return ne.model, estimate_cost(spec, c.input_tokens, c.output_tokens)
            causes += f"; no_eligible fallback {ne.model}: {refused}"
        acc.steps.append(TraceStep("objective", "no eligible model", "", causes))
        raise PolicyDeniedError(f"no eligible model for {what} (REASON_NO_ELIGIBLE_MODEL): {causes}")


class _RuleIndex:
    """One stage's rules in file order, indexed by their gates (rules.gate): ``open`` yields, in file order, only
    the rules whose gate the request opens, plus the ungated ones."""

    def __init__(self) -> None:
        self.rules: list[tuple[Rule, Test]] = []
        self._always: list[int] = []
        self._by_pattern: dict[object, list[int]] = {}
        self._by_label: dict[object, list[int]] = {}
        self._by_tenant: dict[str, list[int]] = {}

    def add(self, rule: Rule, test: Test, g: Gate | None) -> None:
        i = len(self.rules)
        self.rules.append((rule, test))
        if g is None:
            self._always.append(i)
        elif g[0] == "pattern":
            self._by_pattern.setdefault(g[1], []).append(i)
        elif g[0] == "label":
            self._by_label.setdefault(g[1], []).append(i)
        else:
            for t in g[1]:  # type: ignore[attr-defined]
                self._by_tenant.setdefault(t, []).append(i)

    def open(self, facts: Facts) -> list[tuple[Rule, Test]]:
        idx = list(self._always)
        for m in facts.matched:
            idx += self._by_pattern.get(m, ())
        for k in facts.labels:
            idx += self._by_label.get(k, ())
        idx += self._by_tenant.get(facts.tenant, ())
        return [self.rules[i] for i in sorted(set(idx))]

    def __len__(self) -> int:
        return len(self.rules)


def _ceiling(tier_name: str | None, tier: Tier | None, ctx: RequestContext) -> tuple[float | None, str]:
    tier_cap = tier.max_cost if tier is not None else None
    if ctx.max_cost is not None and (tier_cap is None or ctx.max_cost < tier_cap):
        return ctx.max_cost, "request max_cost"
    return tier_cap, f"tier {tier_name} max_cost"


def _synthetic(index_version: str) -> Decision:
    """The base of a decision no semantic step was run for."""
    return Decision(route=None, model="", score=0.0, threshold=None, fallback=False, reason=Reason.RULE,
                    margin=0.0, scores=[], neighbours=[], index_version=index_version, n_tokens=0)


def _short(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "/".join(map(str, v))
    if isinstance(v, dict):
        return ",".join(f"{k}:{_short(x)}" for k, x in v.items())
    return str(v)
