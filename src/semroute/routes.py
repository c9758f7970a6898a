"""Route files: schema, loading and validation.

Validation is strict and happens once, at load. Every error names the file, the line and the field, and says how
to fix it. A directory is read as all of its ``*.yaml``/``*.yml`` files, merged in name order. Configuration never
names code to import: enumerations are literals.

    >>> rs = load_routes(["routes/"])
    >>> rs.route("billing").model
    'small-chat'

This module owns the schema and the steps of ``load_routes``; the pieces it calls live where their job does:
``_yaml_lines`` (YAML with line numbers), ``_route_limits`` (the stated limits), ``policy.candidates`` (routes'
and the fallback's models) and ``policy.compile`` (the policy section against the routes), and
``runtime.settings`` (the feedback section).
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator

from ._config_schema import NAME_HINT, NAME_PATTERN, NAME_RE, Strict, int_is_float
from ._route_limits import check_length, check_route_count, check_route_examples, check_totals
from ._yaml_lines import Located, field_path, read_yaml
from .errors import ConfigError
from .policy.candidates import candidates_of, fallback_candidates
from .policy.schema import PolicySpec
from .policy.types import Candidate
from .runtime.settings import FeedbackSpec, check_feedback

Aggregation = Literal["max", "mean_topk"]
ScorerKind = Literal["knn", "logistic"]


class ModelSpec(Strict):
    """A model routes may name, with what a decision needs to know about it: its price, and the attributes the
    policy reads (docs/policy.md)."""

    cost_per_1k_input: Annotated[float, Field(ge=0)] = 0.0
    cost_per_1k_output: Annotated[float, Field(ge=0)] = 0.0
    description: str | None = None
    deployment: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None  # e.g. on_prem, cloud
    tags: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(default_factory=list)
    context_window: Annotated[int, Field(ge=1)] | None = None  # tokens, input + output
    latency_ms: Annotated[float, Field(ge=0)] | None = None  # declared p50, a prior until latency is observed
    quality: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # default quality estimate in [0, 1]

    _f = field_validator("cost_per_1k_input", "cost_per_1k_output", "latency_ms", "quality", mode="before")(
        int_is_float
    )


class CandidateSpec(Strict):
    """One candidate model of a route, with the route's quality estimate for it."""

    model: str
    quality: Annotated[float, Field(ge=0.0, le=1.0)] | None = None

    _f = field_validator("quality", mode="before")(int_is_float)


class Fallback(Strict):
    """The model for queries no route is confident about, and optional examples of such queries."""

    model: str
    # optional: models the policy may choose among for fallback queries; 'model' is the first when omitted
    candidates: list[str | CandidateSpec] | None = None
    # out-of-scope examples: queries that must not be routed. They train the learned scorer's "none of these
    # routes" class, and a query whose nearest example is one of them falls back (reason negative_match).
    utterances: list[str] = Field(default_factory=list)


class Defaults(Strict):
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

    _f = field_validator("threshold", "head_weight", "head_l2", mode="before")(int_is_float)


class RouteSpec(Strict):
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

    _f = field_validator("threshold", mode="before")(int_is_float)


class RouteFileModel(Strict):
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
# Reading one file: YAML with line numbers, then the schema, with pydantic's errors turned into file:line ones


_TOP_KEYS = list(RouteFileModel.model_fields)
_ALLOWED = {
    "routes": list(RouteSpec.model_fields),
    "defaults": list(Defaults.model_fields),
    "fallback": list(Fallback.model_fields),
    "models": list(ModelSpec.model_fields),
    "policy": list(PolicySpec.model_fields),
    "feedback": list(FeedbackSpec.model_fields),
}


