"""Route files: schema, loading and validation.

Validation is strict and happens once, at load. Every error names the file, the line and the field, and says how
to fix it. A directory is read as all of its ``*.yaml``/``*.yml`` files, merged in name order. Configuration never
names code to import: enumerations are literals.

    >>> rs = load_routes(["routes/"])
    >>> rs.route("billing").model
    'small-chat'
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .policy.schema import PolicySpec
from .policy.types import Candidate
from .runtime.settings import FeedbackSpec, check_feedback

Aggregation = Literal["max", "mean_topk"]
ScorerKind = Literal["knn", "logistic"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

# Stated limits, checked at load so 'validate' refuses what 'build-index' could not build (docs/operations.md).
# Routes: Info lists every route and scoring keeps per-route arrays; 1,000 is ~7x CLINC150's 150 intents.
MAX_ROUTES = 1_000
# Examples per route (positive + negative): past a few hundred a route gains little, and the index and the head
# fit grow with every example.
MAX_UTTERANCES_PER_ROUTE = 10_000
# All vectors in one bundle: the largest index size benchmarked (benchmarks/index_scale.py).
MAX_VECTORS = 1_000_000
# One example's length: the encoder reads at most 256 tokens (~1,000 characters of English), so the rest of a
# longer example would never be embedded.
MAX_UTTERANCE_CHARS = 2_000
# The learned head's fit holds a few (vectors x classes) float32 matrices and runs 300 full passes over them:
# 20M cells is ~250 MB and minutes of fitting (CLINC150 is 2.3M). 20,000 routes would ask for 3+ GiB per matrix.
MAX_HEAD_CELLS = 20_000_000
_NAME_HINT = "use 1-64 characters: lowercase letters, digits, '_', '-', '.', starting with a letter or digit"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelSpec(_Strict):
    """A model routes may name, with what a decision needs to know about it: its price, and the attributes the
    policy reads (docs/policy.md)."""

    cost_per_1k_input: Annotated[float, Field(ge=0)] = 0.0
    cost_per_1k_output: Annotated[float, Field(ge=0)] = 0.0
    description: str | None = None
    deployment: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")] | None = None  # e.g. on_prem, cloud
    tags: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]] = Field(default_factory=list)
    context_window: Annotated[int, Field(ge=1)] | None = None  # tokens, input + output
    latency_ms: Annotated[float, Field(ge=0)] | None = None  # declared p50, a prior until latency is observed
    quality: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # default quality estimate in [0, 1]

    @field_validator("cost_per_1k_input", "cost_per_1k_output", "latency_ms", "quality", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        # strict mode refuses ints for floats; `cost: 0` is a perfectly good price.
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class CandidateSpec(_Strict):
    """One candidate model of a route, with the route's quality estimate for it."""

    model: str
    quality: Annotated[float, Field(ge=0.0, le=1.0)] | None = None

    @field_validator("quality", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class Fallback(_Strict):
    """The model for queries no route is confident about, and optional examples of such queries."""

    model: str
    # optional: models the policy may choose among for fallback queries; 'model' is the first when omitted
    candidates: list[str | CandidateSpec] | None = None
    # out-of-scope examples: queries that must not be routed. They train the learned scorer's "none of these
    # routes" class, and a query whose nearest example is one of them falls back (reason negative_match).
    utterances: list[str] = Field(default_factory=list)


class Defaults(_Strict):
    """Settings that apply to every route unless the route overrides them."""

    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    aggregation: Aggregation = "mean_topk"
    top_k: Annotated[int, Field(ge=1, le=50)] = 3
    neighbours: Annotated[int, Field(ge=1, le=1000)] = 32
    # measured on CLINC150 val (benchmarks/clinc150.py): logistic head + kNN 95.1% vs kNN alone 89.4%
    scorer: ScorerKind = "logistic"
    # scorer: logistic only. A route's score is (1 - head_weight) * kNN score + head_weight * head probability.
    head_weight: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    # L2 penalty of the head's softmax fit. 1e-6 was chosen by 3-fold cross-validation on CLINC150 train among
    # 0, 1e-6, 1e-5 and 3e-5 (best held-out accuracy and log-loss together: 97.0%, 0.138). The former 1e-4 shrank
    # the weights so far that the head's own accuracy on CLINC150 val was 94.5% (95.9% at 1e-6).
    head_l2: Annotated[float, Field(ge=0.0, le=1.0)] = 1e-6

    @field_validator("threshold", "head_weight", "head_l2", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class RouteSpec(_Strict):
    """One route: a named destination model with example utterances."""

    name: str
    model: str | None = None  # one model, or:
    candidates: list[str | CandidateSpec] | None = None  # ordered candidates (the policy chooses among them)
    description: str | None = None
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    tier: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    utterances: Annotated[list[str], Field(min_length=1)]
    negative_utterances: list[str] = Field(default_factory=list)

    @field_validator("threshold", mode="before")
    @classmethod
    def _int_is_float(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class RouteFileModel(_Strict):
    version: Literal[1]
    fallback: Fallback | None = None
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    defaults: Defaults | None = None
    policy: PolicySpec | None = None
    routes: list[RouteSpec] = Field(default_factory=list)
    feedback: FeedbackSpec | None = None  # runtime feedback settings: semroute.runtime.settings


@dataclass(frozen=True)
class Route:
    """A validated route, with its effective threshold."""

    name: str
    model: str  # the first candidate
    threshold: float
    utterances: tuple[str, ...]
    negative_utterances: tuple[str, ...] = ()
    description: str | None = None
    tier: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class RouteSet:
    """All route files merged and validated: what ``build-index`` compiles."""

    fallback_model: str
    models: dict[str, ModelSpec]
    defaults: Defaults
    routes: tuple[Route, ...]
    sources: dict[str, str]  # file path -> sha256 of its bytes
    fallback_utterances: tuple[str, ...] = ()
    fallback_candidates: tuple[Candidate, ...] = ()
    policy: PolicySpec | None = None  # None: no policy section anywhere (no policy step at all)
    warnings: tuple[str, ...] = ()  # file:line: field: message lines (e.g. a shadowed rule)
    feedback: FeedbackSpec | None = None

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def route_names(self) -> list[str]:
        return [r.name for r in self.routes]


# ---------------------------------------------------------------------------------------------------------------
# YAML with line numbers


class _Located:
    """Maps a path of keys/indices in a YAML document to the line it starts on."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.root = node

    def line(self, path: Sequence[str | int]) -> int | None:
        node = self.root
        best = node.start_mark.line + 1 if node is not None else None
        for part in path:
            if node is None:
                break
            nxt: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == part:
                        # point at the key: that is where the user typed the field
                        best = k.start_mark.line + 1
                        nxt = v
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                nxt = node.value[part]
                best = nxt.start_mark.line + 1
            node = nxt
            if node is None:
                break
        return best


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_duplicate_keys(node: yaml.Node, at: list[str | int], file: Path) -> None:
    """Refuse a mapping that repeats a key, at any depth: PyYAML keeps the last value silently, so a route with
    ``threshold`` twice, or a file with two ``routes:`` lists, would build from whichever came second."""
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                if k.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' merges, it is not a key
                    _check_duplicate_keys(v, at, file)
                    continue
                line = k.start_mark.line + 1
                key = (k.tag, k.value)
                if key in first:
                    raise ConfigError(
                        "duplicate key", file=file, line=line, field=_field_path([*at, k.value]),
                        hint=f"'{k.value}' is already set at line {first[key]}; keep one of them",
                    )
                first[key] = line
                _check_duplicate_keys(v, [*at, k.value], file)
            else:
                _check_duplicate_keys(v, at, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, [*at, i], file)


def _field_path(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_TOP_KEYS = list(RouteFileModel.model_fields)
_ALLOWED = {
    "routes": list(RouteSpec.model_fields),
    "defaults": list(Defaults.model_fields),
    "fallback": list(Fallback.model_fields),
    "models": list(ModelSpec.model_fields),
    "policy": list(PolicySpec.model_fields),
    "feedback": list(FeedbackSpec.model_fields),
}


def _section(loc: Sequence[str | int]) -> str:
    return str(loc[0]) if len(loc) > 1 else ""


def _hint_for(err_type: str, loc: Sequence[str | int]) -> str:
    last = loc[-1] if loc else ""
    if err_type == "extra_forbidden":
        keys = ", ".join(_ALLOWED.get(_section(loc), _TOP_KEYS))
        return f"remove it or fix its spelling; allowed keys here: {keys}"
    if err_type == "missing":
        return f"add '{last}'"
    if err_type == "too_short" and last in ("utterances",):
        return "give the route at least one example utterance (20+ route real traffic well)"
    if err_type == "literal_error" and last == "version":
        return "set 'version: 1'"
    if err_type in ("greater_than_equal", "less_than_equal") and "weights" in loc:
        return "weights are >= 0, and at least one is positive"
    if err_type in ("greater_than_equal", "less_than_equal") and last in ("quality", "quality_floor"):
        return "qualities are estimates between 0 and 1"
    if loc and loc[0] == "feedback" and err_type in ("greater_than", "greater_than_equal", "less_than_equal"):
        return "the feedback settings and their ranges are in docs/feedback.md"
    if err_type in ("greater_than_equal", "less_than_equal"):
        return "thresholds are cosine similarities between 0 and 1; costs, weights and sizes must be >= 0"
    if _section(loc) == "policy" or "candidates" in loc:
        return "see the policy format in docs/policy.md"
    return "see the route-file format in the README"


def _read_one(path: Path) -> tuple[RouteFileModel, _Located]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read file: {e.strerror}", file=path) from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("file is not UTF-8 text", file=path, hint="save it as UTF-8") from e
    try:
        # compose once, check the node tree for duplicate keys (PyYAML silently keeps the last), then construct
        # from the same nodes; libyaml's parser when present (20x faster on large files)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_duplicate_keys(node, [], path)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"invalid YAML: {e.problem}", file=path, line=line, hint="check indentation and quoting"
        ) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=path) from e
    located = _Located(node)
    if data is None:
        raise ConfigError("file is empty", file=path, line=1, hint="add 'version: 1' and some routes, or delete it")
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {type(data).__name__}",
            file=path,
            line=1,
            hint="start the file with 'version: 1'",
        )
    try:
        model = RouteFileModel.model_validate(data)
    except ValidationError as e:
        # a misspelt key also shows up as a missing one: report the misspelling, it is the cause
        # A union ("str | CandidateSpec") reports one error per member: the deepest is the one the user meant.
        errors = sorted(e.errors(), key=lambda x: (x["type"] != "extra_forbidden", -len(_clean_loc(x["loc"]))))
        err = errors[0]
        loc = _clean_loc(err["loc"])
        # pydantic reports union members (e.g. "float") as loc parts; drop those that are not in the document.
        loc = _trim_loc(data, loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}'"
            close = difflib.get_close_matches(str(loc[-1]), _ALLOWED.get(_section(loc), _TOP_KEYS), n=1)
            if close:
                msg += f" (did you mean '{close[0]}'?)"
        raise ConfigError(
            msg,
            file=path,
            line=located.line(loc),
            field=_field_path(loc),
            hint=_hint_for(err["type"], loc),
        ) from None
    return model, located


_UNION_TAG = re.compile(r"^(?:str|int|float|bool|list\[.*\]|dict\[.*\]|[A-Z][A-Za-z]*|function-.*)$")


def _clean_loc(loc: Sequence[Any]) -> list[Any]:
    """pydantic's loc without the union-member and validator tags it inserts (not keys of the document)."""
    return [p for p in loc if not (isinstance(p, str) and _UNION_TAG.match(p))]


def _trim_loc(data: Any, loc: Sequence[Any]) -> list[str | int]:
    out: list[str | int] = []
    cur = data
    for p in loc:
        if (isinstance(cur, dict) and p in cur) or (isinstance(cur, list) and isinstance(p, int) and p < len(cur)):
            cur = cur[p]
            out.append(p)
        elif isinstance(cur, dict) and isinstance(p, str) and cur is not None:
            out.append(p)  # a missing or unknown key: still the field the user must look at
            break
        else:
            break
    return out


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise ConfigError("directory holds no *.yaml route files", file=p)
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise ConfigError("no such file or directory", file=p, hint="check the path")
    if not files:
        raise ConfigError("no route files given", hint="pass one or more files or directories")
    return files


def load_routes(paths: Iterable[str | Path]) -> RouteSet:
    """Read, validate and merge route files. Raises ConfigError naming file, line and field."""
    files = _expand(paths)
    fallback: tuple[str, Path, _Located] | None = None
    fallback_spec: Fallback | None = None
    defaults: Defaults | None = None
    defaults_at: Path | None = None
    policy: tuple[PolicySpec, Path, _Located] | None = None
    models: dict[str, tuple[ModelSpec, Path]] = {}
    pending: list[tuple[RouteSpec, int, Path, _Located]] = []
    sources: dict[str, str] = {}
    feedback: tuple[FeedbackSpec, Path, _Located] | None = None

    for path in files:
        sources[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        rf, loc = _read_one(path)
        if rf.fallback is not None:
            if fallback is not None:
                raise ConfigError(
                    f"fallback is already declared in {fallback[1]}",
                    file=path,
                    line=loc.line(["fallback"]),
                    field="fallback",
                    hint="declare the fallback model in exactly one file",
                )
            fallback = (rf.fallback.model, path, loc)
            fallback_spec = rf.fallback
        if rf.defaults is not None:
            if defaults is not None:
                raise ConfigError(
                    f"defaults are already declared in {defaults_at}",
                    file=path,
                    line=loc.line(["defaults"]),
                    field="defaults",
                    hint="declare defaults in exactly one file",
                )
            defaults, defaults_at = rf.defaults, path
        if rf.policy is not None:
            if policy is not None:
                raise ConfigError(
                    f"policy is already declared in {policy[1]}", file=path, line=loc.line(["policy"]),
                    field="policy", hint="declare the policy (tiers, rules) in exactly one file",
                )
            policy = (rf.policy, path, loc)
        if rf.feedback is not None:
            if feedback is not None:
                raise ConfigError(
                    f"feedback settings are already declared in {feedback[1]}", file=path,
                    line=loc.line(["feedback"]), field="feedback", hint="declare 'feedback' in exactly one file",
                )
            feedback = (rf.feedback, path, loc)
        for name, spec in rf.models.items():
            if not _NAME_RE.fullmatch(name):
                raise ConfigError(
                    f"invalid model name {name!r}", file=path, line=loc.line(["models", name]),
                    field=f"models.{name}", hint=_NAME_HINT,
                )
            if name in models and models[name][0] != spec:
                raise ConfigError(
                    f"model '{name}' is already declared differently in {models[name][1]}",
                    file=path, line=loc.line(["models", name]), field=f"models.{name}",
                    hint="declare each model once",
                )
            models[name] = (spec, path)
        for i, r in enumerate(rf.routes):
            pending.append((r, i, path, loc))

    if fallback is None:
        raise ConfigError(
            "no fallback model declared",
            file=files[0],
            field="fallback",
            hint="add 'fallback: {model: NAME}' to one route file",
        )
    if fallback[0] not in models:
        raise ConfigError(
            f"fallback model '{fallback[0]}' is not declared under 'models'",
            file=fallback[1],
            line=fallback[2].line(["fallback", "model"]),
            field="fallback.model",
            hint=f"declare it under 'models' or use one of: {', '.join(sorted(models)) or '(none declared)'}",
        )
    defaults = defaults or Defaults()

    routes: list[Route] = []
    seen: dict[str, Path] = {}
    utterance_owner: dict[str, tuple[str, Path]] = {}
    for n_route, (r, i, path, loc) in enumerate(pending):
        base: list[str | int] = ["routes", i]
        if n_route == MAX_ROUTES:
            raise ConfigError(
                f"more than {MAX_ROUTES} routes (the stated limit)", file=path, line=loc.line(base),
                field=f"routes[{i}]", hint="merge related routes; see 'Limits' in docs/operations.md",
            )
        n_examples = len(r.utterances) + len(r.negative_utterances)
        if n_examples > MAX_UTTERANCES_PER_ROUTE:
            raise ConfigError(
                f"route '{r.name}' has {n_examples} utterances and negative utterances; the limit is "
                f"{MAX_UTTERANCES_PER_ROUTE}", file=path, line=loc.line([*base, "utterances"]),
                field=f"routes[{i}].utterances", hint="keep the most representative examples",
            )
        if not _NAME_RE.fullmatch(r.name):
            raise ConfigError(
                f"invalid route name {r.name!r}", file=path, line=loc.line([*base, "name"]),
                field=f"routes[{i}].name", hint=_NAME_HINT,
            )
        if r.name in seen:
            raise ConfigError(
                f"duplicate route name '{r.name}' (also in {seen[r.name]})",
                file=path, line=loc.line([*base, "name"]), field=f"routes[{i}].name",
                hint="route names must be unique across all files; rename one",
            )
        seen[r.name] = path
        candidates = _candidates(r.model, r.candidates, models, path, loc, base, f"route '{r.name}'")
        clean: list[str] = []
        local: set[str] = set()
        for j, u in enumerate(r.utterances):
            text = " ".join(u.split())
            if not text:
                raise ConfigError(
                    "utterance is empty", file=path, line=loc.line([*base, "utterances", j]),
                    field=f"routes[{i}].utterances[{j}]", hint="remove it or write an example query",
                )
            _check_length(text, path, loc.line([*base, "utterances", j]), f"routes[{i}].utterances[{j}]")
            key = text.casefold()
            if key in local:
                continue  # a repeat within one route changes nothing; keep the first
            if key in utterance_owner and utterance_owner[key][0] != r.name:
                other = utterance_owner[key]
                raise ConfigError(
                    f"utterance '{text}' also belongs to route '{other[0]}' ({other[1]})",
                    file=path, line=loc.line([*base, "utterances", j]),
                    field=f"routes[{i}].utterances[{j}]",
                    hint="an example can teach only one route; remove it from one of them",
                )
            utterance_owner[key] = (r.name, path)
            local.add(key)
            clean.append(text)
        negs: list[str] = []
        for j, u in enumerate(r.negative_utterances):
            text = " ".join(u.split())
            if not text or text.casefold() in local:
                raise ConfigError(
                    "negative utterance is empty" if not text else f"'{text}' is both an utterance and a "
                    "negative utterance of this route",
                    file=path, line=loc.line([*base, "negative_utterances", j]),
                    field=f"routes[{i}].negative_utterances[{j}]",
                    hint="remove it from one of the two lists",
                )
            _check_length(text, path, loc.line([*base, "negative_utterances", j]),
                          f"routes[{i}].negative_utterances[{j}]")
            negs.append(text)
        routes.append(
            Route(
                name=r.name,
                model=candidates[0].model,
                threshold=r.threshold if r.threshold is not None else defaults.threshold,
                utterances=tuple(clean),
                negative_utterances=tuple(negs),
                description=r.description,
                tier=r.tier,
                metadata=dict(r.metadata),
                candidates=candidates,
            )
        )
    if not routes:
        raise ConfigError(
            "no routes declared", file=files[0], field="routes",
            hint="add at least one route with utterances",
        )
    fallback_examples: list[str] = []
    for j, u in enumerate(fallback_spec.utterances if fallback_spec is not None else []):
        text = " ".join(u.split())
        owner = utterance_owner.get(text.casefold())
        line, fld = fallback[2].line(["fallback", "utterances", j]), f"fallback.utterances[{j}]"
        if not text:
            raise ConfigError("fallback utterance is empty", file=fallback[1], line=line, field=fld,
                              hint="remove it or write an example query that no route should take")
        if owner is not None:
            raise ConfigError(f"'{text}' is also an utterance of route '{owner[0]}' ({owner[1]})",
                              file=fallback[1], line=line, field=fld,
                              hint="an example goes either to a route or to the fallback; remove it from one")
        _check_length(text, fallback[1], line, fld)
        if text not in fallback_examples:
            fallback_examples.append(text)
    _check_totals(routes, fallback_examples, defaults, files[0], defaults_at)
    assert fallback_spec is not None
    fb_candidates = _candidates(fallback_spec.model, fallback_spec.candidates, models, fallback[1], fallback[2],
                                ["fallback"], "the fallback", both_ok=True)
    if fb_candidates[0].model != fallback_spec.model:
        raise ConfigError(
            f"fallback model '{fallback_spec.model}' is not the first of its candidates", file=fallback[1],
            line=fallback[2].line(["fallback", "candidates"]), field="fallback.candidates",
            hint="list the fallback model first; the candidates after it are its alternatives",
        )
    model_specs = {k: v[0] for k, v in models.items()}
    warnings: list[str] = []
    policy_spec: PolicySpec | None = None
    if policy is not None:
        from .policy.compile import check_policy

        policy_spec = policy[0]
        warnings = check_policy(policy_spec, policy[1], policy[2].line, model_specs, routes, fb_candidates)
    if feedback is not None:
        check_feedback(feedback[0], list(models), [r.name for r in routes], file=feedback[1], line=feedback[2].line)
    return RouteSet(
        fallback_model=fallback[0],
        models=model_specs,
        defaults=defaults,
        routes=tuple(routes),
        sources=sources,
        fallback_utterances=tuple(fallback_examples),
        fallback_candidates=fb_candidates,
        policy=policy_spec,
        warnings=tuple(warnings),
        feedback=feedback[0] if feedback is not None else None,
    )


def _check_length(text: str, file: Path, line: int | None, field: str) -> None:
    if len(text) > MAX_UTTERANCE_CHARS:
        raise ConfigError(
            f"utterance is {len(text)} characters; the limit is {MAX_UTTERANCE_CHARS}", file=file, line=line,
            field=field, hint="the encoder reads only the first 256 tokens; keep examples to what a user types",
        )


def _check_totals(
    routes: Sequence[Route], fallback_examples: Sequence[str], defaults: Defaults, first: Path,
    defaults_at: Path | None,
) -> None:
    n = sum(len(r.utterances) + len(r.negative_utterances) for r in routes) + len(fallback_examples)
    if n > MAX_VECTORS:
        raise ConfigError(f"{n} utterances in all; the limit is {MAX_VECTORS}", file=first, field="routes",
                          hint="split the routes into several bundles, or keep fewer examples per route")
    if defaults.scorer == "logistic":
        has_none = bool(fallback_examples) or any(r.negative_utterances for r in routes)
        cells = head_cells(n, len(routes), has_none)
        if cells > MAX_HEAD_CELLS:
            raise ConfigError(
                f"the logistic head would be fitted over {n} utterances x {len(routes) + has_none} classes "
                f"= {cells:,} cells (limit {MAX_HEAD_CELLS:,}: about 250 MB and minutes of fitting)",
                file=defaults_at or first, field="defaults.scorer",
                hint="set 'defaults: {scorer: knn}', or use fewer routes or utterances",
            )


def head_cells(n_vectors: int, n_routes: int, has_none: bool) -> int:
    """The size of each (vectors x classes) matrix the logistic head's fit holds."""
    return n_vectors * (n_routes + (1 if has_none else 0))


def _candidates(
    model: str | None, listed: list[str | CandidateSpec] | None, models: dict[str, tuple[ModelSpec, Path]],
    path: Path, loc: _Located, base: list[str | int], what: str, *, both_ok: bool = False,
) -> tuple[Candidate, ...]:
    """A route's (or the fallback's) candidates, checked: declared models, no repeats, not empty."""
    where = _field_path(base)
    if model is not None and listed is not None and not both_ok:
        raise ConfigError(
            f"{what} gives both 'model' and 'candidates'", file=path, line=loc.line([*base, "candidates"]),
            field=f"{where}.candidates", hint="give one model, or an ordered list of candidates, not both",
        )
    if model is None and listed is None:
        raise ConfigError(
            f"{what} names no model", file=path, line=loc.line(base), field=f"{where}.model",
            hint="add 'model: NAME' or 'candidates: [NAME, ...]'",
        )
    if listed is not None and not listed:
        raise ConfigError(
            f"{what} has an empty candidate list", file=path, line=loc.line([*base, "candidates"]),
            field=f"{where}.candidates", hint="list at least one model, or use 'model: NAME'",
        )
    items: list[tuple[Candidate, list[str | int]]] = (
        [(Candidate(c) if isinstance(c, str) else Candidate(c.model, c.quality), [*base, "candidates", j])
         for j, c in enumerate(listed)]
        if listed is not None else [(Candidate(model or ""), [*base, "model"])]
    )
    seen: set[str] = set()
    for cand, at in items:
        if cand.model not in models:
            raise ConfigError(
                f"{what} names model '{cand.model}', which is not declared", file=path, line=loc.line(at),
                field=_field_path(at), hint=f"declare it under 'models' or use one of: {', '.join(sorted(models))}",
            )
        if cand.model in seen:
            raise ConfigError(
                f"{what} lists model '{cand.model}' twice", file=path, line=loc.line(at), field=_field_path(at),
                hint="list each candidate once",
            )
        seen.add(cand.model)
    return tuple(c for c, _ in items)
