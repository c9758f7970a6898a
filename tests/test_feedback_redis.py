"""Two `semroute serve --state redis://...` processes sharing one real redis-server: escalation budgets hold
across both, breakers are shared, killing Redis mid-load fails no request, and after Redis restarts both share
state again."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from feedback_fixtures import CODING, SMALLTALK
from server_harness import start_subprocess

from semroute.client import RouterClient
from semroute.scoring import Decision, Reason

pytestmark = pytest.mark.slow


@pytest.fixture()
def replicas(feedback_bundle: Path, redis_server) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    procs: list[subprocess.Popen[str]] = []
    targets = []
    try:
        for _ in range(2):
            proc, port = start_subprocess(feedback_bundle, "--state", redis_server.url, "--no-watch")
            procs.append(proc)
            targets.append(f"127.0.0.1:{port}")
        yield targets[0], targets[1]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate(timeout=10)


def _excluded(d: Decision, model: str) -> bool:
    """The policy's trace says ``model`` was excluded for its open breaker."""
    return any(t.kind == "excluded" and t.subject == model and "circuit breaker" in t.detail for t in d.trace)


def _open_breaker(client: RouterClient, model: str) -> None:
    for _ in range(5):
        client.report_outcome(uuid.uuid4().hex, model, "error")


def test_two_replicas_share_budgets_breakers_and_survive_a_redis_outage(replicas, redis_server) -> None:  # type: ignore[no-untyped-def]
    a, b = RouterClient(replicas[0]), RouterClient(replicas[1])
    try:
        assert a.info().state_store == redis_server.url and a.info().state_store_up

        # 1. a budget of 3 escalations a day, 24 concurrent asks spread over both replicas: at most 3 (+1) escalate
        def ask(i: int) -> Reason:
            c = a if i % 2 else b
            return c.route(CODING, tenant="shared", escalate_from="small-chat", confidence=0.1).reason

        with ThreadPoolExecutor(8) as pool:
            reasons = list(pool.map(ask, range(24)))
        escalated = reasons.count(Reason.ESCALATED)
        assert 3 <= escalated <= 4, reasons
        assert reasons.count(Reason.ESCALATION_BUDGET_EXHAUSTED) == 24 - escalated

        # 2. a breaker opened through one replica is seen by the other (its snapshot is at most 0.1 s old)
        _open_breaker(a, "code-medium")
        time.sleep(0.2)
        d = b.route(CODING)
        assert d.model == "small-chat" and _excluded(d, "code-medium")

        # 3. kill Redis under load: every request still answered
        errors: list[BaseException] = []
        done = 0
        stop = threading.Event()

        def load(c: RouterClient) -> None:
            nonlocal done
            deadline = time.monotonic() + 20
            n = 0
            while not stop.is_set() and time.monotonic() < deadline and n < 400:
                try:
                    c.route(f"{SMALLTALK} {n % 7}", conversation_id=f"c{n % 5}", request_id=uuid.uuid4().hex)
                    c.report_outcome(uuid.uuid4().hex, "small-chat", "ok", latency_ms=20)
                    done += 1
                except BaseException as e:  # any failure is the test's failure
                    errors.append(e)
                n += 1

        threads = [threading.Thread(target=load, args=(c,)) for c in (a, b, a, b)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        redis_server.stop()
        time.sleep(1.5)
        assert not a.info().state_store_up
        redis_server.start()  # same port, empty
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(60)
        assert errors == [] and done > 0

        # 4. Redis is back (empty): after their retry interval both replicas share state again
        time.sleep(1.2)
        a.route(SMALLTALK)
        b.route(SMALLTALK)  # the first call after the retry interval reconnects and resyncs
        assert a.info().state_store_up and b.info().state_store_up
        _open_breaker(b, "math-reasoner")
        time.sleep(0.2)
        d = a.route("what is the derivative of x^2 ln x")
        assert d.model == "small-chat" and _excluded(d, "math-reasoner")
        assert ("math-reasoner", "open") in [(x.key, x.state) for x in a.info().breakers]
    finally:
        a.close()
        b.close()
