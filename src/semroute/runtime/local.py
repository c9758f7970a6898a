"""InProcessStore: the state store for one process. Plain dicts under the event loop's single thread, so every
method is atomic without a lock (none awaits in the middle of an update)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .buckets import MemoryBucketStore
from .settings import BreakerSpec
from .store import Breaker, BreakerState, Transition, day_bucket, minute_bucket, open_state


@dataclass
class _Window:
    """Outcomes of one breaker key within its window: (time, failed)."""

    events: collections.deque[tuple[float, bool]] = field(default_factory=collections.deque)
    failures: int = 0

    def add(self, now: float, failed: bool, window_s: float) -> None:
        self.events.append((now, failed))
        self.failures += failed
        while self.events and self.events[0][0] <= now - window_s:
            _, f = self.events.popleft()
            self.failures -= f


class Expiring:
    """A dict whose entries expire; bounded (oldest entries go first past ``limit``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data: collections.OrderedDict[str, tuple[float, str | bytes]] = collections.OrderedDict()

    def get(self, key: str, now: float) -> str | bytes | None:
        hit = self.data.get(key)
        if hit is None:
            return None
        if hit[0] <= now:
            del self.data[key]
            return None
        return hit[1]

    def put(self, key: str, value: str | bytes, expires: float) -> None:
        self.data[key] = (expires, value)
        self.data.move_to_end(key)
        while len(self.data) > self.limit:
            self.data.popitem(last=False)


class InProcessStore:
    name = "memory"

    def __init__(self, *, ttl_clock: Callable[[], float] = time.monotonic, limit: int = 100_000) -> None:
        # TTLs of cached values use a monotonic clock (injectable for tests): they are local to this process, and
        # must not jump with the wall clock
        self._mono = ttl_clock
        self._breakers: dict[str, str] = {}
        self._windows: dict[str, _Window] = {}
        self._latency: dict[str, float] = {}
        self._counters: dict[str, int] = {}
        self._cost: dict[str, float] = {}
        self._cache = Expiring(limit)
        self._conversations = Expiring(limit)
        self._reports = Expiring(limit)
        self._requests = Expiring(limit)
        self._buckets = MemoryBucketStore(max_keys=limit)

    # breakers ---------------------------------------------------------------------------------------------------
    async def breakers(self, now: float, spec: BreakerSpec) -> dict[str, Breaker]:
        return {k: Breaker.parse(v, now, spec.cooldown_s) for k, v in self._breakers.items()}

    async def record_outcome(self, key: str, failed: bool, now: float, spec: BreakerSpec) -> Transition | None:
        return self.record_outcome_now(key, failed, now, spec)

    def record_outcome_now(self, key: str, failed: bool, now: float, spec: BreakerSpec) -> Transition | None:
        old = Breaker.parse(self._breakers.get(key), now, spec.cooldown_s).state
        if old == BreakerState.OPEN:
            return None  # a late report about a request sent before it opened: the breaker already knows
        if old == BreakerState.HALF_OPEN:
            if failed:
                self._breakers[key] = open_state(now)
                return Transition(key, old, BreakerState.OPEN)
            self._close(key)
            return Transition(key, old, BreakerState.CLOSED)
        w = self._windows.setdefault(key, _Window())
        w.add(now, failed, spec.window_s)
        if w.failures >= spec.failures or (
            spec.error_rate is not None and len(w.events) >= spec.min_requests
            and w.failures / len(w.events) >= spec.error_rate
        ):
            self._breakers[key] = open_state(now)
            self._windows.pop(key, None)
            return Transition(key, old, BreakerState.OPEN)
        return None

    def _close(self, key: str) -> None:
        self._breakers.pop(key, None)
        self._windows.pop(key, None)

    async def acquire_probe(self, key: str, now: float, spec: BreakerSpec) -> bool:
        b = Breaker.parse(self._breakers.get(key), now, spec.cooldown_s)
        if b.state == BreakerState.CLOSED:
            return True
        if b.state == BreakerState.OPEN:
            return False
        # probes whose outcome never came back are written off after another cooldown
        used = 0 if now - b.probe_at >= spec.cooldown_s else b.probes_used
        if used >= spec.probes:
            return False
        self._breakers[key] = f"open|{b.opened_at!r}|{used + 1}|{now!r}"
        return True

    def set_breaker(self, key: str, raw: str) -> None:
        self._breakers[key] = raw

    def raw_breakers(self) -> dict[str, str]:
        return dict(self._breakers)

    # latency ----------------------------------------------------------------------------------------------------
    async def observe_latency(self, key: str, ms: float, alpha: float) -> float:
        old = self._latency.get(key)
        new = ms if old is None else alpha * ms + (1 - alpha) * old
        self._latency[key] = new
        return new

    async def latencies(self) -> dict[str, float]:
        return dict(self._latency)

    # budgets ----------------------------------------------------------------------------------------------------
    async def take_escalation(self, tenant: str, per_minute: int | None, per_day: int | None, now: float) -> bool:
        mk, dk = f"m:{tenant}:{minute_bucket(now)}", f"d:{tenant}:{day_bucket(now)}"
        m, d = self._counters.get(mk, 0), self._counters.get(dk, 0)
        if (per_minute is not None and m >= per_minute) or (per_day is not None and d >= per_day):
            return False
        self._counters[mk], self._counters[dk] = m + 1, d + 1
        if len(self._counters) > 4 * self._cache.limit:  # old windows: drop them all, current ones are rebuilt
            self._counters = {mk: m + 1, dk: d + 1}
        return True

    def escalation_counts(self) -> dict[str, int]:
        return dict(self._counters)

    async def add_cost(self, tenant: str, amount: float, now: float) -> float:
        key = f"{tenant}:{day_bucket(now)}"
        total = self._cost.get(key, 0.0) + amount
        self._cost[key] = total
        return total

    async def cost_spent(self, tenant: str, now: float) -> float:
        return self._cost.get(f"{tenant}:{day_bucket(now)}", 0.0)

    def costs(self) -> dict[str, float]:
        return dict(self._cost)

    # rate limits ------------------------------------------------------------------------------------------------
    async def take_tokens(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        return self._buckets.take_now(key, cost, rate_per_s, burst)

    # cache, conversations, reports ------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        v = self._cache.get(key, self._mono())
        return v if isinstance(v, bytes) else None

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache.put(key, value, self._mono() + ttl_s)

    async def conversation_get(self, conversation: str) -> str | None:
        v = self._conversations.get(conversation, self._mono())
        return v if isinstance(v, str) else None

    async def conversation_set(self, conversation: str, model: str, ttl_s: float) -> None:
        self._conversations.put(conversation, model, self._mono() + ttl_s)

    async def first_report(self, request_id: str, ttl_s: float) -> bool:
        now = self._mono()
        if self._reports.get(request_id, now) is not None:
            return False
        self._reports.put(request_id, "1", now + ttl_s)
        return True

    async def remember_request(self, request_id: str, record: str, ttl_s: float) -> None:
        self._requests.put(request_id, record, self._mono() + ttl_s)

    async def recall_request(self, request_id: str) -> str | None:
        v = self._requests.get(request_id, self._mono())
        return v if isinstance(v, str) else None

    async def close(self) -> None:
        return None

