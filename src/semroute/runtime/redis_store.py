"""RedisStore: replicas share breakers, latencies, budgets, the decision cache and conversations through one Redis
server. Updates that must not race are Lua scripts (one atomic step each); the day's spend is MULTI/EXEC.

Rate-limit token buckets (``take_tokens``) live here too, one hash per bucket (``PREFIX rl:BUCKET``), updated by
one Lua script that reads the time from Redis itself (``TIME``): every replica's takes are measured on one clock,
so clock skew between replicas neither mints nor loses tokens. Each bucket expires once it would have refilled
(an expired bucket reads as full, so expiry changes no answer and idle buckets cost no memory).

If Redis goes away the store keeps answering from a local InProcessStore, logs once per transition (down, up),
reports it through ``on_change`` (the server's gauge) and tries Redis again at most once per ``retry_s``. When
Redis answers again the store resynchronises: escalations and spend counted locally during the outage are added to
the shared counters, and breakers opened locally are written unless Redis already holds a state for them. Local
token buckets are dropped (the shared buckets are authoritative again): while degraded a rate limit holds per
replica, so N replicas may admit up to N times the limit. Nothing here ever raises to the caller because Redis is
down: a Route never fails for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import ConfigError
from .local import InProcessStore
from .settings import BreakerSpec
from .store import Breaker, BreakerState, Transition, day_bucket, minute_bucket

log = logging.getLogger("semroute.runtime")
T = TypeVar("T")
_DAY_S = 86_400

_RECORD = """
local key, now_s = ARGV[1], ARGV[3]
local failed, now = ARGV[2] == '1', tonumber(ARGV[3])
local window, failures, rate = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local minreq, cooldown = tonumber(ARGV[7]), tonumber(ARGV[8])
local raw = redis.call('HGET', KEYS[1], key)
local old = 'closed'
if raw and raw ~= 'closed' then
  local opened = tonumber(string.match(raw, '^open|([^|]+)|'))
  if now - opened >= cooldown then old = 'half_open' else old = 'open' end
end
if old == 'open' then return {old, old} end
if old == 'half_open' then
  if failed then
    redis.call('HSET', KEYS[1], key, 'open|' .. now_s .. '|0|0')
    return {old, 'open'}
  end
  redis.call('HDEL', KEYS[1], key)
  redis.call('DEL', KEYS[2], KEYS[3])
  return {old, 'closed'}
end
redis.call('ZADD', KEYS[2], now, ARGV[9])
if failed then redis.call('ZADD', KEYS[3], now, ARGV[9]) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
local na, nf = redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])
if nf >= failures or (rate > 0 and na >= minreq and nf / na >= rate) then
  redis.call('HSET', KEYS[1], key, 'open|' .. now_s .. '|0|0')
  redis.call('DEL', KEYS[2], KEYS[3])
  return {old, 'open'}
end
local ttl = math.ceil(window * 1000) + 1000
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return {old, old}
"""

_PROBE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw or raw == 'closed' then return 1 end
local opened_s, probes, probe_at = string.match(raw, '^open|([^|]+)|([^|]+)|([^|]+)$')
local now, cooldown, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if now - tonumber(opened_s) < cooldown then return 0 end
local used = tonumber(probes)
if now - tonumber(probe_at) >= cooldown then used = 0 end
if used >= max then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'open|' .. opened_s .. '|' .. (used + 1) .. '|' .. ARGV[2])
return 1
"""

_EWMA = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local x, a = tonumber(ARGV[2]), tonumber(ARGV[3])
local new = x
if old then new = a * x + (1 - a) * tonumber(old) end
local s = string.format('%.17g', new)
redis.call('HSET', KEYS[1], ARGV[1], s)
return s
"""

_ESCALATE = """
local m = tonumber(redis.call('GET', KEYS[1]) or '0')
local d = tonumber(redis.call('GET', KEYS[2]) or '0')
local pm, pd = tonumber(ARGV[1]), tonumber(ARGV[2])
if (pm >= 0 and m >= pm) or (pd >= 0 and d >= pd) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 120)
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 2 * 86400)
return 1
"""

# Redis >= 5 replicates scripts by their effects, so reading TIME before a write is allowed. An absent bucket is
# full; a clock that stepped back counts as no time passed. Numbers go out as strings: Redis would truncate a Lua
# number reply to an integer.
_TAKE_TOKENS = """
local cost, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil or at == nil then tokens, at = burst, now end
local elapsed = now - at
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1)
return string.format('%.17g', wait)
"""


def parse_url(url: str) -> tuple[str, int, int]:
    """``redis://HOST:PORT[/DB]`` -> (host, port, db); ConfigError naming --state otherwise."""
    u = urlparse(url)
    try:
        port = u.port or 6379
    except ValueError as e:
        raise ConfigError(f"invalid port in '{url}'", field="--state", hint="use redis://HOST:PORT") from e
    if u.scheme != "redis" or not u.hostname:
        raise ConfigError(f"'{url}' is not a redis:// URL", field="--state",
                          hint="use 'memory' (the default) or redis://HOST:PORT[/DB]")
    path = u.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(f"invalid database '{path}' in '{url}'", field="--state", hint="use redis://HOST:PORT/0")
    return u.hostname, port, int(path or 0)


