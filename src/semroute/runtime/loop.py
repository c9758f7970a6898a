"""The feedback loop on the serving path: after the meaning (and, later, the policy) chose a model, apply what the
runtime knows (escalation, sticky conversations, spend, circuit breakers, endpoints) and say so in the trace; and
take callers' outcome reports.

Order, each step seeing the previous one's choice:
1. escalation (when asked): the next model above ``from_model`` on the ladder if the caller's confidence is under
   the route's threshold and the tenant's escalation budget (and spend) allow; else ``from_model`` is kept;
2. sticky conversation: a conversation keeps its model unless this turn's choice is stronger (higher on the ladder);
3. circuit breakers: a model (every endpoint of it) that is open is skipped for the next model up the ladder, then
   the fallback model; a half-open one is used only while it has probes left; among a model's endpoints the one
   with the lowest observed latency (EWMA) wins, endpoints not measured yet first, in declared order.
The ladder (weakest first) is ``feedback.escalation.ladder``, or every declared model by price.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RequestError
from ..scoring import Decision, Reason
from .cache import DecisionCache
from .settings import FeedbackSpec
from .store import Breaker, BreakerState, Clock, StateStore, Transition, wall_clock

if TYPE_CHECKING:  # routes.py imports runtime.settings: no import cycle at run time
    from ..routes import ModelSpec

log = logging.getLogger("semroute.runtime")

OUTCOMES = ("ok", "error", "timeout", "rate_limited")
_FAILED = {"error", "timeout", "rate_limited"}  # a rate-limited model is not answering: the breaker counts it
_LATENCY_OUTCOMES = {"ok", "timeout"}  # fast errors would drag the average down and make a failing model look quick
REPORT_TTL_S = 86_400.0  # a request_id is reported once per day
REQUEST_TTL_S = 3_600.0  # Route calls are remembered (for ReportOutcome) this long


class Observer:
    """What the loop tells the outside world (metrics); the server overrides these. Default: nothing."""

    def breaker(self, key: str, state: BreakerState) -> None: ...

    def escalation(self, route: str, tenant: str, outcome: str) -> None: ...

    def outcome(self, model: str, outcome: str, known: bool) -> None: ...


@dataclass(frozen=True)
class Escalate:
    from_model: str
    confidence: float


@dataclass(frozen=True)
class Choice:
    model: str
    reason: Reason
    endpoint: str | None
    trace: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    request_id: str
    model: str
    endpoint: str
    outcome: str
    latency_ms: float
    tokens_in: int
    tokens_out: int
    tenant: str = ""


@dataclass(frozen=True)
class ReportResult:
    duplicate: bool
    known_request: bool
    breaker: BreakerState


class FeedbackLoop:
    def __init__(
        self, store: StateStore, *, clock: Clock = wall_clock, observer: Observer | None = None,
        snapshot_s: float | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._observer = observer or Observer()
        # How stale a shared store's breaker snapshot may be on the Route path (one round trip per interval, not
        # per request); this replica's own transitions update it at once. In process: always fresh, it is free.
        self._snapshot_s = (0.0 if store.name == "memory" else 0.1) if snapshot_s is None else snapshot_s
        self._snap: dict[str, Breaker] = {}
        self._snap_at = -1e18
        self._seen: dict[str, BreakerState] = {}  # last state logged per breaker key
        self.version = ""
        self.spec = FeedbackSpec()
        self._models: dict[str, ModelSpec] = {}
        self._fallback = ""
        self._ladder: list[str] = []
        self.cache: DecisionCache | None = None
        self._latency: dict[str, float] = {}  # observed EWMA per key, as of the last snapshot
        self._latency_wanted = False  # set by a chooser that reads view() (the policy's latency term)
        self._tasks: set[asyncio.Task[None]] = set()  # background writes, referenced until done

    def configure(self, version: str, spec: FeedbackSpec, models: dict[str, ModelSpec], fallback: str) -> None:
        """Take a (re)loaded bundle's settings; empties the local decision cache."""
        self.version, self.spec, self._models, self._fallback = version, spec, models, fallback
        self._ladder = list(spec.escalation.ladder or sorted(
            models, key=lambda m: (models[m].cost_per_1k_input + models[m].cost_per_1k_output, m)))
        if self.cache is not None:
            self.cache.clear()
        if spec.cache.enabled:
            shared = self.store if self.store.name != "memory" else None
            self.cache = DecisionCache(size=spec.cache.size, ttl_s=spec.cache.ttl_s, shared=shared)
        else:
            self.cache = None

    # reads ----------------------------------------------------------------------------------------------------
    def rank(self, model: str) -> int:
        return self._ladder.index(model) if model in self._ladder else -1

    def endpoints(self, model: str) -> list[str]:
        return self.spec.endpoints.get(model, [])

    async def breakers(self) -> dict[str, Breaker]:
        now = self._clock()
        if now - self._snap_at >= self._snapshot_s:
            self._snap = await self.store.breakers(now, self.spec.breaker)
            self._snap_at = now
            if self.spec.endpoints or self._latency_wanted:
                self._latency = await self.store.latencies()
            for key, b in self._snap.items():
                self._note_state(key, b.state)
            for key in [k for k, s in self._seen.items() if s != BreakerState.CLOSED and k not in self._snap]:
                self._note_state(key, BreakerState.CLOSED)
        return self._snap

    def view(self) -> tuple[dict[str, str], dict[str, float]]:
        """A synchronous view for a candidate chooser (the policy layer's RuntimeView): model -> why it is excluded
        now (every endpoint's breaker open, as of the last snapshot), and model -> observed latency in ms (the
        lowest of its endpoints'). Half-open models are not excluded here: their probes are taken in ``choose``."""
        if not self._snap and not self._latency:  # the usual case: nothing known, nothing excluded
            return {}, {}  # (each Route asks; walking every model's keys for this measured ~25 us)
        excluded: dict[str, str] = {}
        for m in self._models:
            keys = [f"{m}@{e}" for e in self.endpoints(m)] or [m]
            states = [self._snap[k].state if k in self._snap else BreakerState.CLOSED for k in keys]
            if all(s == BreakerState.OPEN for s in states):
                excluded[m] = "circuit breaker open" + (" on every endpoint" if len(keys) > 1 else "")
        latency: dict[str, float] = {}
        for key, ms in self._latency.items():
            m = key.split("@", 1)[0]
            latency[m] = min(ms, latency.get(m, ms))
        return excluded, latency

    async def refresh(self) -> None:
        """Bring the breaker and latency snapshots up to date (at most once per snapshot interval)."""
        await self.breakers()

    def _note_state(self, key: str, state: BreakerState) -> None:
        old = self._seen.get(key, BreakerState.CLOSED)
        self._seen[key] = state
        self._observer.breaker(key, state)
        if old != state:
            log.warning("circuit breaker %s: %s -> %s", key, old.value, state.value,
                        extra={"event": "breaker", "key": key, "from": old.value, "to": state.value})

    # the Route path --------------------------------------------------------------------------------------------
    async def choose(
        self, *, route: str | None, model: str, reason: Reason, tenant: str, conversation: str = "",
        escalate: Escalate | None = None, request_id: str = "", allowed: Collection[str] | None = None,
    ) -> Choice:
        """What the runtime makes of the model the meaning chose (see the module docstring for the order).
        ``allowed``: the models a candidate chooser (the policy) permits for this request; escalation, stickiness
        and routing around breakers never leave it. None: every declared model."""
        trace: list[str] = []
        now = self._clock()
        ok = (lambda m: True) if allowed is None else allowed.__contains__
        if escalate is not None:
            model, reason = await self._escalate(route, escalate, reason, tenant, now, trace, ok)
        if conversation:
            model, reason = await self._sticky(conversation, model, reason, trace, ok)
        if allowed is not None:
            model, reason = await self._hold_cost(model, reason, tenant, now, trace, ok)
        model, endpoint, reason = await self._available(model, reason, now, trace, ok, allowed is not None)
        if conversation:
            await self._write(self.store.conversation_set(conversation, model, self.spec.conversations.ttl_s))
        if request_id:
            record = json.dumps({"model": model, "tenant": tenant, "route": route})
            await self._write(self.store.remember_request(request_id, record, REQUEST_TTL_S))
        return Choice(model, reason, endpoint, tuple(trace))

    async def _write(self, op: Coroutine[Any, Any, None]) -> None:
        """A write the answer does not depend on. Shared store: after the answer is sent (its round trip is not the
        caller's wait). In process it costs nothing: done at once, so the next request surely sees it."""
        if self.store.name == "memory":
            await op
            return
        task = asyncio.get_running_loop().create_task(op)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def apply(
        self, d: Decision, *, tenant: str, conversation: str = "", escalate: Escalate | None = None,
        request_id: str = "",
    ) -> Decision:
        c = await self.choose(route=d.route, model=d.model, reason=d.reason, tenant=tenant,
                              conversation=conversation, escalate=escalate, request_id=request_id)
        if c.model == d.model and c.endpoint is None and not c.trace:
            return d
        return dataclasses.replace(d, model=c.model, reason=c.reason, endpoint=c.endpoint,
                                   feedback_trace=d.feedback_trace + c.trace)

    async def _escalate(
        self, route_name: str | None, e: Escalate, reason: Reason, tenant: str, now: float, trace: list[str],
        ok: Callable[[str], bool],
    ) -> tuple[str, Reason]:
        route = route_name or "fallback"
        threshold = self.spec.escalation.routes.get(route_name or "", self.spec.escalation.threshold)
        if e.confidence >= threshold:
            trace.append(f"escalation: confidence {e.confidence:.3f} >= threshold {threshold:.3f}; "
                         f"{e.from_model} kept")
            self._observer.escalation(route, tenant, "not_needed")
            return e.from_model, reason
        r = self.rank(e.from_model)
        up = [m for m in self._ladder[r + 1:] if ok(m)] if r >= 0 else []
        if not up:
            where = "is the top of the ladder" if r >= 0 else "is not on the escalation ladder"
            trace.append(f"escalation: {e.from_model} {where} (of the models allowed here); kept")
            self._observer.escalation(route, tenant, "top")
            return e.from_model, reason
        nxt = up[0]
        budget = self.spec.budgets.for_tenant(tenant)
        if budget.cost_per_day is not None:
            spent = await self.store.cost_spent(tenant, now)
            if spent >= budget.cost_per_day:
                trace.append(f"escalation: tenant '{tenant}' spent {spent:.4f} of {budget.cost_per_day:.4f} "
                             f"today; {e.from_model} kept")
                self._observer.escalation(route, tenant, "cost_budget_exhausted")
                return e.from_model, Reason.COST_BUDGET_EXHAUSTED
        if not await self.store.take_escalation(
            tenant, budget.escalations_per_minute, budget.escalations_per_day, now
        ):
            trace.append(f"escalation: tenant '{tenant}' escalation budget spent "
                         f"({budget.escalations_per_minute}/min, {budget.escalations_per_day}/day); "
                         f"{e.from_model} kept")
            self._observer.escalation(route, tenant, "budget_exhausted")
            return e.from_model, Reason.ESCALATION_BUDGET_EXHAUSTED
        trace.append(f"escalation: confidence {e.confidence:.3f} < threshold {threshold:.3f}; "
                     f"{e.from_model} -> {nxt}")
        self._observer.escalation(route, tenant, "escalated")
        return nxt, Reason.ESCALATED

    def price(self, model: str) -> float:
        m = self._models[model]
        return m.cost_per_1k_input + m.cost_per_1k_output

    async def _hold_cost(
        self, model: str, reason: Reason, tenant: str, now: float, trace: list[str], ok: Callable[[str], bool]
    ) -> tuple[str, Reason]:
        """Past the tenant's daily spend: the cheapest allowed model, when one is cheaper than the choice. Only
        with an ``allowed`` set (the policy's eligible candidates): without one, nothing else is known to be
        eligible for this route, so the choice is kept."""
        budget = self.spec.budgets.for_tenant(tenant)
        if budget.cost_per_day is None or model not in self._models:
            return model, reason
        spent = await self.store.cost_spent(tenant, now)
        if spent < budget.cost_per_day:
            return model, reason
        cheaper = [m for m in self._models if ok(m) and self.price(m) < self.price(model)]
        if not cheaper:
            trace.append(f"cost budget: tenant '{tenant}' spent {spent:.4f} of {budget.cost_per_day:.4f} today; "
                         f"no cheaper eligible model than {model}")
            return model, reason
        held = min(cheaper, key=lambda m: (self.price(m), m))
        trace.append(f"cost budget: tenant '{tenant}' spent {spent:.4f} of {budget.cost_per_day:.4f} today; "
                     f"{model} -> {held} (cheapest eligible)")
        return held, Reason.COST_BUDGET_EXHAUSTED

    async def _sticky(
        self, conversation: str, model: str, reason: Reason, trace: list[str], ok: Callable[[str], bool]
    ) -> tuple[str, Reason]:
        prev = await self.store.conversation_get(conversation)
        if prev is None or prev == model or prev not in self._models:
            return model, reason
        if not ok(prev):
            trace.append(f"conversation: {prev} is not allowed for this request; {model} instead")
            return model, reason
        if self.rank(model) > self.rank(prev):
            trace.append(f"conversation: {prev} -> {model} (stronger; stickiness only escalates)")
            return model, reason
        trace.append(f"conversation: kept {prev} (this turn chose {model})")
        return prev, Reason.STICKY

    async def _available(
        self, model: str, reason: Reason, now: float, trace: list[str], ok: Callable[[str], bool],
        restricted: bool,
    ) -> tuple[str, str | None, Reason]:
        snap = await self.breakers()
        r = self.rank(model)
        above = self._ladder[r + 1:] if r >= 0 else []
        # an allowed set (the policy's eligible candidates) is tried whole: stronger ones first, then weaker ones
        below = list(reversed(self._ladder[:max(r, 0)])) if restricted else []
        candidates = [model, *[m for m in [*above, self._fallback, *below] if ok(m)]]
        for i, m in enumerate(dict.fromkeys(candidates)):
            usable, endpoint = await self._endpoint(m, snap, now, trace)
            if usable:
                if i:
                    return m, endpoint, Reason.BREAKER_OPEN
                return m, endpoint, reason
        trace.append(f"breaker: every candidate is open; kept {model}")
        eps = self.endpoints(model)
        return model, (eps[0] if eps else None), reason

    async def _endpoint(
        self, model: str, snap: dict[str, Breaker], now: float, trace: list[str]
    ) -> tuple[bool, str | None]:
        """(usable, the endpoint to use: None when the model declares none); usable is False when all are open."""
        eps = self.endpoints(model)
        keys = [f"{model}@{e}" for e in eps] if eps else [model]
        latency = self._latency if len(keys) > 1 else {}
        order = sorted(range(len(keys)), key=lambda i: (latency.get(keys[i], 0.0), i))
        for i in order:
            b = snap.get(keys[i])
            state = b.state if b is not None else BreakerState.CLOSED
            if state == BreakerState.HALF_OPEN:
                if not await self.store.acquire_probe(keys[i], now, self.spec.breaker):
                    trace.append(f"breaker: {keys[i]} half-open, no probe left: excluded")
                    continue
                trace.append(f"breaker: {keys[i]} half-open: this request is a probe")
            elif state == BreakerState.OPEN:
                trace.append(f"breaker: {keys[i]} open: excluded")
                continue
            if len(keys) > 1:
                seen = ", ".join(f"{keys[j]} {latency[keys[j]]:.0f} ms" for j in order if keys[j] in latency)
                trace.append(f"endpoint: {eps[i]} (observed EWMA: {seen or 'none yet'})")
            return True, (eps[i] if eps else None)
        return False, None

    # ReportOutcome -------------------------------------------------------------------------------------------
    def check_outcome(self, o: Outcome) -> None:
        """Raise RequestError naming the field for a report about something this bundle does not know."""
        if o.model not in self._models:
            raise RequestError("model", f"'{o.model}' is not a model of bundle {self.version}; "
                                        f"known: {', '.join(sorted(self._models))}")
        eps = self.endpoints(o.model)
        if eps and o.endpoint not in eps:
            raise RequestError("endpoint", f"'{o.endpoint}' is not an endpoint of {o.model}; use one of: "
                                           f"{', '.join(eps)}")
        if not eps and o.endpoint:
            raise RequestError("endpoint", f"{o.model} declares no endpoints; leave it empty")

    async def report(self, o: Outcome) -> ReportResult:
        self.check_outcome(o)
        key = f"{o.model}@{o.endpoint}" if o.endpoint else o.model
        recalled = await self.store.recall_request(o.request_id)
        known = recalled is not None
        if not await self.store.first_report(o.request_id, REPORT_TTL_S):
            snap = await self.breakers()
            return ReportResult(True, known, snap[key].state if key in snap else BreakerState.CLOSED)
        now = self._clock()
        self._observer.outcome(o.model, o.outcome, known)
        t = await self.store.record_outcome(key, o.outcome in _FAILED, now, self.spec.breaker)
        if t is not None:
            self._transition(t)
        if o.outcome in _LATENCY_OUTCOMES:
            self._latency[key] = await self.store.observe_latency(key, o.latency_ms, self.spec.latency.alpha)
        tenant = o.tenant or (json.loads(recalled).get("tenant", "") if recalled else "")
        price = self._models[o.model]
        cost = o.tokens_in / 1000 * price.cost_per_1k_input + o.tokens_out / 1000 * price.cost_per_1k_output
        if cost > 0:
            await self.store.add_cost(tenant, cost, now)
        state = t.new if t is not None else (self._snap[key].state if key in self._snap else BreakerState.CLOSED)
        return ReportResult(False, known, state)

    def _transition(self, t: Transition) -> None:
        # this replica caused it: the Route path sees it at once, not after the next snapshot
        if t.new == BreakerState.CLOSED:
            self._snap.pop(t.key, None)
        else:
            self._snap[t.key] = Breaker(t.new, self._clock())
        self._note_state(t.key, t.new)
