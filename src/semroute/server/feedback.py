"""The server's side of the runtime feedback loop: request validation for ReportOutcome and the new Route fields,
the decision cache on the Route path, Prometheus for breakers, escalations and outcomes, Info's runtime fields.

Unknown request_id in ReportOutcome: accepted and counted (``semroute_outcomes_total{request="unknown"}``), because
a Route answered before a restart, by a replica on in-process state, or past the memory of Route calls (one hour) is
still a real call to a real model, and the breaker should hear about it. The response says ``known_request``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable

from .._proto.semroute.v1 import router_pb2 as pb
from ..errors import ConfigError, RequestError
from ..policy.types import RequestContext, RuntimeView
from ..router import Router
from ..runtime.loop import Escalate, FeedbackLoop, Observer, Outcome
from ..runtime.settings import FeedbackSpec
from ..runtime.store import GAUGE_VALUE, BreakerState, StateStore
from ..scoring import Reason
from .convert import REASON_TO_PB
from .metrics import NO_TENANT, OTHER_TENANTS, Metrics

_LABEL = re.compile(r"^[A-Za-z0-9_.:\-]{0,64}$")
_MAX_ID = 128
_MAX_TOKENS = 10**9
_MAX_LATENCY_MS = 86_400_000.0
_OUTCOME = {pb.OUTCOME_OK: "ok", pb.OUTCOME_ERROR: "error", pb.OUTCOME_TIMEOUT: "timeout",
            pb.OUTCOME_RATE_LIMITED: "rate_limited"}
_PB_TO_REASON = {v: k for k, v in REASON_TO_PB.items()}


def check_id(field: str, value: str, *, required: bool = False) -> None:
    if required and not value:
        raise RequestError(field, "is empty; send the request_id the Route call carried in metadata.request_id")
    if len(value) > _MAX_ID or not value.isprintable():
        raise RequestError(field, f"must be at most {_MAX_ID} printable characters (got {len(value)})")


class PromObserver(Observer):
    def __init__(self, metrics: Metrics, max_tenants: int = 100) -> None:
        self._m = metrics
        # tenant is caller-chosen: label the first max_tenants by name, the rest together (as the tenant counter)
        self._max_tenants = max_tenants
        self._tenants: set[str] = set()

    def _tenant(self, tenant: str) -> str:
        if not tenant:
            return NO_TENANT
        if tenant not in self._tenants and len(self._tenants) < self._max_tenants:
            self._tenants.add(tenant)
        return tenant if tenant in self._tenants else OTHER_TENANTS

    def breaker(self, key: str, state: BreakerState) -> None:
        self._m.breaker_state.labels(key).set(GAUGE_VALUE[state])

    def escalation(self, route: str, tenant: str, outcome: str) -> None:
        self._m.escalations.labels(route, self._tenant(tenant), outcome).inc()

    def outcome(self, model: str, outcome: str, known: bool) -> None:
        self._m.outcomes.labels(model, outcome, "known" if known else "unknown").inc()


class PolicyRuntime:
    """The policy's RuntimeSource: models whose breakers are open are excluded (with the reason in the policy's
    trace), observed latencies replace declared ones in its blend objective. Reads the loop's snapshot, which the
    Route path refreshes before each decision."""

    def __init__(self, loop: FeedbackLoop) -> None:
        self._loop = loop
        loop._latency_wanted = True

    def view(self, ctx: RequestContext) -> RuntimeView:
        excluded, latency = self._loop.view()
        return RuntimeView(excluded=excluded, latency_ms=latency)


def _allowed(msg: pb.Decision) -> set[str] | None:
    """The models the policy permits for this decision: its eligible candidates; only its choice when it chose
    without candidates (a rule forcing a model, the no-eligible fallback). None: no policy ran."""
    if not msg.policy_version:
        return None
    eligible = {c.model for c in msg.candidates if c.eligible}
    return eligible | {msg.model} if eligible else {msg.model}


class ServingFeedback:
    """One per server. ``store_url`` is what Info reports ('memory' or the redis:// URL)."""

    def __init__(self, store: StateStore, metrics: Metrics, store_url: str, max_tenants: int = 100) -> None:
        self.loop = FeedbackLoop(store, observer=PromObserver(metrics, max_tenants))
        self._runtime = PolicyRuntime(self.loop)
        self._metrics = metrics
        self.store_url = store_url
        self._tasks: set[asyncio.Task[None]] = set()  # background writes, referenced until done
        metrics.state_store_up.set(1)

    def sync(self, router: Router) -> FeedbackLoop:
        """Follow the bundle now serving: a new version brings its settings and empties the decision cache."""
        if router.runtime is not self._runtime:  # a new Router (start, reload): plug the runtime state in
            router.runtime = self._runtime
        if router.version != self.loop.version:
            b = router.bundle
            spec = FeedbackSpec.model_validate(b.routes["feedback"]) if b.routes.get("feedback") else FeedbackSpec()
            self.loop.configure(router.version, spec, b.models, b.routes["fallback_model"])
        return self.loop

    async def route(
        self, router: Router, request: pb.RouteRequest, top: tuple[int, int], received_ns: int,
        compute: Callable[[], Awaitable[pb.Decision]], now_ns: Callable[[], int],
    ) -> pb.Decision:
        loop = self.sync(router)
        md = request.metadata
        escalate = None
        if request.HasField("escalate"):
            e = request.escalate
            if e.from_model not in loop._models:
                raise RequestError("escalate.from_model", f"'{e.from_model}' is not a model of bundle "
                                   f"{loop.version}; known: {', '.join(sorted(loop._models))}")
            if not (0.0 <= e.confidence <= 1.0):  # also refuses nan
                raise RequestError("escalate.confidence", f"is {e.confidence}; must be in [0, 1]")
            escalate = Escalate(e.from_model, e.confidence)
        await loop.refresh()  # the breaker and latency snapshot the policy's RuntimeView reads
        cache = loop.cache
        key = ""
        msg: pb.Decision | None = None
        if cache is not None:
            from ..runtime.cache import cache_key

            # the policy reads the raw text (case-sensitive rules, lengths): with a policy the text is the key as sent
            key = cache_key(
                request.text, version=router.version, tenant=md.tenant, tier=md.user_tier,
                options=(*top, *sorted(md.labels.items()), request.options.SerializeToString(deterministic=True)),
                exact=router.bundle.policy is not None,
            )
            raw = await cache.get(key)
            self._metrics.cache_lookups.inc()
            if raw is not None:
                msg = pb.Decision.FromString(raw)
                if msg.model in loop.view()[0]:
                    msg = None  # its model's breaker opened since: decide again, with the exclusion
                else:
                    self._metrics.cache_hits.inc()
                    msg.cached = True
            self._metrics.cache_hit_ratio.set(cache.ratio)
        if msg is None:
            msg = await compute()
            # a decision made while a breaker excluded models is not reused once they are back: not cached
            if cache is not None and not loop.view()[0]:
                base = pb.Decision()
                base.CopyFrom(msg)
                base.ClearField("timings")  # a later hit encodes nothing: it reports its own (zero) stage times
                base.ClearField("feedback_trace")
                # written after the answer is on its way: a shared store's round trip is not the caller's wait
                task = asyncio.get_running_loop().create_task(cache.put(key, base.SerializeToString()))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        c = await loop.choose(
            route=msg.route if msg.HasField("route") else None, model=msg.model, reason=_PB_TO_REASON[msg.reason],
            tenant=md.tenant, conversation=md.conversation_id, escalate=escalate, request_id=md.request_id,
            allowed=_allowed(msg),
        )
        _apply(msg, c.model, c.reason, c.endpoint, c.trace)
        msg.timings.total_ns = now_ns() - received_ns
        return msg

    async def batch(self, router: Router, queries: list[pb.Query], decisions: list[pb.Decision]) -> None:
        loop = self.sync(router)
        for q, msg in zip(queries, decisions, strict=True):
            md = q.metadata
            c = await loop.choose(
                route=msg.route if msg.HasField("route") else None, model=msg.model,
                reason=_PB_TO_REASON[msg.reason], tenant=md.tenant, conversation=md.conversation_id,
                request_id=md.request_id, allowed=_allowed(msg),
            )
            _apply(msg, c.model, c.reason, c.endpoint, c.trace)

    async def refresh(self, router: Router) -> None:
        """Before a RouteBatch's decisions: the snapshot the policy's RuntimeView reads."""
        await self.sync(router).refresh()

    async def report(self, router: Router, r: pb.ReportOutcomeRequest) -> pb.ReportOutcomeResponse:
        loop = self.sync(router)
        check_id("request_id", r.request_id, required=True)
        if r.outcome not in _OUTCOME:
            raise RequestError("outcome", "must be one of OUTCOME_OK, OUTCOME_ERROR, OUTCOME_TIMEOUT, "
                                          "OUTCOME_RATE_LIMITED")
        if not (0.0 <= r.latency_ms <= _MAX_LATENCY_MS):
            raise RequestError("latency_ms", f"is {r.latency_ms}; must be between 0 and {_MAX_LATENCY_MS:.0f}")
        for name in ("tokens_in", "tokens_out"):
            v = getattr(r, name)
            if not (0 <= v <= _MAX_TOKENS):
                raise RequestError(name, f"is {v}; must be between 0 and {_MAX_TOKENS}")
        if r.HasField("confidence") and not (0.0 <= r.confidence <= 1.0):
            raise RequestError("confidence", f"is {r.confidence}; must be in [0, 1]")
        for name in ("feedback", "tenant"):
            if not _LABEL.match(getattr(r, name)):
                raise RequestError(name, "must be 0-64 characters of letters, digits, '_', '.', ':', '-'")
        res = await loop.report(Outcome(
            request_id=r.request_id, model=r.model, endpoint=r.endpoint, outcome=_OUTCOME[r.outcome],
            latency_ms=r.latency_ms if math.isfinite(r.latency_ms) else 0.0, tokens_in=r.tokens_in,
            tokens_out=r.tokens_out, tenant=r.tenant,
        ))
        return pb.ReportOutcomeResponse(duplicate=res.duplicate, known_request=res.known_request,
                                        breaker=res.breaker.value)

    async def fill_info(self, router: Router, resp: pb.InfoResponse) -> None:
        loop = self.sync(router)
        for key, b in sorted((await loop.breakers()).items()):
            if b.state != BreakerState.CLOSED:
                resp.breakers.append(pb.BreakerInfo(key=key, state=b.state.value, opened_at=b.opened_at))
        resp.state_store = self.store_url
        resp.state_store_up = bool(getattr(loop.store, "up", True))
        resp.latency_ms.update(await loop.store.latencies())

    def set_store_up(self, up: bool) -> None:
        self._metrics.state_store_up.set(1 if up else 0)


def _apply(msg: pb.Decision, model: str, reason: Reason, endpoint: str | None, trace: tuple[str, ...]) -> None:
    msg.model = model
    msg.reason = REASON_TO_PB[reason]
    if endpoint is not None:
        msg.endpoint = endpoint
    if trace:
        msg.feedback_trace.extend(trace)


def make_store(url: str, metrics: Metrics, max_tenants: int = 100) -> ServingFeedback:
    """'memory' -> in process; 'redis://HOST:PORT[/DB]' -> shared (ConfigError naming --state otherwise)."""
    if url == "memory":
        from ..runtime.local import InProcessStore

        return ServingFeedback(InProcessStore(), metrics, url, max_tenants)
    try:
        from ..runtime.redis_store import RedisStore, parse_url
    except ImportError as e:  # the optional extra is not installed
        raise ConfigError(f"'{url}' needs the redis package", field="--state",
                          hint="pip install 'semroute[redis]'") from e

    parse_url(url)
    holder: list[ServingFeedback] = []
    store = RedisStore(url, on_change=lambda up: holder[0].set_store_up(up) if holder else None)
    holder.append(ServingFeedback(store, metrics, url, max_tenants))
    return holder[0]
