"""Which RPC is alone: the signal the batcher's inline path needs (server/batcher.py).

A handler cannot count the RPCs gRPC has accepted but not yet handed to it: grpc.aio reads a call's request message
(a round trip through its completion-queue thread) before the handler runs, so in ``RouterService.in_flight`` a
burst shows up one call at a time. Interceptors run earlier, as soon as a call is accepted. ``Arrivals`` is the
first interceptor: it numbers each accepted call and leaves the number in the call's context, so the handler can
tell whether any call was accepted after its own, and when its own was accepted. Cost: one extra coroutine per RPC
(a few microseconds).

Why the time: a call accepted while another was still in its handler, or within ``QUIET_GAP_S`` of its end, came
while the server was busy (a client that waited for the previous answer needs at least a network round trip, ~0.4 ms
here, to send its next call), so it counts as contended even if the other call has finished by the time it asks
(``RouterService._alone``). Calls accepted just after the caller are caught by the batcher's probe turns instead
(``batcher._PROBE_TURNS``): while a lone query is encoded inline the loop is blocked and gRPC's core holds new calls
unseen, and without those turns a burst from idle was accepted one call at a time, each looking alone (measured at
concurrency 32, 200 queries a run: up to 77% of them encoded inline one by one, mean batch 4.5 instead of ~17).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

_ACCEPTED: contextvars.ContextVar[tuple[int, float]] = contextvars.ContextVar("semroute_accepted",
                                                                              default=(-1, 0.0))
QUIET_GAP_S = 0.00025


class Arrivals(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.count = 0

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        self.count += 1
        _ACCEPTED.set((self.count, time.perf_counter()))  # the call's own task: its handler runs in this context
        return await continuation(details)

    def accepted_alone(self, previous_end: float) -> bool:
        """Whether the calling RPC is the last one accepted, and was accepted at least QUIET_GAP_S after
        ``previous_end`` (perf_counter seconds: when the RPC before it finished). False outside an RPC this
        interceptor saw."""
        seq, at = _ACCEPTED.get()
        return seq == self.count and at - previous_end >= QUIET_GAP_S
