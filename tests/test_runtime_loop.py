"""The feedback loop's logic with the in-process store and an injected clock (fast; no encoder, no server)."""

from __future__ import annotations

import asyncio

import pytest

from semroute.routes import ModelSpec
from semroute.runtime.local import InProcessStore
from semroute.runtime.loop import Escalate, FeedbackLoop, Outcome
from semroute.runtime.settings import FeedbackSpec
from semroute.scoring import Reason

MODELS = {
    "small": ModelSpec(cost_per_1k_input=0.1, cost_per_1k_output=0.1),
    "mid": ModelSpec(cost_per_1k_input=1.0, cost_per_1k_output=1.0),
    "big": ModelSpec(cost_per_1k_input=10.0, cost_per_1k_output=10.0),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make(spec: dict | None = None) -> tuple[FeedbackLoop, Clock]:  # type: ignore[type-arg]
    clock = Clock()
    loop = FeedbackLoop(InProcessStore(), clock=clock)
    loop.configure("v1", FeedbackSpec.model_validate(spec or {}), MODELS, "big")
    return loop, clock


def fail(loop: FeedbackLoop, model: str, n: int, endpoint: str = "") -> None:
    for i in range(n):
        asyncio.run(loop.report(Outcome(f"{model}{endpoint}{i}{loop._clock()}", model, endpoint, "error", 10, 0, 0)))


def test_default_ladder_is_by_price_and_open_breakers_fall_up_the_ladder() -> None:
    loop, clock = make({"breaker": {"failures": 2, "cooldown_s": 10}})
    assert loop._ladder == ["small", "mid", "big"]
    fail(loop, "small", 2)
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant=""))
    assert (c.model, c.reason) == ("mid", Reason.BREAKER_OPEN)
    fail(loop, "mid", 2)
    fail(loop, "big", 2)
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant=""))
    assert c.model == "small" and "every candidate is open" in c.trace[-1]
    assert loop.view()[0] == {m: "circuit breaker open" for m in MODELS}
    clock.now += 10
    assert loop.view()[0]  # the view is a snapshot: refreshed on the Route path
    asyncio.run(loop.refresh())
    assert loop.view()[0] == {}  # half-open: not excluded (probes are taken in choose)


def test_escalation_budget_per_minute_resets_next_minute() -> None:
    loop, clock = make({"budgets": {"default": {"escalations_per_minute": 1, "escalations_per_day": None}}})
    clock.now = (clock.now // 60) * 60
    e = Escalate("small", 0.1)
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant="t", escalate=e))
    assert (c.model, c.reason) == ("mid", Reason.ESCALATED)
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant="t", escalate=e))
    assert (c.model, c.reason) == ("small", Reason.ESCALATION_BUDGET_EXHAUSTED)
    clock.now += 60
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant="t", escalate=e))
    assert c.reason == Reason.ESCALATED


def test_spent_cost_budget_refuses_escalation() -> None:
    loop, _ = make({"budgets": {"default": {"cost_per_day": 1.0}}})
    asyncio.run(loop.report(Outcome("r1", "big", "", "ok", 100, 50, 50, tenant="t")))  # 1.0 spent
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant="t",
                                escalate=Escalate("small", 0.0)))
    assert (c.model, c.reason) == ("small", Reason.COST_BUDGET_EXHAUSTED)


def test_sticky_only_escalates_and_endpoint_by_latency() -> None:
    loop, _ = make({"endpoints": {"mid": ["a", "b"]}})
    c = asyncio.run(loop.choose(route="r", model="mid", reason=Reason.MATCHED, tenant="", conversation="c"))
    assert (c.model, c.endpoint) == ("mid", "a")  # nothing measured: declared order
    asyncio.run(loop.report(Outcome("x1", "mid", "a", "ok", 300, 0, 0)))
    asyncio.run(loop.report(Outcome("x2", "mid", "b", "ok", 100, 0, 0)))
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant="", conversation="c"))
    assert (c.model, c.reason, c.endpoint) == ("mid", Reason.STICKY, "b")
    c = asyncio.run(loop.choose(route="r", model="big", reason=Reason.MATCHED, tenant="", conversation="c"))
    assert (c.model, c.reason) == ("big", Reason.MATCHED)
    assert loop.view()[1] == {"mid": 100.0}


def test_cache_is_opt_in_bounded_and_emptied_on_reload() -> None:
    loop, _ = make()
    assert loop.cache is None  # not declared: no cache
    loop, _ = make({"cache": {"enabled": True, "size": 2, "ttl_s": 60}})
    cache = loop.cache
    assert cache is not None

    async def fill() -> None:
        for k in ("a", "b", "c"):
            await cache.put(k, b"d")
        assert await cache.get("a") is None and await cache.get("c") == b"d"  # bounded: the oldest went

    asyncio.run(fill())
    loop.configure("v2", loop.spec, MODELS, "big")  # a reload
    assert loop.cache is not None and len(loop.cache) == 0 and len(cache) == 0


@pytest.mark.parametrize("url", ["memcached://h:1", "redis://", "redis://h:notaport", "redis://h:1/x"])
def test_serve_refuses_a_bad_state_url_with_exit_2(tmp_path, url: str) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "semroute.cli", "serve", "--index", str(tmp_path), "--state", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "--state:" in r.stderr and "Traceback" not in r.stderr


def test_allowed_models_bound_escalation_stickiness_and_breakers() -> None:
    loop, _ = make({"breaker": {"failures": 1}})
    allowed = {"small", "big"}  # e.g. the policy excluded "mid" for this request
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant="",
                                escalate=Escalate("small", 0.0), allowed=allowed))
    assert (c.model, c.reason) == ("big", Reason.ESCALATED)  # skips the disallowed rung
    asyncio.run(loop.choose(route="r", model="mid", reason=Reason.MATCHED, tenant="", conversation="k"))
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant="", conversation="k",
                                allowed=allowed))
    assert c.model == "small" and "not allowed" in c.trace[0]  # the sticky model is not allowed here
    fail(loop, "small", 1)
    fail(loop, "big", 1)
    c = asyncio.run(loop.choose(route="r", model="small", reason=Reason.MATCHED, tenant="", allowed={"small"}))
    assert c.model == "small" and "every candidate is open" in c.trace[-1]  # never a model outside allowed


def test_spent_cost_budget_holds_to_the_cheapest_allowed_model() -> None:
    loop, _ = make({"budgets": {"default": {"cost_per_day": 1.0}}})
    c = asyncio.run(loop.choose(route="r", model="big", reason=Reason.MATCHED, tenant="t", allowed={"big", "mid"}))
    assert c.model == "big"  # nothing spent yet
    asyncio.run(loop.report(Outcome("r1", "big", "", "ok", 100, 50, 50, tenant="t")))  # 1.0 spent
    c = asyncio.run(loop.choose(route="r", model="big", reason=Reason.MATCHED, tenant="t", allowed={"big", "mid"}))
    assert (c.model, c.reason) == ("mid", Reason.COST_BUDGET_EXHAUSTED)  # never "small": not eligible here
    c = asyncio.run(loop.choose(route="r", model="big", reason=Reason.MATCHED, tenant="t"))
    assert c.model == "big"  # without the policy's eligible set nothing else is known to be eligible
