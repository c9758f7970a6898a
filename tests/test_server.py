"""The real gRPC server on 127.0.0.1, with a real bundle (int8 encoder + FAISS over routes/)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from server_harness import InProcessServer, health_status

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.client import AsyncRouterClient, RouterClient
from semroute.errors import OverloadedError, RequestError
from semroute.server import ServeConfig


@pytest.fixture(scope="module")
def server(bundle_dir: Path):  # type: ignore[no-untyped-def]
    with InProcessServer(ServeConfig(index=bundle_dir, port=0, watch=False, max_text_chars=2000,
                                     max_batch_queries=16)) as s:
        yield s


@pytest.fixture()
def stub(server: InProcessServer):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.target) as ch:
        yield pb_grpc.RouterStub(ch)


def test_health_serving_and_info(server: InProcessServer, stub: pb_grpc.RouterStub, router) -> None:  # type: ignore[no-untyped-def]
    assert health_status(server.target) == health_pb2.HealthCheckResponse.SERVING
    info = stub.Info(pb.InfoRequest(), timeout=5)
    assert info.index_version == router.version
    assert {r.name for r in info.routes} >= {"coding", "billing", "medical"}
    assert info.fallback_model == "frontier-large"
    assert {m.name for m in info.models} >= {"small-chat", "frontier-large"}
    assert info.encoder_dim == 384 and info.encoder_max_tokens == 256 and len(info.encoder_fingerprint) == 64
    medical = next(r for r in info.routes if r.name == "medical")
    assert medical.tier == "sensitive" and medical.metadata["review"] == "clinical-safety"


def test_route_matches_in_process(stub: pb_grpc.RouterStub, router) -> None:  # type: ignore[no-untyped-def]
    text = "my card was charged twice this month"
    resp = stub.Route(pb.RouteRequest(text=text, metadata=pb.RequestMetadata(tenant="acme", request_id="r-1"),
                                      options=pb.RouteOptions(top_scores=2, top_neighbours=1)), timeout=5)
    d, local = resp.decision, router.route(text)
    assert resp.request_id == "r-1"
    assert d.route == local.route == "billing" and d.model == local.model
    assert d.reason == pb.REASON_MATCHED and not d.fallback
    assert abs(d.score - local.score) < 1e-6 and d.threshold == pytest.approx(local.threshold)
    assert len(d.scores) <= 2 and len(d.neighbours) == 1
    assert d.index_version == router.version
    assert d.timings.encode_ns > 0 and d.timings.total_ns >= d.timings.encode_ns and d.timings.batch_size >= 1


def test_fallback_has_no_route_field(stub: pb_grpc.RouterStub) -> None:
    d = stub.Route(pb.RouteRequest(text="qwzx vbnm plokij"), timeout=5).decision
    assert d.fallback and not d.HasField("route") and d.model == "frontier-large"
    assert d.reason in (pb.REASON_BELOW_THRESHOLD, pb.REASON_NO_MATCH)


def test_route_batch(stub: pb_grpc.RouterStub, router) -> None:  # type: ignore[no-untyped-def]
    texts = ["translate good night into French", "solve 2x + 3 = 11", "hello there!"]
    resp = stub.RouteBatch(pb.RouteBatchRequest(queries=[pb.Query(text=t) for t in texts]), timeout=5)
    assert [d.route for d in resp.decisions] == [router.route(t).route for t in texts]


def test_truncation_is_reported(stub: pb_grpc.RouterStub) -> None:
    d = stub.Route(pb.RouteRequest(text="please summarize this long text " * 60), timeout=5).decision
    assert d.truncated and d.n_tokens == 256


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RouteRequest(text=""), "text"),
        (pb.RouteRequest(text="  \n\t "), "text"),
        (pb.RouteRequest(text="x" * 2001), "text"),
        (pb.RouteRequest(text="hi", metadata=pb.RequestMetadata(tenant="bad tenant!")), "metadata.tenant"),
        (pb.RouteRequest(text="hi", metadata=pb.RequestMetadata(user_tier="x" * 65)), "metadata.user_tier"),
        (pb.RouteRequest(text="hi", metadata=pb.RequestMetadata(request_id="a\nb")), "metadata.request_id"),
        (pb.RouteRequest(text="hi", options=pb.RouteOptions(top_scores=1000)), "options.top_scores"),
        (pb.RouteBatchRequest(), "queries"),
        (pb.RouteBatchRequest(queries=[pb.Query(text="hi")] * 17), "queries"),
        (pb.RouteBatchRequest(queries=[pb.Query(text="hi"), pb.Query(text=" ")]), "queries[1].text"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(stub: pb_grpc.RouterStub, request_, field: str) -> None:  # type: ignore[no-untyped-def]
    call = stub.Route if isinstance(request_, pb.RouteRequest) else stub.RouteBatch
    with pytest.raises(grpc.RpcError) as info:
        call(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}: ")


def test_reflection_lists_the_service(server: InProcessServer) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"semroute.v1.Router", "grpc.health.v1.Health"} <= services
        assert db.FindFileContainingSymbol("semroute.v1.Router").name == "semroute/v1/router.proto"


def test_batching_never_changes_a_decision(server: InProcessServer, clinc) -> None:  # type: ignore[no-untyped-def]
    probe = "can you help me fix a memory leak in my C++ service"
    others = [t for t, _ in clinc["val"][:64]]

    async def run() -> tuple[object, list[object]]:
        async with AsyncRouterClient(server.target, timeout=30) as client:
            alone = await client.route(probe)
            crowd = await asyncio.gather(*[client.route(t) for t in others[:32]], client.route(probe),
                                         *[client.route(t) for t in others[32:]])
            return alone, crowd

    alone, crowd = asyncio.run(run())
    amid = crowd[32]
    assert (amid.route, amid.model, amid.reason) == (alone.route, alone.model, alone.reason)  # type: ignore[attr-defined]
    assert abs(amid.score - alone.score) < 1e-5  # type: ignore[attr-defined]


def test_a_lone_request_is_encoded_inline_and_a_crowd_is_batched(server: InProcessServer,  # type: ignore[no-untyped-def]
                                                                 stub: pb_grpc.RouterStub, clinc) -> None:
    texts = [t for t, _ in clinc["val"][:48]]

    async def crowd() -> list[pb.RouteResponse]:
        async with grpc.aio.insecure_channel(server.target) as ch:
            s = pb_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
            return list(await asyncio.gather(*[s.Route(pb.RouteRequest(text=t), timeout=60) for t in texts]))

    together = asyncio.run(crowd())
    inline = [r for r in together if (r.decision.timings.batch_size, r.decision.timings.queue_ns) == (1, 0)]
    # the worker still batches concurrent queries: once two overlap, the rest go to it (measured: 1 of 48 inline;
    # without the batcher's probe turns, half of such a crowd was encoded inline one by one)
    assert len(inline) <= len(texts) // 8, f"{len(inline)} of {len(texts)} concurrent queries were encoded inline"
    assert max(r.decision.timings.batch_size for r in together) > 1
    time.sleep(0.2)  # past the batcher's contended window
    alone = [stub.Route(pb.RouteRequest(text=t), timeout=60) for t in texts[:5]]
    # inline: no queue at all (through the worker, queue_ns is the time from enqueue to the batch's start, > 0)
    assert [(r.decision.timings.batch_size, r.decision.timings.queue_ns) for r in alone] == [(1, 0)] * 5
    for a, b in zip(alone, together[:5], strict=True):  # the same decision either way (batch invariance)
        assert (a.decision.route, a.decision.model) == (b.decision.route, b.decision.model)
        assert abs(a.decision.score - b.decision.score) < 1e-5


def test_sync_client_and_errors(server: InProcessServer) -> None:
    with RouterClient(server.target) as c:
        d = c.route("how do I reset my password", tenant="acme")
        assert d.route == "account" and d.index_version
        assert len(c.route_batch(["hi", "translate cat into Spanish"])) == 2
        with pytest.raises(RequestError) as info:
            c.route(" ")
        assert info.value.field == "text"


def test_deadline_exceeded_leaves_server_healthy(server: InProcessServer, stub: pb_grpc.RouterStub) -> None:
    # every time, not just when gRPC's deadline timers happen to fire before the answer: the server checks too
    for _ in range(20):
        with pytest.raises(grpc.RpcError) as info:
            stub.Route(pb.RouteRequest(text="how do I get a refund"), timeout=0.0001)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert stub.Route(pb.RouteRequest(text="how do I get a refund"), timeout=5).decision.route == "billing"


def test_overload_gives_resource_exhausted(bundle_dir: Path) -> None:
    config = ServeConfig(index=bundle_dir, port=0, watch=False, max_batch_size=1, max_queue=2)
    with InProcessServer(config) as s:
        async def burst() -> list[object]:
            async with AsyncRouterClient(s.target, timeout=30) as c:
                return await asyncio.gather(*[c.route(f"question number {i} about my bill") for i in range(60)],
                                            return_exceptions=True)

        results = asyncio.run(burst())
    overloaded = [r for r in results if isinstance(r, OverloadedError)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert overloaded, "a burst past max_queue must be refused"
    assert ok, "admitted requests still succeed"
    assert len(overloaded) + len(ok) == 60  # nothing else went wrong
    assert "queued" in str(overloaded[0])


def _copy_bundle(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".new")
    shutil.copytree(src, tmp)
    old = dest.with_name(dest.name + ".old")
    dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old)


def test_reload_under_traffic_loses_nothing_and_refuses_corrupt(bundle_dir: Path, encoder_dir: Path,
                                                              tmp_path: Path) -> None:
    from semroute.bundle import build_bundle
    from semroute.encoder import OnnxEncoder
    from semroute.routes import load_routes

    live = tmp_path / "live"
    shutil.copytree(bundle_dir, live)
    routes = tmp_path / "routes"
    shutil.copytree(Path(__file__).resolve().parents[1] / "routes", routes)
    (routes / "extra.yaml").write_text(
        "version: 1\nroutes:\n  - name: weather\n    model: small-chat\n    utterances:\n"
        + "".join(f"      - {u}\n" for u in ["what's the weather tomorrow", "will it rain in Paris today",
                                               "weather forecast for the weekend", "is it going to snow tonight"])
    )
    v2, _ = build_bundle(load_routes([routes]), OnnxEncoder(encoder_dir), encoder_dir, tmp_path / "v2")

    config = ServeConfig(index=live, port=0, watch=True, watch_interval=0.1)
    with InProcessServer(config) as s:
        with RouterClient(s.target) as c:
            v1_version = c.info().index_version

        async def traffic(stop_after: float) -> list[object]:
            out: list[object] = []
            async with AsyncRouterClient(s.target, timeout=30) as ac:
                deadline = time.monotonic() + stop_after
                for _ in range(400):  # bounded in count and time
                    if time.monotonic() > deadline:
                        break
                    out += await asyncio.gather(*[ac.route(q) for q in ("will it rain in Paris today",
                                                                        "refund my double charge")],
                                                return_exceptions=True)
            return out

        async def scenario() -> list[object]:
            t = asyncio.create_task(traffic(6.0))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(_copy_bundle, v2, live)
            return await t

        results = asyncio.run(scenario())
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]
        routes_seen = {r.route for r in results}  # type: ignore[attr-defined]
        assert "weather" in routes_seen  # the new bundle took over during the loop
        with RouterClient(s.target) as c:
            v2_version = c.info().index_version
            assert v2_version != v1_version

            # now a corrupt bundle appears at the path: refused, the old one keeps answering
            broken = tmp_path / "broken"
            shutil.copytree(v2, broken)
            manifest = (broken / "manifest.json").read_text().replace(v2_version, "corrupt-version")
            (broken / "manifest.json").write_text(manifest)
            data = (broken / "index.faiss").read_bytes()
            (broken / "index.faiss").write_bytes(data[: len(data) // 3])
            _copy_bundle(broken, live)
            time.sleep(1.0)
            assert c.info().index_version == v2_version
            assert c.route("will it rain in Paris today").route == "weather"
