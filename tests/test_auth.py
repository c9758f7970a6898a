"""API keys, tiers bound to keys, rate limits and tracing, through the real server (with the audit log on)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_harness import InProcessServer

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.audit.verify import verify_logs
from semroute.client import RouterClient
from semroute.errors import ConfigError, PermissionDeniedError, UnauthenticatedError
from semroute.ops import OpsConfig
from semroute.ops.keys import add_key, load_keys, revoke_key
from semroute.server import ServeConfig

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROUTE = pb.RouteRequest(text="my card was charged twice")


class Env:
    def __init__(self, tmp: Path) -> None:
        self.keys = tmp / "keys.jsonl"
        self.full, self.full_entry = add_key(self.keys, tenant="acme", tier="standard")
        self.info, _ = add_key(self.keys, tenant="acme", tier="standard", rpcs=("Info",))
        self.slow, _ = add_key(self.keys, tenant="slowco", tier="standard", rate="3/min")
        self.doomed, self.doomed_entry = add_key(self.keys, tenant="acme", tier="standard")
        self.audit = tmp / "audit" / "audit.log"
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.config = ServeConfig(index=Path(), port=0, watch=False, ops=OpsConfig(
            keys_file=self.keys, keys_reload_s=0.1, rate_limit="1000/s", audit_log=self.audit,
            tracer_provider=provider))


@pytest.fixture(scope="module")
def env(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    e = Env(tmp_path_factory.mktemp("auth"))
    e.config = replace(e.config, index=bundle_dir)
    with InProcessServer(e.config) as s:
        e.server = s  # type: ignore[attr-defined]
        e.channel = grpc.insecure_channel(s.target)  # type: ignore[attr-defined]
        e.stub = pb_grpc.RouterStub(e.channel)  # type: ignore[attr-defined]
        yield e
        e.channel.close()  # type: ignore[attr-defined]
    verify_logs([e.audit])  # the chain holds after everything the tests threw at it


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _code(fn, *a, **kw) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    try:
        fn(*a, **kw)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def test_no_key_is_unauthenticated_but_health_and_reflection_are_open(env: Env) -> None:
    stub = env.stub  # type: ignore[attr-defined]
    for call, req in ((stub.Route, ROUTE), (stub.RouteBatch, pb.RouteBatchRequest(queries=[pb.Query(text="hi")])),
                      (stub.Info, pb.InfoRequest())):
        code, msg = _code(call, req, timeout=5)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer" in msg
    health = health_pb2_grpc.HealthStub(env.channel)  # type: ignore[attr-defined]
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(env.channel)  # type: ignore[attr-defined]
    (resp,) = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                             timeout=5))
    assert "semroute.v1.Router" in {s.name for s in resp.list_services_response.service}


def test_valid_key_routes_and_the_key_sets_tenant_and_tier(env: Env) -> None:
    with RouterClient(env.server.target, api_key=env.full) as c:  # type: ignore[attr-defined]
        d = c.route("my card was charged twice", request_id="auth-1")
        assert d.route == "billing"
        assert c.route("hello", tenant="acme", user_tier="standard").model  # the key's own values are fine
        with pytest.raises(PermissionDeniedError, match=r"bound to tier 'standard'.*'gold'"):
            c.route("hello", user_tier="gold")
        with pytest.raises(PermissionDeniedError, match="bound to tenant 'acme'"):
            c.route("hello", tenant="other")
        # narrowing under the bundle's policy (routes/policy.yaml): free allows fewer models with a cost ceiling
        assert c.route("my card was charged twice", user_tier="free", request_id="narrowed").model
        with pytest.raises(PermissionDeniedError, match="'premium', which is not narrower"):
            c.route("hello", user_tier="premium")  # same models, no ceiling, a dearer objective: not narrower
        assert c.info().index_version
    time.sleep(0.3)
    recs = [json.loads(line) for line in env.audit.read_text().splitlines()]
    rec = next(r for r in recs if r.get("request_id") == "auth-1")
    assert (rec["key_id"], rec["tenant"], rec["tier"]) == (env.full_entry.id, "acme", "standard")
    assert rec["policy_version"] and rec["tier_applied"] == "standard" and isinstance(rec["rules"], list)
    narrowed = next(r for r in recs if r.get("request_id") == "narrowed")
    assert (narrowed["tier"], narrowed["tier_applied"]) == ("free", "free")
    denied = [r for r in recs if r["kind"] == "denied"]
    assert denied and all(env.full not in json.dumps(r) for r in recs)


def test_bad_keys_never_echo_the_key(env: Env) -> None:
    stub = env.stub  # type: ignore[attr-defined]
    kid = env.full_entry.id
    forged = f"sr_{kid}_{'A' * 43}"
    for token, expect in ((forged, "invalid API key"), ("sr_nothex_zzz", "malformed API key"),
                          (f"sr_{'0' * 12}_{'B' * 43}", "invalid API key")):
        code, msg = _code(stub.Route, ROUTE, timeout=5, metadata=_auth(token))
        assert code == grpc.StatusCode.UNAUTHENTICATED and expect in msg
        assert token not in msg and token.split("_")[-1] not in msg
    code, msg = _code(stub.Route, ROUTE, timeout=5, metadata=(("authorization", f"Basic {env.full}"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED and env.full not in msg
    code, msg = _code(stub.Route, ROUTE, timeout=5, metadata=_auth(env.info))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "may not call Route (allowed: Info)" in msg
    assert _code(stub.Info, pb.InfoRequest(), timeout=5, metadata=_auth(env.info))[0] == grpc.StatusCode.OK


def test_revocation_and_new_keys_take_effect_while_serving(env: Env) -> None:
    stub = env.stub  # type: ignore[attr-defined]
    assert _code(stub.Route, ROUTE, timeout=5, metadata=_auth(env.doomed))[0] == grpc.StatusCode.OK
    r = subprocess.run([sys.executable, "-m", "semroute.cli", "keys", "revoke", "--file", str(env.keys),
                        env.doomed_entry.id], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    new, _ = add_key(env.keys, tenant="acme", tier="standard")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, msg = _code(stub.Route, ROUTE, timeout=5, metadata=_auth(env.doomed))
        if code != grpc.StatusCode.OK:
            break
        time.sleep(0.1)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "was revoked" in msg
    while _code(stub.Route, ROUTE, timeout=5, metadata=_auth(new))[0] != grpc.StatusCode.OK:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # a broken key file is refused; the keys in force stay
    good = env.keys.read_text()
    env.keys.write_text(good + "{broken\n")
    time.sleep(0.5)
    assert _code(stub.Route, ROUTE, timeout=5, metadata=_auth(new))[0] == grpc.StatusCode.OK
    env.keys.write_text(good)


def test_rate_limit_gives_resource_exhausted_with_retry_delay(env: Env) -> None:
    stub = env.stub  # type: ignore[attr-defined]
    for _ in range(3):
        assert _code(stub.Route, ROUTE, timeout=5, metadata=_auth(env.slow))[0] == grpc.StatusCode.OK
    with pytest.raises(grpc.RpcError) as err:
        stub.Route(ROUTE, timeout=5, metadata=_auth(env.slow))
    e = err.value
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "over its rate limit" in e.details()
    retry = dict(e.trailing_metadata())["retry-after-ms"]
    assert 0 < int(retry) <= 20_000  # 3/min: one token every 20 s
    code, msg = _code(stub.RouteBatch, pb.RouteBatchRequest(queries=[pb.Query(text="hi")] * 5), timeout=5,
                      metadata=_auth(env.slow))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "exceeds the rate limit's burst" in msg
    assert _code(stub.Route, ROUTE, timeout=5, metadata=_auth(env.full))[0] == grpc.StatusCode.OK  # own bucket


def test_trace_context_from_the_caller_and_stage_spans(env: Env) -> None:
    env.spans.clear()
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    md = (*_auth(env.full), ("traceparent", f"00-{trace_id}-{parent}-01"))
    env.stub.Route(pb.RouteRequest(text="my card was charged twice"), timeout=5, metadata=md)  # type: ignore[attr-defined]
    env.stub.RouteBatch(pb.RouteBatchRequest(queries=[pb.Query(text="a"), pb.Query(text="b")]),  # type: ignore[attr-defined]
                        timeout=5, metadata=md)
    deadline = time.monotonic() + 5
    while len(env.spans.get_finished_spans()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    spans = env.spans.get_finished_spans()
    rpc = next(s for s in spans if s.name == "semroute.v1.Router/Route")
    assert format(rpc.context.trace_id, "032x") == trace_id and format(rpc.parent.span_id, "016x") == parent
    assert rpc.attributes["semroute.route"] == "billing" and rpc.attributes["rpc.grpc.status_code"] == "OK"
    children = [s for s in spans if s.parent is not None and s.parent.span_id == rpc.context.span_id]
    assert [s.name for s in children] == ["queue", "tokenize", "encode", "search", "score"]
    assert children[2].end_time > children[2].start_time  # encode took time
    batch = next(s for s in spans if s.name == "semroute.v1.Router/RouteBatch")
    queries = [s for s in spans if s.name == "query" and s.parent.span_id == batch.context.span_id]
    assert len(queries) == 2
    _code(env.stub.Route, ROUTE, timeout=5)  # type: ignore[attr-defined]
    time.sleep(0.2)
    refused = [s for s in env.spans.get_finished_spans() if s.attributes.get("rpc.grpc.status_code") ==
               "UNAUTHENTICATED"]
    assert refused


_token = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"sr_[0-9a-f]{12}_[A-Za-z0-9_\-]{43}", fullmatch=True),
    st.builds(lambda s: f"Bearer sr_{s}", st.text(max_size=60)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=st.one_of(st.none(), _token.map(lambda t: f"Bearer {t}"), _token),
       extra=st.lists(st.tuples(st.sampled_from(["x-api-key", "tenant", "x", "api-key"]),
                                st.text(alphabet="abc123", max_size=10)), max_size=2),
       rpc=st.sampled_from(["Route", "RouteBatch", "Info"]))
def test_property_no_router_rpc_succeeds_without_a_valid_key(env: Env, header: str | None,
                                                             extra: list[tuple[str, str]], rpc: str) -> None:
    md: list[tuple[str, str | bytes]] = list(extra)
    md.append(("authorization-bin", b"\x00sr_" + bytes(8)))  # a binary header of the same name is not a key
    if header is not None:
        try:
            header.encode("ascii")
        except UnicodeEncodeError:
            header = header.encode("ascii", "replace").decode()
        if any(c in header for c in "\r\n\x00") or not header.isprintable():
            header = "".join(c for c in header if c.isprintable())
        md.append(("authorization", header))
    stub = env.stub  # type: ignore[attr-defined]
    req = {"Route": ROUTE, "RouteBatch": pb.RouteBatchRequest(queries=[pb.Query(text="x")]),
           "Info": pb.InfoRequest()}[rpc]
    code, _ = _code(getattr(stub, rpc), req, timeout=5, metadata=md)
    assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), code


def test_closed_health_needs_a_key(bundle_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.jsonl"
    token, _ = add_key(keys, tenant="ops", tier="internal", rpcs=("Health",))
    config = ServeConfig(index=bundle_dir, port=0, watch=False, ops=OpsConfig(keys_file=keys,
                                                                             open_services=frozenset()))
    with InProcessServer(config) as s, grpc.insecure_channel(s.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        code, _ = _code(health.Check, health_pb2.HealthCheckRequest(), timeout=5)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5, metadata=_auth(token)).status == 1
        with RouterClient(s.target, api_key=token) as c, pytest.raises(PermissionDeniedError):
            c.info()
        with RouterClient(s.target) as c, pytest.raises(UnauthenticatedError):
            c.info()


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "abc"}', r"keys\.jsonl:2: sha256: is missing|keys\.jsonl:2: id: must be 12"),
    ('{"id": "0123456789ab", "sha256": "zz", "tenant": "a", "tier": "b", "rpcs": ["Route"], "created": "t"}',
     r"keys\.jsonl:2: sha256: must be the 64-hex sha256"),
    ('{"id": "0123456789ab", "sha256": "' + "a" * 64 + '", "tenant": "a", "tier": "b", "rpcs": ["Delete"], '
     '"created": "t"}', r"keys\.jsonl:2: rpcs: unknown RPC\(s\) \['Delete'\]"),
    ("DUP", r"keys\.jsonl:2: id: duplicate key id \w+ \(first on line 1\)"),
    ("not json", r"keys\.jsonl:2: not valid JSON"),
])
def test_key_file_errors_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    keys = tmp_path / "keys.jsonl"
    add_key(keys, tenant="a", tier="b")
    first = keys.read_text()
    keys.write_text(first + (first if line == "DUP" else line + "\n"))
    with pytest.raises(ConfigError, match=message):
        load_keys(keys)
    r = subprocess.run([sys.executable, "-m", "semroute.cli", "serve", "--index", str(tmp_path), "--keys",
                        str(keys)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "keys.jsonl:2" in r.stderr and "Traceback" not in r.stderr


def test_keys_cli_add_list_revoke(tmp_path: Path) -> None:
    keys = tmp_path / "k.jsonl"

    def cli(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "semroute.cli", "keys", *a, "--file", str(keys)],
                              capture_output=True, text=True, timeout=60)

    r = cli("add", "--tenant", "acme", "--tier", "gold", "--rpc", "Route")
    assert r.returncode == 0 and r.stdout.startswith("sr_")
    token = r.stdout.strip()
    assert token not in keys.read_text() and (keys.stat().st_mode & 0o777) == 0o600
    listed = cli("list", "--json")
    row = json.loads(listed.stdout)
    assert row["tenant"] == "acme" and row["rpcs"] == ["Route"] and token not in listed.stdout
    assert cli("revoke", token).returncode == 0  # a pasted token revokes its id, and is not printed
    assert revoke_key(keys, row["id"]).revoked
    assert cli("revoke", "ffffffffffff").returncode == 2
