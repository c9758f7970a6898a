"""Rate limits: a token bucket per API key (or per tenant), behind a small store interface.

    limiter = RateLimiter(MemoryBucketStore(), rate_per_s=10, burst=20)
    wait = await limiter.take("key:3f9a0c1b2d4e", cost=1)   # 0.0: allowed; else seconds until it would be

The in-process store serves one replica. Replicas that share a limit need a shared store with the same
``take`` (the runtime-feedback state store, Redis, runs the same arithmetic atomically in a script); the
limiter does not care which it has.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol


class BucketStore(Protocol):
    async def take(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them (and return 0.0); otherwise take nothing and
        return the seconds until it will (``inf`` if ``cost`` exceeds ``burst``)."""
        ...


class MemoryBucketStore:
    """Buckets in a dict, least recently used evicted past ``max_keys`` (an evicted bucket restarts full, which
    only ever errs towards allowing)."""

    def __init__(self, max_keys: int = 100_000, clock: object = time.monotonic) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_keys
        self._clock = clock

    async def take(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        return self.take_now(key, cost, rate_per_s, burst)

    def take_now(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        if cost > burst:
            return float("inf")
        now: float = self._clock()  # type: ignore[operator]
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate_per_s)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (cost - tokens) / rate_per_s
        self._buckets.move_to_end(key)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


class RateLimiter:
    def __init__(self, store: BucketStore, *, rate_per_s: float, burst: float) -> None:
        self.store = store
        self.rate_per_s = rate_per_s
        self.burst = burst

    async def take(self, bucket: str, cost: float, *, rate_per_s: float | None = None,
                   burst: float | None = None) -> float:
        return await self.store.take(bucket, cost, rate_per_s or self.rate_per_s, burst or self.burst)
