"""Which RPC is alone: the signal the batcher's inline path needs (server/batcher.py).

A handler cannot count the RPCs gRPC has accepted but not yet handed to it: grpc.aio reads a call's request message
(a round trip through its completion-queue thread) before the handler runs, so in ``RouterService.in_flight`` a
burst shows up one call at a time. Interceptors run earlier, as soon as a call is accepted. ``Arrivals`` is the
first interceptor: it numbers each accepted call and leaves the number in the call's context, so the handler can
tell whether any call was accepted after its own. Cost: one extra coroutine per RPC (a few microseconds).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

_ACCEPTED: contextvars.ContextVar[int] = contextvars.ContextVar("semroute_accepted", default=-1)


class Arrivals(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.count = 0

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        self.count += 1
        _ACCEPTED.set(self.count)  # the call's own task: its handler runs in this context
        return await continuation(details)

    def latest(self) -> bool:
        """Whether the calling RPC is the last one accepted (False outside an RPC this interceptor saw)."""
        return _ACCEPTED.get() == self.count
