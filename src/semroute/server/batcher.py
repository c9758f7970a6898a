"""Dynamic micro-batching: concurrent requests share one encoder call.

One worker thread runs the encoder (never the event loop's thread). While it works, new requests queue; when it
is free it takes everything queued, up to ``max_batch_size``, and, if ``max_wait_us`` > 0 and the batch is not
full, waits at most that long for more. With ``max_wait_us = 0`` (the default) a lone request is never delayed:
batches form only from requests that arrived while the encoder was busy. The encoder is batch-invariant, so a
query's decision does not depend on its batch.

Admission control: past ``max_queue`` queued queries, ``submit`` raises OverloadedError at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial

from ..errors import OverloadedError, UnavailableError
from ..index import set_threads
from ..router import Router
from ..scoring import Decision


@dataclass
class _Item:
    text: str
    top_scores: int
    top_neighbours: int
    future: asyncio.Future[tuple[Decision, int]]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


class MicroBatcher:
    def __init__(
        self,
        get_router: Callable[[], Router],
        *,
        max_batch_size: int = 32,
        max_wait_us: int = 0,
        max_queue: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_wait_us < 0 or max_queue < 1:
            raise ValueError("max_batch_size >= 1, max_wait_us >= 0 and max_queue >= 1 are required")
        self._get_router = get_router
        self.max_batch_size = max_batch_size
        self.max_wait_us = max_wait_us
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        # OpenMP settings are per thread: FAISS in this worker would otherwise use every core and spin
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="semroute-encoder", initializer=set_threads, initargs=(1,)
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="semroute-batcher")

    async def submit_many(self, texts: list[str], top_scores: int, top_neighbours: int) -> list[tuple[Decision, int]]:
        """Queue texts; returns (decision with queue time, batch size) for each. Raises OverloadedError."""
        if self._closed:
            raise UnavailableError("server is shutting down")
        if self._queue.qsize() + len(texts) > self.max_queue:
            raise OverloadedError(
                f"{self._queue.qsize()} queries queued (limit {self.max_queue}); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        items = [_Item(t, top_scores, top_neighbours, loop.create_future()) for t in texts]
        for it in items:
            self._queue.put_nowait(it)
        try:
            return list(await asyncio.gather(*(it.future for it in items)))
        except asyncio.CancelledError:
            for it in items:  # deadline passed or client went away: do not encode for nobody
                it.future.cancel()
            raise

    async def _collect(self) -> list[_Item]:
        batch = [await self._queue.get()]
        while len(batch) < self.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if self.max_wait_us and len(batch) < self.max_batch_size:
            deadline = time.perf_counter() + self.max_wait_us / 1e6
            while len(batch) < self.max_batch_size:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
        return [it for it in batch if not it.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            router = self._get_router()  # the bundle serving now; a reload swaps it between batches
            texts = [it.text for it in batch]
            top_s = max(it.top_scores for it in batch)
            top_n = max(it.top_neighbours for it in batch)
            start = time.perf_counter_ns()
            try:
                decisions = await loop.run_in_executor(
                    self._executor, partial(router.route_batch, texts, top_scores=top_s, top_neighbours=top_n)
                )
            except Exception as e:  # deliver the error to every waiter; the loop keeps serving
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            if self._on_batch:
                self._on_batch(len(batch))
            for it, d in zip(batch, decisions, strict=True):
                if it.future.done():
                    continue
                d = replace(
                    d,
                    scores=d.scores[: it.top_scores],
                    neighbours=d.neighbours[: it.top_neighbours],
                    timings=replace(d.timings, queue_ns=start - it.enqueued_ns),
                )
                it.future.set_result((d, len(batch)))

    async def close(self) -> None:
        self._closed = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)