def _read_one(path: Path) -> tuple[RouteFileModel, Located, str]:
    """One file's sections, its line map, and the sha256 of its bytes (read once, so the hash is of what was
    checked)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read file: {e.strerror}", file=path) from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("file is not UTF-8 text", file=path, hint="save it as UTF-8") from e
    data, located = read_yaml(text, path)
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
        raise _schema_error(e, data, path, located) from None
    return model, located, hashlib.sha256(raw).hexdigest()


def _schema_error(e: ValidationError, data: Any, path: Path, located: Located) -> ConfigError:
    """The one error worth reporting among pydantic's, at its line, with a hint."""
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
    return ConfigError(
        msg,
        file=path,
        line=located.line(loc),
        field=field_path(loc),
        hint=_hint_for(err["type"], loc),
    )


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


# ---------------------------------------------------------------------------------------------------------------
# Loading: the steps, in the order their errors are reported


def load_routes(paths: Iterable[str | Path]) -> RouteSet:
    """Read, validate and merge route files. Raises ConfigError naming file, line and field."""
    files = _expand(paths)
    read = _read_all(files)
    fallback = _the_fallback(read, files[0])
    defaults = read.defaults.value if read.defaults is not None else Defaults()
    routes, owners = _build_routes(read.routes, read.models, defaults)
    if not routes:
        raise ConfigError(
            "no routes declared", file=files[0], field="routes",
            hint="add at least one route with utterances",
        )
    fallback_examples = _fallback_examples(fallback, owners)
    check_totals(routes, fallback_examples, defaults, files[0],
                 read.defaults.file if read.defaults is not None else None)
    fb_candidates = fallback_candidates(fallback.value, read.models, fallback.file, fallback.loc.line)
    models = {k: v[0] for k, v in read.models.items()}
    warnings = _check_policy(read.policy, models, routes, fb_candidates)
    if read.feedback is not None:
        check_feedback(read.feedback.value, list(models), [r.name for r in routes], file=read.feedback.file,
                       line=read.feedback.loc.line)
    return RouteSet(
        fallback_model=fallback.value.model,
        models=models,
        defaults=defaults,
        routes=tuple(routes),
        sources=read.sources,
        fallback_utterances=tuple(fallback_examples),
        fallback_candidates=fb_candidates,
        policy=read.policy.value if read.policy is not None else None,
        warnings=tuple(warnings),
        feedback=read.feedback.value if read.feedback is not None else None,
    )


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


T = TypeVar("T")


@dataclass(frozen=True)
class _At(Generic[T]):
    """A section as declared, with the file it came from and that file's line map."""

    value: T
    file: Path
    loc: Located


@dataclass
class _Read:
    """Every file read and merged, before any check that needs the whole set."""

    sources: dict[str, str] = field(default_factory=dict)  # file path -> sha256 of its bytes
    fallback: _At[Fallback] | None = None
    defaults: _At[Defaults] | None = None
    policy: _At[PolicySpec] | None = None
    feedback: _At[FeedbackSpec] | None = None
    models: dict[str, tuple[ModelSpec, Path]] = field(default_factory=dict)
    routes: list[tuple[RouteSpec, _Spot]] = field(default_factory=list)


def _read_all(files: Sequence[Path]) -> _Read:
    read = _Read()
    for path in files:
        rf, loc, digest = _read_one(path)
        read.sources[str(path)] = digest
        if rf.fallback is not None:
            read.fallback = _once("fallback", read.fallback, rf.fallback, path, loc)
        if rf.defaults is not None:
            read.defaults = _once("defaults", read.defaults, rf.defaults, path, loc)
        if rf.policy is not None:
            read.policy = _once("policy", read.policy, rf.policy, path, loc)
        if rf.feedback is not None:
            read.feedback = _once("feedback", read.feedback, rf.feedback, path, loc)
        _merge_models(read.models, rf.models, path, loc)
        read.routes.extend((r, _Spot(path, loc, i)) for i, r in enumerate(rf.routes))
    return read


# section -> (the subject of "... already declared in FILE", the hint)
_ONE_FILE_ONLY = {
    "fallback": ("fallback is", "declare the fallback model in exactly one file"),
    "defaults": ("defaults are", "declare defaults in exactly one file"),
    "policy": ("policy is", "declare the policy (tiers, rules) in exactly one file"),
    "feedback": ("feedback settings are", "declare 'feedback' in exactly one file"),
}


