"""The micro-batcher on its own: a scripted router stands in for the encoder, so batching, errors, cancellation and
shutdown can be driven exactly (the server tests cover the same paths through real gRPC)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from semroute.errors import UnavailableError
from semroute.scoring import Decision, Reason
from semroute.server.batcher import MicroBatcher


class ScriptedRouter:
    """Answers each text with a decision naming it; blocks each batch until ``release`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_with: Exception | None = None

    def semantic_batch(self, texts: Sequence[str], *, top_scores: int = 5, top_neighbours: int = 3) -> list[Decision]:
        self.batches.append(list(texts))
        self.started.set()
        assert self.release.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        return [Decision(t, "m", 1.0, 0.5, False, Reason.MATCHED, 1.0, [], [], "v") for t in texts]


async def _started(router: ScriptedRouter) -> None:
    assert await asyncio.to_thread(router.started.wait, 10)


async def _busy(router: ScriptedRouter, text: str) -> tuple[MicroBatcher, asyncio.Future[list[tuple[Decision, int]]]]:
    """A started batcher whose worker is held inside the batch of ``text`` until ``router.release`` is set."""
    batcher = MicroBatcher(lambda: router)  # type: ignore[arg-type, return-value]
    batcher.start()
    router.release.clear()
    running = asyncio.ensure_future(batcher.submit_many([text], 5, 3))
    await _started(router)
    return batcher, running


def test_requests_arriving_while_the_encoder_works_share_one_batch() -> None:
    router = ScriptedRouter()

    async def run() -> list[tuple[Decision, int]]:
        batcher, first = await _busy(router, "a")  # the worker is busy with "a": the next five queue behind it
        rest = [asyncio.ensure_future(batcher.submit_many([t], 5, 3)) for t in "bcdef"]
        await asyncio.sleep(0.05)
        router.release.set()
        out = [(await first)[0]] + [(await r)[0] for r in rest]
        await batcher.close()
        return out

    out = asyncio.run(run())
    assert router.batches == [["a"], ["b", "c", "d", "e", "f"]]
    assert [d.route for d, _ in out] == list("abcdef")  # each waiter gets its own answer
    assert [b for _, b in out] == [1, 5, 5, 5, 5, 5]
    assert all(d.timings.queue_ns >= 0 for d, _ in out)


def test_an_error_reaches_every_waiter_and_the_worker_keeps_serving() -> None:
    router = ScriptedRouter()

    async def run() -> None:
        batcher = MicroBatcher(lambda: router)  # type: ignore[arg-type, return-value]
        batcher.start()
        router.fail_with = RuntimeError("encoder broke")
        with pytest.raises(RuntimeError, match="encoder broke"):
            await batcher.submit_many(["x", "y"], 5, 3)
        router.fail_with = None
        ((d, _),) = await batcher.submit_many(["z"], 5, 3)
        assert d.route == "z"
        await batcher.close()

    asyncio.run(run())


def test_a_cancelled_request_is_not_encoded() -> None:
    router = ScriptedRouter()

    async def run() -> None:
        batcher, busy = await _busy(router, "busy")
        gone = asyncio.ensure_future(batcher.submit_many(["gone"], 5, 3))
        kept = asyncio.ensure_future(batcher.submit_many(["kept"], 5, 3))
        await asyncio.sleep(0.01)
        gone.cancel()  # e.g. the client's deadline passed while it queued
        await asyncio.sleep(0.01)
        router.release.set()
        await busy
        assert (await kept)[0][0].route == "kept"
        with pytest.raises(asyncio.CancelledError):
            await gone
        await batcher.close()

    asyncio.run(run())
    assert ["gone"] not in router.batches and all("gone" not in b for b in router.batches)


def test_close_finishes_the_running_batch_then_refuses_new_requests() -> None:
    router = ScriptedRouter()

    async def run() -> None:
        batcher, running = await _busy(router, "running")
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        with pytest.raises(UnavailableError):
            await batcher.submit_many(["late"], 5, 3)
        router.release.set()
        await closing
        assert (await running)[0][0].route == "running"

    asyncio.run(run())


class ThreadRecordingRouter(ScriptedRouter):
    """Also records which thread ran each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def semantic_batch(self, texts: Sequence[str], *, top_scores: int = 5, top_neighbours: int = 3) -> list[Decision]:
        self.threads.append(threading.current_thread().name)
        return super().semantic_batch(texts, top_scores=top_scores, top_neighbours=top_neighbours)


def test_a_lone_query_is_encoded_inline_and_gets_the_same_answer() -> None:
    router = ThreadRecordingRouter()

    async def run() -> list[tuple[Decision, int]]:
        batcher = MicroBatcher(lambda: router, inline_when_idle=True)  # type: ignore[arg-type, return-value]
        batcher.start()
        alone = await batcher.submit_many(["a"], 5, 3, alone=lambda: True)
        unknown = await batcher.submit_many(["b"], 5, 3)  # no alone(): the caller cannot tell, so the worker
        await batcher.close()
        return alone + unknown

    out = asyncio.run(run())
    assert router.threads == [threading.main_thread().name, "semroute-encoder"]
    d, b = out[0]
    assert (d.route, b, d.timings.queue_ns) == ("a", 1, 0)
    assert out[1][0].route == "b"


def test_overlapping_requests_go_to_the_worker_and_keep_it_for_a_while() -> None:
    router = ThreadRecordingRouter()

    async def run() -> None:
        batcher = MicroBatcher(lambda: router, inline_when_idle=True)  # type: ignore[arg-type, return-value]
        batcher.start()
        await batcher.submit_many(["not alone"], 5, 3, alone=lambda: False)  # another RPC is in flight
        await batcher.submit_many(["alone, just after"], 5, 3, alone=lambda: True)  # contended moments ago
        await batcher.submit_many(["x", "y"], 5, 3, alone=lambda: True)  # several texts: a batch already
        await asyncio.sleep(0.06)  # CONTENDED_S later: quiet again
        await batcher.submit_many(["alone, later"], 5, 3, alone=lambda: True)
        await batcher.close()

    asyncio.run(run())
    assert router.batches == [["not alone"], ["alone, just after"], ["x", "y"], ["alone, later"]]
    assert router.threads == ["semroute-encoder"] * 3 + [threading.main_thread().name]


def test_no_inline_while_the_worker_is_busy() -> None:
    router = ThreadRecordingRouter()

    async def run() -> None:
        batcher = MicroBatcher(lambda: router, inline_when_idle=True)  # type: ignore[arg-type, return-value]
        batcher.start()
        await asyncio.sleep(0.06)
        router.release.clear()
        running = asyncio.ensure_future(batcher.submit_many(["a", "b"], 5, 3))
        await _started(router)
        batcher._contended_until = 0.0  # only the busy worker stands in the way now
        queued = asyncio.ensure_future(batcher.submit_many(["c"], 5, 3, alone=lambda: True))
        await asyncio.sleep(0.01)
        router.release.set()
        await running
        assert (await queued)[0][0].route == "c"
        await batcher.close()

    asyncio.run(run())
    assert router.threads == ["semroute-encoder"] * 2
