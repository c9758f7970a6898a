"""The decision cache: identical normalised text + the metadata the policy reads + options + bundle version -> the
same decision, without encoding. A bounded LRU with a TTL in this process, in front of the shared store when
replicas share one (Redis). Entries name the bundle version in their key, so a reload can never serve a decision of
the previous bundle; the local LRU is emptied on reload too (``clear``), and shared entries of an old version
expire by their TTL."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from .local import Expiring
from .store import StateStore


def normalise(text: str) -> str:
    # The encoder's tokenizer lower-cases and splits on whitespace, so these variants encode identically.
    return " ".join(text.split()).lower()


def cache_key(
    text: str, *, version: str, tenant: str, tier: str, options: tuple[object, ...], exact: bool = False
) -> str:
    """``exact``: key on the text as sent (when rules read it: case-sensitive patterns, lengths)."""
    parts = [version, tenant, tier, repr(options), text if exact else normalise(text)]
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=20).hexdigest()


class DecisionCache:
    def __init__(
        self, *, size: int, ttl_s: float, shared: StateStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._local = Expiring(size)
        self._ttl = ttl_s
        self._shared = shared
        self._clock = clock
        self.hits = 0
        self.lookups = 0

    @property
    def ratio(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    async def get(self, key: str) -> bytes | None:
        self.lookups += 1
        v = self._local.get(key, self._clock())
        if v is None and self._shared is not None:
            v = await self._shared.cache_get(key)
            if v is not None:  # the replica's TTL is not known here: keep it locally for at most our own
                self._local.put(key, v, self._clock() + self._ttl)
        if isinstance(v, bytes):
            self.hits += 1
            return v
        return None

    async def put(self, key: str, value: bytes) -> None:
        self._local.put(key, value, self._clock() + self._ttl)
        if self._shared is not None:
            await self._shared.cache_put(key, value, self._ttl)

    def clear(self) -> None:
        self._local.data.clear()

    def __len__(self) -> int:
        return len(self._local.data)
