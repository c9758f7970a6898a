"""Rate limits shared by replicas: the token buckets of the Redis state store (one Lua script, Redis's clock) against
a real redis-server on a free loopback port. Several ``RedisStore`` objects stand in for several replicas (each has
its own connections, as each process would). Through real servers: two in-process servers sharing one Redis here;
three processes behind Envoy in test_deploy_envoy.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest

from semroute.ops import OpsConfig
from semroute.ops.ratelimit import MemoryBucketStore, StateBuckets
from semroute.ops.wiring import Ops
from semroute.runtime.local import InProcessStore

SLOW = 1 / 3600  # one token an hour: no refill to speak of within a test


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_redis_and_memory_buckets_give_the_same_answers(redis_server) -> None:  # type: ignore[no-untyped-def]
    from semroute.runtime.redis_store import RedisStore

    async def body() -> None:
        shared, local = RedisStore(redis_server.url), InProcessStore()
        try:
            for store in (shared, local):
                took = [await store.take_tokens("key:a", 1, SLOW, 5) for _ in range(7)]
                assert took[:5] == [0.0] * 5, store.name
                # empty: one token is an hour away (less the few ms that passed)
                assert took[5] == pytest.approx(3600, rel=1e-3) and took[6] == pytest.approx(3600, rel=1e-3)
                assert await store.take_tokens("key:a", 6, SLOW, 5) == math.inf  # more than the bucket holds
                assert await store.take_tokens("key:b", 5, SLOW, 5) == 0.0  # another key, another bucket
                assert await store.take_tokens("key:c", 2, SLOW, 5) == 0.0  # a cost of several tokens
                assert await store.take_tokens("key:c", 4, SLOW, 5) > 0 and \
                    await store.take_tokens("key:c", 3, SLOW, 5) == 0.0  # a refused take takes nothing
        finally:
            await shared.close()

    run(body())


def test_concurrent_takes_from_many_replicas_never_over_admit(redis_server) -> None:  # type: ignore[no-untyped-def]
    from semroute.runtime.redis_store import RedisStore

    async def body() -> None:
        # a generous timeout: this tests atomicity, and 100 commands in flight per client on a loaded test machine
        # can outlast the default 250 ms and degrade to local buckets (the outage test covers that path)
        replicas = [RedisStore(redis_server.url, timeout_s=5.0) for _ in range(4)]
        try:
            # no refill: exactly the burst is admitted, out of 400 takes racing over 4 clients' connections
            took = await asyncio.gather(*(replicas[i % 4].take_tokens("tenant:acme", 1, SLOW, 37)
                                          for i in range(400)))
            assert sum(w == 0.0 for w in took) == 37
            assert all(w > 0 for w in took if w != 0.0)
            assert all(r.up for r in replicas), "a burst must not tip a replica into local buckets"
            # with refill (50 tokens/s): never more than burst + rate x elapsed, whichever replica asks
            t0 = time.monotonic()
            admitted = 0
            for _ in range(6):  # ~0.6 s of bursts of 100 concurrent takes
                took = await asyncio.gather(*(replicas[i % 4].take_tokens("tenant:fast", 1, 50, 10)
                                              for i in range(100)))
                admitted += sum(w == 0.0 for w in took)
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - t0
            assert 10 <= admitted <= 10 + 50 * elapsed + 1, (admitted, elapsed)
        finally:
            for r in replicas:
                await r.close()

    run(body())


def test_buckets_refill_at_the_rate(redis_server) -> None:  # type: ignore[no-untyped-def]
    from semroute.runtime.redis_store import RedisStore

    async def body() -> None:
        a, b = RedisStore(redis_server.url), RedisStore(redis_server.url)
        try:
            # one token a second (slow enough that a busy machine's pauses between calls do not refill it)
            assert await a.take_tokens("key:r", 1, 1, 2) == 0.0
            assert await b.take_tokens("key:r", 1, 1, 2) == 0.0
            wait = await a.take_tokens("key:r", 1, 1, 2)
            assert 0 < wait <= 1.0
            assert await b.take_tokens("key:r", 1, 1, 2) > 0  # empty for the other replica too
            await asyncio.sleep(wait + 0.05)
            assert await b.take_tokens("key:r", 1, 1, 2) == 0.0  # refilled, seen by the other replica
            await asyncio.sleep(2.1)  # past a full refill: the bucket holds its burst, not more
            took = [await a.take_tokens("key:r", 1, 1, 2) for _ in range(3)]
            assert took[:2] == [0.0, 0.0] and took[2] > 0
        finally:
            await a.close()
            await b.close()

    run(body())


def test_buckets_are_namespaced_and_expire_once_refilled(redis_server) -> None:  # type: ignore[no-untyped-def]
    import redis

    from semroute.runtime.redis_store import RedisStore

    r = redis.Redis(port=redis_server.port)

    async def body() -> None:
        s = RedisStore(redis_server.url)
        try:
            t0 = time.monotonic()
            await s.take_tokens("key:t", 1, 20, 4)  # 3 left: full again in 50 ms
            assert r.keys("*") == [b"semroute:rl:key:t"]
            assert 0 < r.pttl("semroute:rl:key:t") <= 51
            await s.take_tokens("key:t", 3, 20, 4)  # empty: full again in 200 ms (less what refilled meanwhile)
            ttl = r.pttl("semroute:rl:key:t")
            assert 200 - (time.monotonic() - t0) * 1000 - 1 <= ttl <= 201
            await s.take_tokens("key:slow", 1, SLOW, 4)  # idle for an hour before it is full again
            assert 3_599_000 < r.pttl("semroute:rl:key:slow") <= 3_600_001
            await s.take_tokens("tenant:" + "x" * 500, 1, 20, 4)  # a long name is stored by its hash
            assert any(k.startswith(b"semroute:rl:sha256:") and len(k) < 100 for k in r.keys("*"))
            await asyncio.sleep(0.4)
            assert r.exists("semroute:rl:key:t") == 0  # idle and refilled: gone, and reads as full
            assert [await s.take_tokens("key:t", 1, 20, 4) for _ in range(5)].count(0.0) == 4
        finally:
            await s.close()

    run(body())
    r.close()


def test_an_outage_degrades_to_per_replica_buckets_and_resyncs(redis_server, caplog) -> None:  # type: ignore[no-untyped-def]
    from semroute.runtime.redis_store import RedisStore

    changes: list[bool] = []

    async def body() -> None:
        a = RedisStore(redis_server.url, retry_s=0.0, on_change=changes.append)
        b = RedisStore(redis_server.url, retry_s=0.0)
        try:
            assert await a.take_tokens("key:o", 1, SLOW, 3) == 0.0
            assert await b.take_tokens("key:o", 1, SLOW, 3) == 0.0  # shared: 1 left
            redis_server.stop()
            # down: each replica answers from its own (fresh, full) bucket; nothing raises
            assert [await a.take_tokens("key:o", 1, SLOW, 3) for _ in range(4)].count(0.0) == 3
            assert [await b.take_tokens("key:o", 1, SLOW, 3) for _ in range(4)].count(0.0) == 3
            assert changes == [False]  # reported once, however many takes
            redis_server.start()  # same port, empty (no persistence)
            # back: the local buckets are dropped and the shared one (empty server: full) is used again
            took = [await a.take_tokens("key:o", 1, SLOW, 3) for _ in range(2)] + \
                   [await b.take_tokens("key:o", 1, SLOW, 3) for _ in range(2)]
            assert took.count(0.0) == 3 and took[-1] > 0
            assert changes == [False, True]
        finally:
            await a.close()
            await b.close()

    with caplog.at_level(logging.WARNING, logger="semroute.runtime"):
        run(body())
    down = [r for r in caplog.records if getattr(r, "event", "") == "state_store_down"]
    assert len(down) == 2 and "rate limits count per replica" in down[0].getMessage()  # once per store (a, b)


def test_ops_share_the_limit_only_through_a_shared_store(redis_server) -> None:  # type: ignore[no-untyped-def]
    from semroute.runtime.redis_store import RedisStore

    config = OpsConfig(rate_limit="5/min", rate_by="tenant")

    def buckets(ops: Ops) -> Any:
        return ops.interceptors[0]._limiter.store  # type: ignore[attr-defined]

    store = RedisStore(redis_server.url)
    try:
        shared = buckets(Ops(config, state=store))
        assert isinstance(shared, StateBuckets) and shared.store is store
        assert isinstance(buckets(Ops(config, state=InProcessStore())), MemoryBucketStore)
        assert isinstance(buckets(Ops(config)), MemoryBucketStore)
    finally:
        asyncio.run(store.close())


@pytest.mark.slow
def test_two_servers_on_one_redis_share_a_tenant_limit(bundle_dir: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    from server_harness import InProcessServer

    from semroute._proto.semroute.v1 import router_pb2 as pb
    from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
    from semroute.server import ServeConfig

    def config() -> ServeConfig:
        return ServeConfig(index=bundle_dir, port=0, watch=False, state=redis_server.url,
                           ops=OpsConfig(rate_limit="4/min", rate_by="tenant"))

    request = pb.RouteRequest(text="my card was charged twice", metadata=pb.RequestMetadata(tenant="acme"))
    with InProcessServer(config()) as s1, InProcessServer(config()) as s2:
        codes: list[grpc.StatusCode] = []
        retry: list[int] = []
        for i in range(10):
            with grpc.insecure_channel((s1, s2)[i % 2].target) as ch:
                try:
                    pb_grpc.RouterStub(ch).Route(request, timeout=30)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
                    retry.append(int(dict(e.trailing_metadata())["retry-after-ms"]))
        assert codes.count(grpc.StatusCode.OK) == 4, codes  # 4 per minute in all, not 4 per server
        assert codes[4:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 6
        assert all(0 < ms <= 15_000 for ms in retry)  # a token every 15 s
        other = pb.RouteRequest(text="hello", metadata=pb.RequestMetadata(tenant="other"))
        with grpc.insecure_channel(s2.target) as ch:
            pb_grpc.RouterStub(ch).Route(other, timeout=30)  # another tenant, its own bucket
