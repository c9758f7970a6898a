"""Token buckets in process: the arithmetic every bucket store shares (rate limits, semroute.ops.ratelimit).

    buckets = MemoryBucketStore()
    wait = buckets.take_now("key:3f9a0c1b2d4e", 1, rate_per_s=10, burst=20)  # 0.0: taken; else seconds to wait

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; a take of ``cost`` succeeds when the bucket
holds that many. The Redis store runs the same arithmetic in one Lua script (redis_store.py, ``_TAKE_TOKENS``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryBucketStore:
    """Buckets in a dict, least recently used evicted past ``max_keys`` (an evicted bucket restarts full, which
    only ever errs towards allowing). The clock is monotonic: buckets are local to this process."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_keys
        self._clock = clock

    async def take(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        return self.take_now(key, cost, rate_per_s, burst)

    def take_now(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        """Take ``cost`` tokens if the bucket holds them (0.0); else take nothing and return the seconds until it
        will (``inf`` when ``cost`` exceeds ``burst``: it never will)."""
        if cost > burst:
            return float("inf")
        now = self._clock()
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - last) * rate_per_s)
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

    def __len__(self) -> int:
        return len(self._buckets)