class RedisStore:
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "semroute:",
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        max_connections: int = 32,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        host, port, db = parse_url(url)
        self.url = url
        # A bounded pool that makes callers wait for a free connection: redis-py's default pool opens one
        # connection per command in flight, so a burst of 100 requests meant 100 connects at once, which on a busy
        # host overran the timeout and tipped every replica into per-replica state (rate limits included). With a
        # cap, a burst queues for ~0.1 ms round trips on warm connections instead. No retries inside redis-py: a
        # down Redis must cost a request one failed attempt, then none until retry_s.
        pool = aioredis.BlockingConnectionPool(
            host=host, port=port, db=db, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), decode_responses=False, max_connections=max_connections,
            timeout=timeout_s,
        )
        self._r = aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it too
        self._p = prefix
        self._retry_s = retry_s
        self._on_change = on_change
        self._record = self._r.register_script(_RECORD)
        self._probe = self._r.register_script(_PROBE)
        self._ewma = self._r.register_script(_EWMA)
        self._escalate = self._r.register_script(_ESCALATE)
        self._take_tokens = self._r.register_script(_TAKE_TOKENS)
        self.local = InProcessStore()
        self.up = True
        self._retry_at = 0.0
        self._resync_lock = asyncio.Lock()

    # the failover --------------------------------------------------------------------------------------------
    async def _call(self, remote: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        if not self.up:
            if time.monotonic() < self._retry_at:
                return await local()
            await self._resync()  # merge the outage's state first, so this very call already reads it back
            if not self.up:
                return await local()
        try:
            return await remote()
        except (TimeoutError, RedisError, OSError) as e:
            self._retry_at = time.monotonic() + self._retry_s
            if self.up:
                self.up = False
                log.error("state store %s unreachable, answering from local state until it returns (rate limits "
                          "count per replica meanwhile): %s",
                          self.url, e, extra={"event": "state_store_down", "store": self.url})
                if self._on_change:
                    self._on_change(False)
            return await local()

    async def _resync(self) -> None:
        async with self._resync_lock:
            if self.up:
                return
            outage, self.local = self.local, InProcessStore()
            try:
                pipe = self._r.pipeline(transaction=True)
                # an empty pipeline never reaches the server: without this an outage with nothing to merge (only
                # rate-limit takes, say) read as "back", flapping down/up and resetting the local buckets each time
                pipe.ping()
                for key, n in outage.escalation_counts().items():
                    full = self._k("esc:" + key)
                    pipe.incrby(full, n)
                    pipe.expire(full, 120 if key.startswith("m:") else 2 * _DAY_S)
                for key, amount in outage.costs().items():
                    full = self._k("cost:" + key)
                    pipe.incrbyfloat(full, amount)
                    pipe.expire(full, 2 * _DAY_S)
                for key, raw in outage.raw_breakers().items():
                    pipe.hsetnx(self._k("breakers"), key, raw)
                await pipe.execute()
            except (TimeoutError, RedisError, OSError) as e:
                self.local = outage  # still down after all: keep counting locally
                self._retry_at = time.monotonic() + self._retry_s
                log.debug("resync failed: %s", e)
                return
            self.up = True
            log.warning("state store %s is back; local state from the outage merged", self.url,
                        extra={"event": "state_store_up", "store": self.url})
            if self._on_change:
                self._on_change(True)

    def _k(self, name: str) -> str:
        return self._p + name

    # breakers ---------------------------------------------------------------------------------------------------
    async def breakers(self, now: float, spec: BreakerSpec) -> dict[str, Breaker]:
        async def remote() -> dict[str, Breaker]:
            raw: dict[Any, Any] = await self._r.hgetall(self._k("breakers"))  # type: ignore[misc,unused-ignore]
            return {k.decode(): Breaker.parse(v.decode(), now, spec.cooldown_s) for k, v in raw.items()}

        return await self._call(remote, lambda: self.local.breakers(now, spec))

    async def record_outcome(self, key: str, failed: bool, now: float, spec: BreakerSpec) -> Transition | None:
        async def remote() -> Transition | None:
            old, new = await self._record(
                keys=[self._k("breakers"), self._k(f"bw:all:{key}"), self._k(f"bw:fail:{key}")],
                args=[key, int(failed), repr(now), spec.window_s, spec.failures,
                      spec.error_rate if spec.error_rate is not None else -1, spec.min_requests, spec.cooldown_s,
                      uuid.uuid4().hex],
            )
            o, n = BreakerState(old.decode()), BreakerState(new.decode())
            return Transition(key, o, n) if o != n else None

        return await self._call(remote, lambda: self.local.record_outcome(key, failed, now, spec))

    async def acquire_probe(self, key: str, now: float, spec: BreakerSpec) -> bool:
        async def remote() -> bool:
            return bool(await self._probe(keys=[self._k("breakers")],
                                          args=[key, repr(now), spec.cooldown_s, spec.probes]))

        return await self._call(remote, lambda: self.local.acquire_probe(key, now, spec))

    # latency ----------------------------------------------------------------------------------------------------
    async def observe_latency(self, key: str, ms: float, alpha: float) -> float:
        async def remote() -> float:
            return float(await self._ewma(keys=[self._k("latency")], args=[key, repr(ms), repr(alpha)]))

        return await self._call(remote, lambda: self.local.observe_latency(key, ms, alpha))

    async def latencies(self) -> dict[str, float]:
        async def remote() -> dict[str, float]:
            raw: dict[Any, Any] = await self._r.hgetall(self._k("latency"))  # type: ignore[misc,unused-ignore]
            return {k.decode(): float(v) for k, v in raw.items()}

        return await self._call(remote, self.local.latencies)

    # budgets ----------------------------------------------------------------------------------------------------
    async def take_escalation(self, tenant: str, per_minute: int | None, per_day: int | None, now: float) -> bool:
        async def remote() -> bool:
            keys = [self._k(f"esc:m:{tenant}:{minute_bucket(now)}"), self._k(f"esc:d:{tenant}:{day_bucket(now)}")]
            args = [-1 if per_minute is None else per_minute, -1 if per_day is None else per_day]
            return bool(await self._escalate(keys=keys, args=args))

        return await self._call(remote, lambda: self.local.take_escalation(tenant, per_minute, per_day, now))

    async def add_cost(self, tenant: str, amount: float, now: float) -> float:
        async def remote() -> float:
            key = self._k(f"cost:{tenant}:{day_bucket(now)}")
            pipe = self._r.pipeline(transaction=True)
            pipe.incrbyfloat(key, amount)
            pipe.expire(key, 2 * _DAY_S)
            total, _ = await pipe.execute()
            return float(total)

        return await self._call(remote, lambda: self.local.add_cost(tenant, amount, now))

    async def cost_spent(self, tenant: str, now: float) -> float:
        async def remote() -> float:
            v = await self._r.get(self._k(f"cost:{tenant}:{day_bucket(now)}"))
            return float(v) if v is not None else 0.0

        return await self._call(remote, lambda: self.local.cost_spent(tenant, now))

    # rate limits ------------------------------------------------------------------------------------------------
    async def take_tokens(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        if cost > burst:
            return float("inf")  # never: no round trip needed to say so
        # a tenant's bucket is named before the request is validated: a long name is stored by its hash
        name = key if len(key) <= 160 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()

        async def remote() -> float:
            return float(await self._take_tokens(keys=[self._k("rl:" + name)],
                                                 args=[repr(float(cost)), repr(float(rate_per_s)),
                                                       repr(float(burst))]))

        return await self._call(remote, lambda: self.local.take_tokens(key, cost, rate_per_s, burst))

    # cache, conversations, reports ------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        async def remote() -> bytes | None:
            v: Any = await self._r.get(self._k("cache:" + key))
            return v if isinstance(v, bytes) else None

        return await self._call(remote, lambda: self.local.cache_get(key))

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        async def remote() -> None:
            await self._r.set(self._k("cache:" + key), value, px=max(1, int(ttl_s * 1000)))

        await self._call(remote, lambda: self.local.cache_put(key, value, ttl_s))

    async def conversation_get(self, conversation: str) -> str | None:
        async def remote() -> str | None:
            v: Any = await self._r.get(self._k("conv:" + conversation))
            return v.decode() if v is not None else None

        return await self._call(remote, lambda: self.local.conversation_get(conversation))

    async def conversation_set(self, conversation: str, model: str, ttl_s: float) -> None:
        async def remote() -> None:
            await self._r.set(self._k("conv:" + conversation), model, px=max(1, int(ttl_s * 1000)))

        await self._call(remote, lambda: self.local.conversation_set(conversation, model, ttl_s))

    async def first_report(self, request_id: str, ttl_s: float) -> bool:
        async def remote() -> bool:
            return bool(await self._r.set(self._k("out:" + request_id), b"1", nx=True, px=int(ttl_s * 1000)))

        return await self._call(remote, lambda: self.local.first_report(request_id, ttl_s))

    async def remember_request(self, request_id: str, record: str, ttl_s: float) -> None:
        async def remote() -> None:
            await self._r.set(self._k("req:" + request_id), record, px=int(ttl_s * 1000))

        await self._call(remote, lambda: self.local.remember_request(request_id, record, ttl_s))

    async def recall_request(self, request_id: str) -> str | None:
        async def remote() -> str | None:
            v: Any = await self._r.get(self._k("req:" + request_id))
            return v.decode() if v is not None else None

        return await self._call(remote, lambda: self.local.recall_request(request_id))

    async def close(self) -> None:
        await self._r.aclose()