def _once(section: str, earlier: _At[T] | None, value: T, path: Path, loc: Located) -> _At[T]:
    """A section that may be declared in one file only."""
    if earlier is not None:
        subject, hint = _ONE_FILE_ONLY[section]
        raise ConfigError(f"{subject} already declared in {earlier.file}", file=path, line=loc.line([section]),
                          field=section, hint=hint)
    return _At(value, path, loc)


def _merge_models(
    models: dict[str, tuple[ModelSpec, Path]], declared: Mapping[str, ModelSpec], path: Path, loc: Located
) -> None:
    """Models may be declared in several files, each the same way wherever it is repeated."""
    for name, spec in declared.items():
        if not NAME_RE.fullmatch(name):
            raise ConfigError(
                f"invalid model name {name!r}", file=path, line=loc.line(["models", name]),
                field=f"models.{name}", hint=NAME_HINT,
            )
        if name in models and models[name][0] != spec:
            raise ConfigError(
                f"model '{name}' is already declared differently in {models[name][1]}",
                file=path, line=loc.line(["models", name]), field=f"models.{name}",
                hint="declare each model once",
            )
        models[name] = (spec, path)


def _the_fallback(read: _Read, first: Path) -> _At[Fallback]:
    if read.fallback is None:
        raise ConfigError(
            "no fallback model declared",
            file=first,
            field="fallback",
            hint="add 'fallback: {model: NAME}' to one route file",
        )
    fb = read.fallback
    if fb.value.model not in read.models:
        raise ConfigError(
            f"fallback model '{fb.value.model}' is not declared under 'models'",
            file=fb.file,
            line=fb.loc.line(["fallback", "model"]),
            field="fallback.model",
            hint=f"declare it under 'models' or use one of: {', '.join(sorted(read.models)) or '(none declared)'}",
        )
    return fb


@dataclass(frozen=True)
class _Spot:
    """Where one route was written: its file, the file's line map, and its index in that file's routes."""

    file: Path
    loc: Located
    index: int

    @property
    def base(self) -> list[str | int]:
        return ["routes", self.index]

    def line(self, *rest: str | int) -> int | None:
        return self.loc.line([*self.base, *rest])

    def field(self, *rest: str | int) -> str:
        return field_path([*self.base, *rest])


# utterance text, case-folded -> (the route it teaches, the file that says so)
_Owners = dict[str, tuple[str, Path]]


def _fold(text: str) -> str:
    """Whitespace folded: 'refund   please' and 'refund please' are one example."""
    return " ".join(text.split())


def _build_routes(
    pending: Sequence[tuple[RouteSpec, _Spot]], models: Mapping[str, object], defaults: Defaults
) -> tuple[list[Route], _Owners]:
    """Every route checked and normalised, in file order; and which route each utterance belongs to."""
    routes: list[Route] = []
    seen: dict[str, Path] = {}
    owners: _Owners = {}
    for n_route, (r, at) in enumerate(pending):
        check_route_count(n_route, at.file, at.line(), at.field())
        check_route_examples(r.name, len(r.utterances) + len(r.negative_utterances), at.file,
                             at.line("utterances"), at.field("utterances"))
        _check_route_name(r.name, at, seen)
        candidates = candidates_of(r.model, r.candidates, models, at.file, at.loc.line, at.base,
                                   f"route '{r.name}'")
        utterances = _utterances(r, at, owners)
        routes.append(
            Route(
                name=r.name,
                model=candidates[0].model,
                threshold=r.threshold if r.threshold is not None else defaults.threshold,
                utterances=utterances,
                negative_utterances=_negative_utterances(r, at, {u.casefold() for u in utterances}),
                description=r.description,
                tier=r.tier,
                metadata=dict(r.metadata),
                candidates=candidates,
            )
        )
    return routes, owners


