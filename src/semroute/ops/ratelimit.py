"""Rate limits: a token bucket per API key (or per tenant), behind a small store interface.

    limiter = RateLimiter(MemoryBucketStore(), rate_per_s=10, burst=20)
    wait = await limiter.take("key:3f9a0c1b2d4e", cost=1)   # 0.0: allowed; else seconds until it would be

The in-process store serves one replica. Replicas that share a limit take their tokens from the runtime state
store (``StateBuckets``: with ``--state redis://...`` the same arithmetic runs atomically in a Lua script on Redis,
on Redis's clock; while Redis is unreachable each replica counts locally). The limiter does not care which it has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..runtime.buckets import MemoryBucketStore

if TYPE_CHECKING:
    from ..runtime.store import StateStore

__all__ = ["BucketStore", "MemoryBucketStore", "RateLimiter", "StateBuckets"]


class BucketStore(Protocol):
    async def take(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them (and return 0.0); otherwise take nothing and
        return the seconds until it will (``inf`` if ``cost`` exceeds ``burst``)."""
        ...


class StateBuckets:
    """The buckets of a runtime state store (``StateStore.take_tokens``): shared by every replica on the same
    Redis, with the store's failover (local buckets while Redis is down, one log line per transition, the
    ``semroute_state_store_up`` gauge)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def take(self, key: str, cost: float, rate_per_s: float, burst: float) -> float:
        return await self.store.take_tokens(key, cost, rate_per_s, burst)


class RateLimiter:
    def __init__(self, store: BucketStore, *, rate_per_s: float, burst: float) -> None:
        self.store = store
        self.rate_per_s = rate_per_s
        self.burst = burst

    async def take(self, bucket: str, cost: float, *, rate_per_s: float | None = None,
                   burst: float | None = None) -> float:
        return await self.store.take(bucket, cost, rate_per_s or self.rate_per_s, burst or self.burst)
