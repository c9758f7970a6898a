"""The runtime feedback loop through the real gRPC server, the real encoder and the in-process state store:
breakers route around a failing model and let it back after the cooldown, escalation climbs the ladder until the
tenant's budget is spent, cache hits return the identical decision, conversations stick and only escalate."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from feedback_fixtures import CODING, LEGAL, MATH, SUMMARY
from server_harness import InProcessServer

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.client import RouterClient
from semroute.errors import RequestError
from semroute.scoring import Reason
from semroute.server import ServeConfig

pytestmark = pytest.mark.slow
FALLBACK_Q = "what's the best way to learn to play the cello as an adult"


@pytest.fixture(scope="module")
def server(feedback_bundle: Path) -> Iterator[InProcessServer]:
    with InProcessServer(ServeConfig(index=feedback_bundle, port=0, watch=False)) as s:
        yield s


@pytest.fixture()
def client(server: InProcessServer) -> Iterator[RouterClient]:
    with RouterClient(server.target) as c:
        yield c


def rid() -> str:
    return uuid.uuid4().hex


def test_failing_model_is_routed_around_and_comes_back_after_cooldown(client: RouterClient) -> None:
    d = client.route(CODING)
    assert (d.route, d.model, d.reason) == ("coding", "code-medium", Reason.MATCHED)
    for i in range(5):
        r = client.report_outcome(rid(), "code-medium", "timeout" if i % 2 else "error", latency_ms=30_000)
    assert r.breaker == "open"
    # the policy sees the open breaker (RuntimeView) and takes the route's next eligible candidate
    d = client.route(CODING)
    assert (d.route, d.model) == ("coding", "small-chat")
    assert any(t.kind == "excluded" and t.subject == "code-medium" and "circuit breaker open" in t.detail
               for t in d.trace), d.trace
    assert [(b.key, b.state) for b in client.info().breakers] == [("code-medium", "open")]
    time.sleep(2.1)  # the cooldown: half-open, one probe
    d = client.route(CODING)
    assert d.model == "code-medium" and any("probe" in t for t in d.feedback_trace)
    d = client.route(CODING)  # the one probe is out: the others still go around it
    assert (d.model, d.reason) == ("small-chat", Reason.BREAKER_OPEN) and "no probe left" in d.feedback_trace[0]
    assert client.report_outcome(rid(), "code-medium", "ok", latency_ms=800).breaker == "closed"
    d = client.route(CODING)
    assert (d.model, d.reason) == ("code-medium", Reason.MATCHED)
    assert list(client.info().breakers) == []


def test_escalation_climbs_the_ladder_until_the_budget_is_spent(client: RouterClient) -> None:
    t = "esc-" + rid()[:8]
    d = client.route(CODING, tenant=t, escalate_from="small-chat", confidence=0.9)
    assert d.model == "small-chat" and d.reason != Reason.ESCALATED  # sure enough: kept
    d = client.route(CODING, tenant=t, escalate_from="small-chat", confidence=0.2)
    assert (d.model, d.reason) == ("code-medium", Reason.ESCALATED)
    d = client.route(CODING, tenant=t, escalate_from="code-medium", confidence=0.2)
    assert d.model == "code-medium" and "top of the ladder" in " ".join(d.feedback_trace)  # of coding's candidates
    # the ladder is the route's eligible candidates by price: legal goes from small-chat straight to frontier-large
    d = client.route(LEGAL, tenant=t, escalate_from="small-chat", confidence=0.3)
    assert (d.route, d.model, d.reason) == ("legal", "frontier-large", Reason.ESCALATED)
    d = client.route(CODING, tenant=t, escalate_from="small-chat", confidence=0.3)
    assert (d.model, d.reason) == ("code-medium", Reason.ESCALATED)  # the third of the day's 3
    d = client.route(CODING, tenant=t, escalate_from="small-chat", confidence=0.3)
    assert (d.model, d.reason) == ("small-chat", Reason.ESCALATION_BUDGET_EXHAUSTED)
    d = client.route(CODING, tenant="big", escalate_from="small-chat", confidence=0.3)
    assert d.reason == Reason.ESCALATED  # another tenant's budget (unlimited)


def test_cache_hit_returns_the_identical_decision(client: RouterClient, server: InProcessServer) -> None:
    text = f"translate 'good morning' into German please {rid()}"
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
        first = stub.Route(pb.RouteRequest(text=text)).decision
        again = stub.Route(pb.RouteRequest(text=text)).decision
        # the policy reads the text as sent (case-sensitive rules, lengths), so with a policy this is another key
        variant = stub.Route(pb.RouteRequest(text="  " + text.upper() + " ")).decision
        other_tenant = stub.Route(pb.RouteRequest(text=text, metadata=pb.RequestMetadata(tenant="x"))).decision
    assert not first.cached and again.cached and not variant.cached and not other_tenant.cached
    assert again.timings.encode_ns == 0 and again.timings.total_ns > 0  # nothing encoded; time still honest
    for m in (first, again):
        m.ClearField("timings")
        m.ClearField("cached")
    assert again == first


def test_conversation_sticks_and_only_escalates(client: RouterClient) -> None:
    c = "conv-" + rid()
    assert client.route(SUMMARY, conversation_id=c, user_tier="premium").model == "summarizer-long"
    # the standard tier's objective picks the cheaper small-chat; the conversation keeps its stronger model, an
    # eligible candidate of this route
    d = client.route(SUMMARY + " please", conversation_id=c)
    assert (d.model, d.reason) == ("summarizer-long", Reason.STICKY), d.feedback_trace
    assert client.route(SUMMARY + " please").model == "small-chat"  # other traffic is not affected
    d = client.route(CODING, conversation_id=c)  # code-medium: stronger, so the conversation moves up
    assert (d.model, d.reason) == ("code-medium", Reason.MATCHED)
    d = client.route(CODING + " in rust", conversation_id=c, user_tier="free")  # free: code-medium not allowed
    assert d.model == "small-chat" and "not allowed" in d.feedback_trace[0]  # never a model the policy forbids


def test_endpoint_with_the_lowest_observed_latency(client: RouterClient) -> None:
    d = client.route(FALLBACK_Q)
    assert d.model == "frontier-large" and d.endpoint in ("us-east", "eu-west")
    client.report_outcome(rid(), "frontier-large", endpoint="us-east", latency_ms=900)
    client.report_outcome(rid(), "frontier-large", endpoint="eu-west", latency_ms=150)
    assert client.route(FALLBACK_Q).endpoint == "eu-west"
    assert dict(client.info().latency_ms)["frontier-large@eu-west"] == pytest.approx(150)


def test_report_outcome_is_idempotent_and_counts_unknown_request_ids(client: RouterClient) -> None:
    known = rid()
    client.route(MATH, request_id=known, tenant="acme")
    r = client.report_outcome(known, "math-reasoner", tokens_in=100, tokens_out=50)
    assert (r.duplicate, r.known_request) == (False, True)
    assert client.report_outcome(known, "math-reasoner").duplicate
    r = client.report_outcome(rid(), "math-reasoner")
    assert (r.duplicate, r.known_request) == (False, False)  # accepted and counted


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"model": "no-such-model"}, "model"),
    ({"model": "frontier-large"}, "endpoint"),  # it declares endpoints: one must be named
    ({"model": "small-chat", "endpoint": "us-east"}, "endpoint"),
    ({"latency_ms": -1.0}, "latency_ms"),
    ({"latency_ms": float("nan")}, "latency_ms"),
    ({"tokens_in": -5}, "tokens_in"),
    ({"tokens_out": -1}, "tokens_out"),
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": -0.1}, "confidence"),
    ({"request_id": "x" * 129}, "request_id"),
    ({"request_id": ""}, "request_id"),
    ({"feedback": "no spaces allowed"}, "feedback"),
])
def test_bad_outcome_reports_name_the_field(client: RouterClient, kwargs: dict, field: str) -> None:  # type: ignore[type-arg]
    args = {"request_id": rid(), "model": "small-chat", **kwargs}
    with pytest.raises(RequestError) as e:
        client.report_outcome(args.pop("request_id"), args.pop("model"), **args)
    assert e.value.field == field


def test_bad_route_feedback_fields_name_the_field(server: InProcessServer) -> None:
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
        cases = [
            (pb.RouteRequest(text=CODING, metadata=pb.RequestMetadata(conversation_id="c" * 129)),
             "metadata.conversation_id"),
            (pb.RouteRequest(text=CODING, escalate=pb.Escalation(from_model="gpt-9", confidence=0.1)),
             "escalate.from_model"),
            (pb.RouteRequest(text=CODING, escalate=pb.Escalation(from_model="small-chat", confidence=2)),
             "escalate.confidence"),
        ]
        for req, field in cases:
            with pytest.raises(grpc.RpcError) as e:
                stub.Route(req)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert e.value.details().startswith(field + ":")
        with pytest.raises(grpc.RpcError) as e:
            stub.ReportOutcome(pb.ReportOutcomeRequest(request_id="r", model="small-chat"))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("outcome:")