def _check_route_name(name: str, at: _Spot, seen: dict[str, Path]) -> None:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid route name {name!r}", file=at.file, line=at.line("name"), field=at.field("name"),
            hint=NAME_HINT,
        )
    if name in seen:
        raise ConfigError(
            f"duplicate route name '{name}' (also in {seen[name]})",
            file=at.file, line=at.line("name"), field=at.field("name"),
            hint="route names must be unique across all files; rename one",
        )
    seen[name] = at.file


def _utterances(r: RouteSpec, at: _Spot, owners: _Owners) -> tuple[str, ...]:
    """A route's examples, folded; a repeat within the route is dropped, one claimed by another route refused."""
    clean: list[str] = []
    local: set[str] = set()
    for j, u in enumerate(r.utterances):
        text = _fold(u)
        if not text:
            raise ConfigError(
                "utterance is empty", file=at.file, line=at.line("utterances", j),
                field=at.field("utterances", j), hint="remove it or write an example query",
            )
        check_length(text, at.file, at.line("utterances", j), at.field("utterances", j))
        key = text.casefold()
        if key in local:
            continue  # a repeat within one route changes nothing; keep the first
        if key in owners and owners[key][0] != r.name:
            other = owners[key]
            raise ConfigError(
                f"utterance '{text}' also belongs to route '{other[0]}' ({other[1]})",
                file=at.file, line=at.line("utterances", j), field=at.field("utterances", j),
                hint="an example can teach only one route; remove it from one of them",
            )
        owners[key] = (r.name, at.file)
        local.add(key)
        clean.append(text)
    return tuple(clean)


def _negative_utterances(r: RouteSpec, at: _Spot, positives: set[str]) -> tuple[str, ...]:
    """A route's negative examples, folded; none may also be one of its (case-folded) utterances."""
    negs: list[str] = []
    for j, u in enumerate(r.negative_utterances):
        text = _fold(u)
        if not text or text.casefold() in positives:
            raise ConfigError(
                "negative utterance is empty" if not text else f"'{text}' is both an utterance and a "
                "negative utterance of this route",
                file=at.file, line=at.line("negative_utterances", j), field=at.field("negative_utterances", j),
                hint="remove it from one of the two lists",
            )
        check_length(text, at.file, at.line("negative_utterances", j), at.field("negative_utterances", j))
        negs.append(text)
    return tuple(negs)


def _fallback_examples(fb: _At[Fallback], owners: _Owners) -> list[str]:
    """The fallback's out-of-scope examples, folded and without repeats; none may be a route's utterance."""
    examples: list[str] = []
    for j, u in enumerate(fb.value.utterances):
        text = _fold(u)
        owner = owners.get(text.casefold())
        line, fld = fb.loc.line(["fallback", "utterances", j]), f"fallback.utterances[{j}]"
        if not text:
            raise ConfigError("fallback utterance is empty", file=fb.file, line=line, field=fld,
                              hint="remove it or write an example query that no route should take")
        if owner is not None:
            raise ConfigError(f"'{text}' is also an utterance of route '{owner[0]}' ({owner[1]})",
                              file=fb.file, line=line, field=fld,
                              hint="an example goes either to a route or to the fallback; remove it from one")
        check_length(text, fb.file, line, fld)
        if text not in examples:
            examples.append(text)
    return examples


def _check_policy(
    policy: _At[PolicySpec] | None, models: Mapping[str, ModelSpec], routes: Sequence[Route],
    fallback: Sequence[Candidate],
) -> list[str]:
    """The policy section against the routes and models; its warnings (e.g. a shadowed rule)."""
    if policy is None:
        return []
    # imported here: the checks load the PII detector's modules (re2, phonenumbers, stdnum), which a route set
    # without a policy never needs
    from .policy.compile import check_policy

    return check_policy(policy.value, policy.file, policy.loc.line, models, routes, fallback)
