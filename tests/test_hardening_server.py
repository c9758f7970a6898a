"""Issue 16 through a real server: contentless text, metadata full matches and the tenant metric, undecodable
requests (in-process server on 127.0.0.1), and the reload watcher and drain of a `semroute serve` process."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_harness import InProcessServer, start_subprocess

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.client import AsyncRouterClient, RouterClient
from semroute.server import ServeConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


@pytest.fixture(scope="module")
def server(bundle_dir: Path) -> Iterator[InProcessServer]:
    config = ServeConfig(index=bundle_dir, port=0, watch=False, metrics_port=_free_port(), max_tenants=2)
    with InProcessServer(config) as s:
        yield s


@pytest.fixture()
def stub(server: InProcessServer) -> Iterator[pb_grpc.RouterStub]:
    with grpc.insecure_channel(server.target) as ch:
        yield pb_grpc.RouterStub(ch)


@pytest.mark.parametrize("text", ["\u200b", "\x00", "\x01\x02\x03", " \u200b\u200d\ufeff\t", "\u2060?!", "..."])
def test_text_without_content_is_invalid_argument(stub: pb_grpc.RouterStub, text: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Route(pb.RouteRequest(text=text), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("text: has no letters, digits or symbols")
    with pytest.raises(grpc.RpcError) as info:
        stub.RouteBatch(pb.RouteBatchRequest(queries=[pb.Query(text="hello"), pb.Query(text=text)]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("queries[1].text: has no letters, digits or symbols")


@pytest.mark.parametrize("text", ["ok", "2+2", "€", "😀", "\u200bhello"])
def test_text_with_content_is_routed(stub: pb_grpc.RouterStub, text: str) -> None:
    assert stub.Route(pb.RouteRequest(text=text), timeout=10).decision.model


@pytest.mark.parametrize(("md", "field"), [
    (pb.RequestMetadata(tenant="acme\n"), "metadata.tenant"),
    (pb.RequestMetadata(user_tier="gold\n"), "metadata.user_tier"),
])
def test_metadata_must_match_in_full(stub: pb_grpc.RouterStub, md: pb.RequestMetadata, field: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Route(pb.RouteRequest(text="refund my double charge", metadata=md), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}: ")


def test_tenant_in_metrics_bounded_and_in_debug_logs(server: InProcessServer, stub: pb_grpc.RouterStub,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    before = _metrics(server.config.metrics_port)
    with caplog.at_level(logging.DEBUG, logger="semroute.server"):
        for tenant in ["t-a", "t-b", "t-a", "t-c", "t-d", ""]:
            md = pb.RequestMetadata(tenant=tenant, user_tier="gold", request_id=f"id-{tenant}")
            stub.Route(pb.RouteRequest(text="refund my double charge", metadata=md), timeout=10)
        stub.RouteBatch(pb.RouteBatchRequest(queries=[
            pb.Query(text="hello", metadata=pb.RequestMetadata(tenant="t-b")),
            pb.Query(text="hi", metadata=pb.RequestMetadata(tenant="t-e"))]), timeout=10)
        time.sleep(0.2)
    after = _metrics(server.config.metrics_port)

    def added(tenant: str) -> float:
        key = ("semroute_tenant_requests_total", (("tenant", tenant),))
        return after.get(key, 0) - before.get(key, 0)

    # max_tenants=2: the first two tenants by name, later ones together, no tenant apart
    assert (added("t-a"), added("t-b"), added("(other)"), added("(none)")) == (2, 2, 3, 1)
    assert added("t-c") == 0 and added("t-e") == 0
    queries = [r for r in caplog.records if getattr(r, "event", None) == "query"]
    assert any(r.tenant == "t-c" and r.user_tier == "gold" and r.request_id == "id-t-c"  # type: ignore[attr-defined]
               for r in queries)


def _invalid_utf8_text() -> bytes:
    return b"\x0a\x04ab\xff\xfe"  # field 1 (text), length 4, not UTF-8


def test_undecodable_requests_are_invalid_argument_counted_and_logged_once(
        server: InProcessServer, stub: pb_grpc.RouterStub, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(16)
    payloads = [_invalid_utf8_text()] + [rng.randbytes(rng.randrange(1, 200)) for _ in range(60)]
    before = _metrics(server.config.metrics_port)
    codes: dict[str, list[grpc.StatusCode]] = {"undecodable": [], "decodable": []}
    with caplog.at_level(logging.WARNING, logger="semroute.server"), grpc.insecure_channel(server.target) as ch:
        for method, cls in (("Route", pb.RouteRequest), ("RouteBatch", pb.RouteBatchRequest)):
            call = ch.unary_unary(f"/semroute.v1.Router/{method}")  # bytes in, bytes out: no client-side parsing
            for data in payloads:
                try:
                    cls.FromString(data)
                    kind = "decodable"
                except Exception:
                    kind = "undecodable"
                try:
                    call(data, timeout=10)
                    codes[kind].append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes[kind].append(e.code())
                    if kind == "undecodable":
                        assert e.details().startswith(f"request: is not a valid semroute.v1.{cls.__name__}")
        time.sleep(0.2)
    after = _metrics(server.config.metrics_port)
    n_bad = len(codes["undecodable"])
    assert n_bad > 60 and set(codes["undecodable"]) == {grpc.StatusCode.INVALID_ARGUMENT}
    # random bytes that happen to parse are ordinary requests: refused or answered, never UNKNOWN/INTERNAL
    assert set(codes["decodable"]) <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK}

    def added(name: str, labels: tuple[tuple[str, str], ...]) -> float:
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    undecodable = sum(added("semroute_undecodable_requests_total", (("method", m),)) for m in ("Route", "RouteBatch"))
    assert undecodable == n_bad
    invalid = sum(added("semroute_requests_total", (("code", "INVALID_ARGUMENT"), ("method", m)))
                  for m in ("Route", "RouteBatch"))
    assert invalid == n_bad + codes["decodable"].count(grpc.StatusCode.INVALID_ARGUMENT)
    lines = [r for r in caplog.records if getattr(r, "event", None) == "undecodable_request"]
    assert len(lines) == 1 and not any(r.exc_info for r in caplog.records)
    assert stub.Route(pb.RouteRequest(text="refund my double charge"), timeout=10).decision.route == "billing"


class _Stderr:
    """Reads a server's stderr on a thread, so its pipe never fills."""

    def __init__(self, proc: object) -> None:
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._t.start()

    def _read(self, proc: object) -> None:
        for line in proc.stderr:  # type: ignore[attr-defined]
            self.lines.append(line)

    def events(self, name: str) -> list[dict[str, object]]:
        out = []
        for line in list(self.lines):
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == name:
                out.append(e)
        return out

    def join(self) -> str:
        self._t.join(30)
        return "".join(self.lines)


