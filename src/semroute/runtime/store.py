"""The state store: what the feedback loop remembers between requests, and the one interface both stores implement.

Two implementations: ``InProcessStore`` (the default: one process, nothing to run) and ``RedisStore`` (replicas
share state through one Redis server; see redis_store.py). Every update that must not race between replicas
(breaker transitions, budget counters, latency averages) is one atomic operation of the store.

A circuit breaker's state is one string per key (``model`` or ``model@endpoint``), the same in both stores:
``closed``, or ``open|OPENED_AT|PROBES_USED|LAST_PROBE_AT``. An open breaker whose cooldown has passed reads as
half-open; no write is needed for that transition, so every replica sees it at the same moment.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .settings import BreakerSpec

Clock = Callable[[], float]  # seconds since the epoch: replicas sharing a store must agree on it


def wall_clock() -> float:
    return time.time()


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True)
class Breaker:
    state: BreakerState
    opened_at: float = 0.0
    probes_used: int = 0
    probe_at: float = 0.0

    @staticmethod
    def parse(raw: str | None, now: float, cooldown_s: float) -> Breaker:
        """Read a stored state string; an open breaker past its cooldown reads as half-open."""
        if not raw or raw == "closed":
            return Breaker(BreakerState.CLOSED)
        _, opened, probes, probe_at = raw.split("|")
        state = BreakerState.HALF_OPEN if now - float(opened) >= cooldown_s else BreakerState.OPEN
        return Breaker(state, float(opened), int(probes), float(probe_at))


def open_state(now: float) -> str:
    return f"open|{now!r}|0|0"


@dataclass(frozen=True)
class Transition:
    key: str
    old: BreakerState
    new: BreakerState


class StateStore(Protocol):
    """What the feedback loop needs from a store. ``now`` is passed in (an injectable clock), never read inside."""

    name: str

    async def breakers(self, now: float, spec: BreakerSpec) -> dict[str, Breaker]:
        """Every breaker that is not closed (absent keys are closed)."""
        ...

    async def record_outcome(self, key: str, failed: bool, now: float, spec: BreakerSpec) -> Transition | None:
        """Count one outcome for ``key``; returns the transition it caused, if any."""
        ...

    async def acquire_probe(self, key: str, now: float, spec: BreakerSpec) -> bool:
        """May one request go to ``key`` now? Closed: yes; open: no; half-open: while probes remain."""
        ...

    async def observe_latency(self, key: str, ms: float, alpha: float) -> float:
        """Fold one latency sample into the key's EWMA; returns the new average."""
        ...

    async def latencies(self) -> dict[str, float]: ...

    async def take_escalation(self, tenant: str, per_minute: int | None, per_day: int | None, now: float) -> bool:
        """Spend one escalation from the tenant's budget, atomically; False (nothing spent) when exhausted."""
        ...

    async def add_cost(self, tenant: str, amount: float, now: float) -> float:
        """Add to the tenant's spend for the current UTC day; returns the day's total."""
        ...

    async def cost_spent(self, tenant: str, now: float) -> float: ...

    async def take_tokens(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        """Rate limits: take ``cost`` tokens from bucket ``key`` if it holds them (0.0), else take nothing and
        return the seconds until it will (``inf`` when ``cost`` exceeds ``burst``). See buckets.py."""
        ...

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def conversation_get(self, conversation: str) -> str | None: ...

    async def conversation_set(self, conversation: str, model: str, ttl_s: float) -> None: ...

    async def first_report(self, request_id: str, ttl_s: float) -> bool:
        """True the first time ``request_id`` is reported (within ``ttl_s``); False for a repeat."""
        ...

    async def remember_request(self, request_id: str, record: str, ttl_s: float) -> None: ...

    async def recall_request(self, request_id: str) -> str | None: ...

    async def close(self) -> None: ...


def minute_bucket(now: float) -> int:
    return int(now // 60)


def day_bucket(now: float) -> int:
    return int(now // 86_400)
