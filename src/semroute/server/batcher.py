"""Dynamic micro-batching: concurrent requests share one encoder call.

One dedicated worker thread runs the encoder (never the event loop's thread). While it works, new requests queue;
when it is free it takes everything queued, up to ``max_batch_size``, and, if ``max_wait_us`` > 0 and the batch is
not full, waits at most that long for more. With ``max_wait_us = 0`` (the default) a lone request is never delayed:
batches form only from requests that arrived while the encoder was busy. The encoder is batch-invariant, so a
query's decision does not depend on its batch.

Why a dedicated thread rather than ``loop.run_in_executor``: a request should cross threads once each way. The
event loop puts it on a thread-safe queue the worker is blocked on, and the worker hands the finished batch back
with one ``loop.call_soon_threadsafe``. With an asyncio queue, a batcher task and an executor, the same trip took
three extra event-loop callbacks and an executor round trip, and every extra wake-up is a chance to wait for a
core on a busy machine.

Alone, a request skips even that crossing (``inline_when_idle``, on in the server): when the worker is idle, nothing
is queued, the service says no other RPC is in flight or was accepted around this one (``alone``, see
``server/arrivals.py``) and none has contended for the encoder in the last ``CONTENDED_S``, a single query is encoded
on the event loop's thread, where it already is. A thread crossing is a wake-up, and a wake-up costs what the
scheduler makes it cost: without gRPC, Route's handler measured +0.5 ms over Router.route inline against +2.8 ms
through the worker on a loaded machine (load 8, 2 cores). The loop is then blocked for one query's encoding (~2 ms
for a short one), which is the time another RPC arriving meanwhile waits before it is read; once two requests
overlap, the worker takes over for at least ``CONTENDED_S``, so concurrent traffic is batched as before and the loop
stays free for it.

Admission control: past ``max_queue`` queued queries, ``submit_many`` raises OverloadedError at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..errors import OverloadedError, UnavailableError
from ..index import set_threads
from ..router import Router
from ..scoring import Decision

_Result = tuple[Decision, int]  # (decision with its queue time, size of the batch it was encoded in)


@dataclass
class _Item:
    text: str
    top_scores: int
    top_neighbours: int
    future: asyncio.Future[_Result]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


_STOP = None  # sentinel on the queue: the worker exits
# After two requests overlapped (or a batch went to the worker), how long every request goes through the worker
# before one may be encoded inline again. Under concurrency the worker sees contention continuously, so this only
# decides how soon a server that became quiet returns to the inline path.
CONTENDED_S = 0.05
# Turns of the event loop a lone-looking request yields before it is encoded inline. A call gRPC accepted meanwhile
# needs four to show itself (its completion is read, the server's accept loop runs, its task is made, the task runs
# the Arrivals interceptor): measured at concurrency 32 from idle, 200 queries a run, 3 runs each: with 1 or 2
# turns 4-77% of the queries went inline one by one, with 3 3-6%, with 4 only the first. Five for a margin; each
# costs a few microseconds (an epoll with timeout 0).
_PROBE_TURNS = 5


class MicroBatcher:
    def __init__(
        self,
        get_router: Callable[[], Router],
        *,
        max_batch_size: int = 32,
        max_wait_us: int = 0,
        max_queue: int = 1024,
        on_batch: Callable[[int], None] | None = None,
        inline_when_idle: bool = False,
    ) -> None:
        if max_batch_size < 1 or max_wait_us < 0 or max_queue < 1:
            raise ValueError("max_batch_size >= 1, max_wait_us >= 0 and max_queue >= 1 are required")
        self._get_router = get_router
        self.max_batch_size = max_batch_size
        self.max_wait_us = max_wait_us
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.inline_when_idle = inline_when_idle
        self._busy = False  # the worker holds a batch (written by the worker, read on the loop: a hint)
        self._contended_until = 0.0  # loop time before which no request is encoded inline
        self.inline_batches = 0  # queries encoded on the loop's thread (each its own batch of one)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.inline_when_idle:
            set_threads(1)  # per thread, as in the worker: FAISS on the loop's thread must not spin up OpenMP
        self._thread = threading.Thread(target=self._work, name="semroute-encoder", daemon=True)
        self._thread.start()

    async def submit_many(
        self, texts: list[str], top_scores: int, top_neighbours: int, *, alone: Callable[[], bool] | None = None
    ) -> list[_Result]:
        """Queue texts; returns (decision with queue time, batch size) for each. Raises OverloadedError.
        ``alone``: whether no other RPC is in flight or was accepted since the caller's; with it, a single text
        may be encoded inline when the encoder is idle (module docstring)."""
        if self._closed:
            raise UnavailableError("server is shutting down")
        if self._queue.qsize() + len(texts) > self.max_queue:
            raise OverloadedError(
                f"{self._queue.qsize()} queries queued (limit {self.max_queue}); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        if alone is not None and len(texts) == 1 and self._idle(loop):
            # a few turns of the loop first (no waiting: ready I/O is polled with timeout 0): a call gRPC has
            # accepted meanwhile needs about that many (its completion is read, the server's accept loop makes
            # its task, the task runs the Arrivals interceptor) to announce itself
            for _ in range(_PROBE_TURNS):
                await asyncio.sleep(0)
            if alone() and self._idle(loop):
                return [self._inline(texts[0], top_scores, top_neighbours)]
        if self.inline_when_idle:
            self._contended_until = loop.time() + CONTENDED_S
        items = [_Item(t, top_scores, top_neighbours, loop.create_future()) for t in texts]
        for it in items:
            self._queue.put(it)
        try:
            if len(items) == 1:  # the common case: skip gather's extra future and callback
                return [await items[0].future]
            return list(await asyncio.gather(*(it.future for it in items)))
        except asyncio.CancelledError:
            for it in items:  # deadline passed or client went away: do not encode for nobody
                it.future.cancel()
            raise

    def _idle(self, loop: asyncio.AbstractEventLoop) -> bool:
        return (self.inline_when_idle and not self._busy and self._queue.empty()
                and loop.time() >= self._contended_until)

    def _inline(self, text: str, top_scores: int, top_neighbours: int) -> _Result:
        """On the loop's thread: the same call the worker makes for a batch of one (batch invariance), so the
        decision is the worker's; its queue time is 0."""
        self.inline_batches += 1
        (d,) = self._get_router().semantic_batch([text], top_scores=top_scores, top_neighbours=top_neighbours)
        if self._on_batch:
            self._on_batch(1)
        return d, 1

    # --- the worker thread ---------------------------------------------------------------------------------

    def _collect(self, first: _Item) -> list[_Item]:
        batch = [first]
        try:
            while len(batch) < self.max_batch_size:
                it = self._queue.get_nowait()
                if it is _STOP:
                    self._queue.put(_STOP)  # let the loop in _work see it after this batch
                    break
                batch.append(it)
        except queue.Empty:
            pass
        if self.max_wait_us and len(batch) < self.max_batch_size:
            deadline = time.perf_counter() + self.max_wait_us / 1e6
            while len(batch) < self.max_batch_size:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    it = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if it is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(it)
        # Reading done() from this thread is a benign race: a future cancelled after this check is encoded for
        # nothing, and _deliver (on the loop) checks again before setting a result.
        return [it for it in batch if not it.future.done()]

    def _work(self) -> None:
        set_threads(1)  # OpenMP settings are per thread: FAISS here would otherwise use every core and spin
        assert self._loop is not None
        loop = self._loop
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            self._busy = True
            batch = self._collect(first)
            if not batch:
                self._busy = False
                continue
            router = self._get_router()  # the bundle serving now; a reload swaps it between batches
            start = time.perf_counter_ns()
            try:
                decisions = router.semantic_batch(
                    [it.text for it in batch],
                    top_scores=max(it.top_scores for it in batch),
                    top_neighbours=max(it.top_neighbours for it in batch),
                )
            except Exception as e:  # deliver the error to every waiter; the worker keeps serving
                self._busy = False
                self._post(loop, batch, e)
                continue
            results = [
                (
                    replace(
                        d,
                        scores=d.scores[: it.top_scores],
                        neighbours=d.neighbours[: it.top_neighbours],
                        timings=replace(d.timings, queue_ns=start - it.enqueued_ns),
                    ),
                    len(batch),
                )
                for it, d in zip(batch, decisions, strict=True)
            ]
            self._busy = False
            self._post(loop, batch, results)

    def _post(self, loop: asyncio.AbstractEventLoop, batch: list[_Item], out: list[_Result] | Exception) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(self._deliver, batch, out)

    def _deliver(self, batch: list[_Item], out: list[_Result] | Exception) -> None:
        """On the event loop: answer every waiter of one batch."""
        if self._on_batch and not isinstance(out, Exception):
            self._on_batch(len(batch))
        for i, it in enumerate(batch):
            if it.future.done():
                continue
            if isinstance(out, Exception):
                it.future.set_exception(out)
            else:
                it.future.set_result(out[i])

    async def close(self) -> None:
        """Stop taking requests, let the worker finish its batch, fail whatever is still queued."""
        self._closed = True
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        while True:
            try:
                it = self._queue.get_nowait()
            except queue.Empty:
                break
            if it is not None and not it.future.done():
                it.future.set_exception(UnavailableError("server is shutting down"))
