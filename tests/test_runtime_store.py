"""The state stores: breakers, latency, budgets, cache, conversations, reports. Every test runs against the
in-process store and against a real redis-server, with an injected clock (``now`` is passed in)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from semroute.runtime.local import InProcessStore
from semroute.runtime.settings import BreakerSpec
from semroute.runtime.store import BreakerState, StateStore

SPEC = BreakerSpec(failures=5, window_s=60, cooldown_s=30, probes=2)
T0 = 1_800_000_000.0


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Callable[[], StateStore]:
    if request.param == "memory":
        return InProcessStore
    server = request.getfixturevalue("redis_server")
    from semroute.runtime.redis_store import RedisStore

    return lambda: RedisStore(server.url)


def run(make: Callable[[], StateStore], body: Callable[[StateStore], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        store = make()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def test_breaker_opens_after_n_failures_in_window_then_half_opens_and_closes(make_store) -> None:  # type: ignore[no-untyped-def]
    async def body(s: StateStore) -> None:
        for i in range(4):
            assert await s.record_outcome("m", True, T0 + 10 * i, SPEC) is None
        assert await s.record_outcome("m", False, T0 + 61, SPEC) is None
        # the failure at T0 has left the 60 s window: 10, 20, 30, 65 make four
        assert await s.record_outcome("m", True, T0 + 65, SPEC) is None
        t = await s.record_outcome("m", True, T0 + 66, SPEC)
        assert t is not None and (t.old, t.new) == (BreakerState.CLOSED, BreakerState.OPEN)
        assert (await s.breakers(T0 + 67, SPEC))["m"].state == BreakerState.OPEN
        assert not await s.acquire_probe("m", T0 + 67, SPEC)
        # after the cooldown: half-open, two probes, then none until one reports or another cooldown passes
        now = T0 + 66 + 30
        assert (await s.breakers(now, SPEC))["m"].state == BreakerState.HALF_OPEN
        assert await s.acquire_probe("m", now, SPEC)
        assert await s.acquire_probe("m", now + 1, SPEC)
        assert not await s.acquire_probe("m", now + 2, SPEC)
        t = await s.record_outcome("m", False, now + 3, SPEC)
        assert t is not None and (t.old, t.new) == (BreakerState.HALF_OPEN, BreakerState.CLOSED)
        assert "m" not in await s.breakers(now + 3, SPEC)
        assert await s.acquire_probe("m", now + 3, SPEC)

    run(make_store, body)


def test_half_open_failure_reopens_and_error_rate_opens(make_store) -> None:  # type: ignore[no-untyped-def]
    rate = BreakerSpec(failures=1000, error_rate=0.5, min_requests=4, window_s=60, cooldown_s=10)

    async def body(s: StateStore) -> None:
        for i, failed in enumerate([False, True, False]):
            assert await s.record_outcome("e", failed, T0 + i, rate) is None
        t = await s.record_outcome("e", True, T0 + 3, rate)  # 2 of 4 failed: rate 0.5
        assert t is not None and t.new == BreakerState.OPEN
        assert await s.acquire_probe("e", T0 + 14, rate)
        t = await s.record_outcome("e", True, T0 + 15, rate)
        assert t is not None and (t.old, t.new) == (BreakerState.HALF_OPEN, BreakerState.OPEN)
        assert (await s.breakers(T0 + 16, rate))["e"].state == BreakerState.OPEN
        assert (await s.breakers(T0 + 25, rate))["e"].state == BreakerState.HALF_OPEN

    run(make_store, body)


def test_latency_ewma(make_store) -> None:  # type: ignore[no-untyped-def]
    async def body(s: StateStore) -> None:
        assert await s.observe_latency("m@eu", 100.0, 0.2) == pytest.approx(100.0)
        assert await s.observe_latency("m@eu", 200.0, 0.2) == pytest.approx(120.0)
        assert (await s.latencies()) == {"m@eu": pytest.approx(120.0)}

    run(make_store, body)


def test_escalation_budget_per_minute_and_per_day(make_store) -> None:  # type: ignore[no-untyped-def]
    async def body(s: StateStore) -> None:
        minute = (T0 // 60) * 60
        took = [await s.take_escalation("acme", 2, 3, minute + i) for i in range(4)]
        assert took == [True, True, False, False]  # two per minute
        assert await s.take_escalation("acme", 2, 3, minute + 60)  # the next minute: third of the day
        assert not await s.take_escalation("acme", 2, 3, minute + 120)  # the day's cap of 3 is spent
        assert await s.take_escalation("other", 2, 3, minute + 120)  # per tenant
        assert await s.take_escalation("free", None, None, minute)

    run(make_store, body)


def test_cost_cache_conversations_reports(make_store) -> None:  # type: ignore[no-untyped-def]
    async def body(s: StateStore) -> None:
        assert await s.add_cost("acme", 0.25, T0) == pytest.approx(0.25)
        assert await s.add_cost("acme", 0.5, T0 + 1) == pytest.approx(0.75)
        assert await s.cost_spent("acme", T0 + 2) == pytest.approx(0.75)
        assert await s.cost_spent("acme", T0 + 86_400) == 0.0  # a new day
        assert await s.cache_get("k") is None
        await s.cache_put("k", b"\x00decision", 60)
        assert await s.cache_get("k") == b"\x00decision"
        assert await s.conversation_get("c1") is None
        await s.conversation_set("c1", "code-medium", 60)
        assert await s.conversation_get("c1") == "code-medium"
        assert await s.first_report("r1", 60)
        assert not await s.first_report("r1", 60)
        await s.remember_request("r2", "{}", 60)
        assert await s.recall_request("r2") == "{}"
        assert await s.recall_request("r3") is None

    run(make_store, body)


def test_in_process_ttls_follow_the_injected_clock() -> None:
    now = [0.0]
    s = InProcessStore(ttl_clock=lambda: now[0], limit=2)

    async def body() -> None:
        await s.conversation_set("c", "m", 10)
        now[0] = 9.9
        assert await s.conversation_get("c") == "m"
        now[0] = 10.0
        assert await s.conversation_get("c") is None
        for k in "abc":  # bounded: the oldest entry goes first
            await s.cache_put(k, b"v", 100)
        assert await s.cache_get("a") is None and await s.cache_get("c") == b"v"

    asyncio.run(body())


def test_redis_outage_answers_locally_and_resyncs(redis_server) -> None:  # type: ignore[no-untyped-def]
    from semroute.runtime.redis_store import RedisStore

    changes: list[bool] = []

    async def body() -> None:
        s = RedisStore(redis_server.url, retry_s=0.0, on_change=changes.append)
        peer = RedisStore(redis_server.url)
        try:
            assert await s.take_escalation("acme", None, 10, T0)
            redis_server.stop()
            # down: answered from local state, nothing raises; logged and reported once
            assert await s.take_escalation("acme", None, 10, T0)
            assert await s.take_escalation("acme", None, 10, T0)
            for i in range(5):
                await s.record_outcome("m", True, T0 + i, SPEC)
            assert (await s.breakers(T0 + 5, SPEC))["m"].state == BreakerState.OPEN
            assert changes == [False]
            redis_server.start()  # same port, empty (no persistence): the outage's counts are merged back
            assert "m" in await s.breakers(T0 + 6, SPEC)
            assert changes == [False, True]
            assert (await peer.breakers(T0 + 6, SPEC))["m"].state == BreakerState.OPEN
            took = [await peer.take_escalation("acme", None, 10, T0) for _ in range(10)]
            assert took.count(True) == 8  # 2 spent during the outage (the first went to the old server)
        finally:
            await s.close()
            await peer.close()

    asyncio.run(body())