def _wait(cond: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def test_watcher_survives_bad_manifests_takes_a_repair_and_sigterm_drains(bundle_dir: Path, tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(bundle_dir, live)
    good_manifest = (live / "manifest.json").read_bytes()
    good_index = (live / "index.faiss").read_bytes()
    mport = _free_port()
    proc, port = start_subprocess(live, "--watch-interval", "0.3", "--metrics-port", str(mport),
                                  "--max-batch-size", "1", env={"SEMROUTE_LOG_FORMAT": "json"})
    err = _Stderr(proc)
    target = f"127.0.0.1:{port}"

    def refused() -> float:
        return _metrics(mport).get(("semroute_reloads_total", (("result", "refused"),)), 0)

    try:
        with RouterClient(target) as c:
            v1 = c.info().index_version
            # 1. one bad byte in the live manifest: refused once (not every interval), the watcher lives on
            _write(live / "manifest.json", bytes([good_manifest[0] ^ 0xFF]) + good_manifest[1:])
            _wait(lambda: refused() == 1, "the first refusal")
            time.sleep(1.5)  # five more checks of the same content
            assert refused() == 1 and len(err.events("reload_refused")) == 1
            m = _metrics(mport)
            assert m[("semroute_reload_watcher_up", ())] == 1
            assert time.time() - m[("semroute_reload_watcher_last_check_timestamp_seconds", ())] < 5
            assert m[("semroute_bundle_age_seconds", ())] > 0
            assert c.route("refund my double charge").route == "billing" and c.info().index_version == v1
            # SIGHUP on the same content is tried again (the operator asked) and refused again
            proc.send_signal(signal.SIGHUP)
            _wait(lambda: refused() == 2, "the SIGHUP refusal")
            # 2. valid JSON of the wrong shape (no encoder.dim): the KeyError of old is a refusal too
            doc = json.loads(good_manifest)
            del doc["encoder"]["dim"]
            _write(live / "manifest.json", json.dumps(doc).encode())
            _wait(lambda: refused() == 3, "the wrong-shape refusal")
            # 3. a new version arrives with a truncated index: refused; repaired in place (manifest unchanged):
            #    taken, because refusals are keyed on the directory's content, not on the manifest's text
            staged = tmp_path / "staged"
            shutil.copytree(bundle_dir, staged)
            doc = json.loads(good_manifest)
            doc["version"] = "v-next"
            (staged / "manifest.json").write_text(json.dumps(doc))
            (staged / "index.faiss").write_bytes(good_index[: len(good_index) // 2])
            old = tmp_path / "old"
            live.rename(old)
            staged.rename(live)
            _wait(lambda: len(err.events("reload_refused")) == 4, "the truncated-index refusal")
            assert "index.faiss does not match its hash" in str(err.events("reload_refused")[-1]["msg"])
            _write(live / "index.faiss", good_index)
            _wait(lambda: c.info().index_version == "v-next", "the repaired bundle")
            # 4. corrupt again, then SIGTERM with requests in flight: every one answered, exit 0
            _write(live / "manifest.json", b"\xff" + json.dumps(doc).encode()[1:])
            _wait(lambda: refused() == 5, "the last refusal")

        async def flood() -> tuple[list[object], int]:
            async with AsyncRouterClient(target, timeout=60) as ac:
                await ac.route("warm the connection")
                tasks = [asyncio.create_task(ac.route(f"please summarize report number {i}")) for i in range(24)]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                proc.send_signal(signal.SIGTERM)
                pending = sum(not t.done() for t in tasks)
                return await asyncio.gather(*tasks, return_exceptions=True), pending

        results, pending = asyncio.run(flood())
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    log = err.join()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert pending > 0, "SIGTERM must arrive while requests are in flight"
    assert all(r.route == "summarization" for r in results)  # type: ignore[attr-defined]
    assert "Traceback" not in log and "Event loop is closed" not in log and "never awaited" not in log
    triggers = [e["trigger"] for e in err.events("reload_refused")]
    assert triggers.count("SIGHUP") == 1 and len(triggers) == 5
    assert any(e.get("serving") == "v-next" for e in err.events("reloaded"))
