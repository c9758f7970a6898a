"""Checks of a policy against the models and routes it names, with file:line errors (and warnings).

Shapes and ranges were checked by pydantic while reading the file (schema.py); this is everything that needs the
whole route set: names that must exist, attribute values some model must have, regexes RE2 must accept, rules
that cannot do what they say (conflicting actions, a pre rule reading the route), and rules an earlier rule
shadows (a warning: the file still loads).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._config_schema import NAME_RE
from .._yaml_lines import LineOf, field_path
from ..errors import ConfigError
from .pii import GROUPS, KINDS
from .rules import check_regex, reads_post
from .schema import MODEL_ATTRIBUTES, Condition, PolicySpec, Rule
from .types import Candidate

if TYPE_CHECKING:
    from ..routes import ModelSpec, Route

_LABEL_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class _Checker:
    def __init__(self, file: Path, line_of: LineOf) -> None:
        self.file = file
        self.line_of = line_of

    def fail(self, at: Sequence[str | int], message: str, hint: str) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.line_of(list(at)), field=field_path(at), hint=hint)

    def warn(self, at: Sequence[str | int], message: str, hint: str) -> str:
        line = self.line_of(list(at))
        return f"{self.file}{f':{line}' if line else ''}: {field_path(at)}: warning: {message} ({hint})"


def _known(at: Sequence[str | int], what: str, name: str, known: Sequence[str], c: _Checker) -> None:
    if name not in known:
        raise c.fail(at, f"unknown {what} '{name}'", f"use one of: {', '.join(sorted(known)) or '(none declared)'}")


def check_policy(
    spec: PolicySpec,
    file: Path,
    line_of: LineOf,
    models: Mapping[str, ModelSpec],
    routes: Sequence[Route],
    fallback: Sequence[Candidate],
) -> list[str]:
    """Raise ConfigError for the first problem; return warnings (file:line: field: warning: ...)."""
    c = _Checker(file, line_of)
    model_names = list(models)
    route_names = [r.name for r in routes]
    tier_names = list(spec.tiers)
    base: list[str | int] = ["policy"]
    if spec.default_tier is not None:
        _known([*base, "default_tier"], "tier", spec.default_tier, tier_names, c)
    for name, tier in spec.tiers.items():
        at = [*base, "tiers", name]
        if not NAME_RE.fullmatch(name):
            raise c.fail(at, f"invalid tier name '{name}'", "use 1-64 lowercase letters, digits, '_', '-', '.'")
        for key, listed in (("allow", tier.allow or []), ("exclude", tier.exclude)):
            for j, m in enumerate(listed):
                _known([*at, key, j], "model", m, model_names, c)
        both = set(tier.allow or []) & set(tier.exclude)
        if both:
            raise c.fail([*at, "exclude"], f"model(s) {', '.join(sorted(both))} both allowed and excluded",
                         "a model is either in the tier's allow list or in its exclude list")
        if tier.allow is not None and not tier.allow:
            raise c.fail([*at, "allow"], "allow list is empty: the tier could use no model",
                         "list the models the tier may use, or drop 'allow' to allow all")
    if spec.no_eligible.model is not None:
        _known([*base, "no_eligible", "model"], "model", spec.no_eligible.model, model_names, c)

    attr_values = {
        "deployment": {m.deployment for m in models.values() if m.deployment},
        "tags": {t for m in models.values() for t in m.tags},
    }
    warnings: list[str] = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(spec.rules):
        at = [*base, "rules", i]
        if not NAME_RE.fullmatch(rule.name):
            raise c.fail([*at, "name"], f"invalid rule name '{rule.name}'",
                         "use 1-64 lowercase letters, digits, '_', '-', '.'")
        if rule.name in seen:
            raise c.fail([*at, "name"], f"duplicate rule name '{rule.name}' (also rules[{seen[rule.name]}])",
                         "rule names must be unique: the trace and PERMISSION_DENIED name them")
        seen[rule.name] = i
        _check_condition(rule.when, [*at, "when"], c, route_names, tier_names)
        if rule.stage == "pre" and reads_post(rule.when):
            raise c.fail([*at, "stage"], "a pre rule cannot read the route or the confidence",
                         "use 'stage: post' (or drop 'stage'): the route is known only after the semantic step")
        _check_action(rule, [*at, "then"], c, model_names, route_names, attr_values, models)
    warnings += _shadowed(spec.rules, c)
    return warnings


def _check_condition(cond: Condition, at: list[str | int], c: _Checker, routes: list[str], tiers: list[str]) -> None:
    if cond.regex is not None:
        err = check_regex(cond.regex)
        if err is not None:
            raise c.fail([*at, "regex"], f"invalid regular expression: {err}",
                         "RE2 syntax: no look-around or backreferences (they can take exponential time)")
    if cond.keywords is not None:
        for j, k in enumerate(cond.keywords):
            if not k.strip():
                raise c.fail([*at, "keywords", j], "keyword is empty", "remove it")
    if cond.tier is not None:
        for j, t in enumerate(cond.tier):
            _known([*at, "tier", j], "tier", t, tiers, c)
    if cond.route is not None:
        for j, r in enumerate(cond.route):
            _known([*at, "route", j], "route", r, [*routes, "fallback"], c)
    if cond.pii is not None:
        for j, k in enumerate(cond.pii):
            _known([*at, "pii", j], "PII kind", k, [*KINDS, *GROUPS], c)
    if cond.labels is not None:
        for k in cond.labels:
            if not _LABEL_KEY.fullmatch(k):
                raise c.fail([*at, "labels", k], f"invalid label key '{k}'",
                             "label keys are 1-64 letters, digits, '_', '.', ':', '-'")
    for key in ("all", "any"):
        for j, sub in enumerate(getattr(cond, key) or []):
            _check_condition(sub, [*at, key, j], c, routes, tiers)
    if cond.not_ is not None:
        _check_condition(cond.not_, [*at, "not"], c, routes, tiers)


def _check_action(
    rule: Rule, at: list[str | int], c: _Checker, models: list[str], routes: list[str],
    attr_values: dict[str, set[str]], specs: Mapping[str, ModelSpec],
) -> None:
    a = rule.then
    given = [k for k in a.model_fields_set]
    if a.deny is not None and len(given) > 1:
        others = ", ".join(sorted(k for k in given if k != "deny"))
        raise c.fail([*at, "deny"], f"conflicting actions: deny with {others}",
                     "a denied request goes nowhere; split the other actions into their own rule")
    if a.route is not None and a.model is not None:
        raise c.fail([*at, "model"], "conflicting actions: both 'route' and 'model' decide",
                     "force a route (its candidates are then chosen among) or a model, not both")
    if a.route is not None:
        _known([*at, "route"], "route", a.route, routes, c)
    if a.model is not None:
        _known([*at, "model"], "model", a.model, models, c)
    for key in ("allow", "exclude"):
        for j, m in enumerate(getattr(a, key) or []):
            _known([*at, key, j], "model", m, models, c)
    both = set(a.allow or []) & set(a.exclude or [])
    if both:
        raise c.fail([*at, "exclude"], f"conflicting actions: {', '.join(sorted(both))} both allowed and excluded",
                     "name each model in one of the two lists")
    if a.model is not None and (a.model in (a.exclude or []) or (a.allow is not None and a.model not in a.allow)):
        raise c.fail([*at, "model"], f"conflicting actions: model '{a.model}' is forced and not allowed",
                     "drop the model from 'exclude' (or add it to 'allow')")
    for attr, values in (a.require or {}).items():
        if attr not in MODEL_ATTRIBUTES:
            raise c.fail([*at, "require", attr], f"unknown model attribute '{attr}'",
                         f"rules may require: {', '.join(MODEL_ATTRIBUTES)}")
        for v in [values] if isinstance(values, str) else values:
            if v not in attr_values[attr]:
                raise c.fail([*at, "require", attr], f"no model has {attr} '{v}'",
                             f"declared values: {', '.join(sorted(attr_values[attr])) or '(none)'}")
        if a.model is not None:
            spec = specs[a.model]
            have = {spec.deployment} if attr == "deployment" else set(spec.tags)
            if have.isdisjoint([values] if isinstance(values, str) else values):
                raise c.fail([*at, "require", attr],
                             f"conflicting actions: forced model '{a.model}' lacks the required {attr}",
                             "force a model that has it, or drop one of the two actions")


def _canonical(cond: Condition) -> str:
    return json.dumps(cond.model_dump(exclude_none=True, by_alias=True), sort_keys=True)


def _decides(rule: Rule) -> bool:
    return rule.then.deny is not None or rule.then.route is not None or rule.then.model is not None


def _shadowed(rules: Sequence[Rule], c: _Checker) -> list[str]:
    """A deciding rule is shadowed when an earlier rule with the same condition (and stage) already decides every
    request it would see: it never decides anything. A denying rule shadows every later rule it matches."""
    out = []
    first: dict[tuple[str, str], tuple[int, Rule]] = {}
    for i, rule in enumerate(rules):
        stage = rule.stage or ("post" if reads_post(rule.when) else "pre")
        key = (stage, _canonical(rule.when))
        earlier = first.get(key)
        if earlier is not None and (earlier[1].then.deny is not None or (_decides(rule) and _decides(earlier[1]))):
            out.append(c.warn(["policy", "rules", i, "when"],
                              f"rule '{rule.name}' is shadowed by rule '{earlier[1].name}' (rules[{earlier[0]}]): "
                              "same condition, and that rule decides first",
                              "remove it, move it before the other, or narrow its condition"))
        elif earlier is None and _decides(rule):
            first[key] = (i, rule)
    return out


def policy_doc(spec: PolicySpec) -> dict[str, Any]:
    """The policy as stored in a bundle (and hashed into policy_version)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)
