"""The routing policy through the real parts: the int8 encoder, FAISS, and the gRPC server on 127.0.0.1.

The bundle is routes/ with tests/data/policy/policy.yaml in place of routes/policy.yaml: one rule of every kind
and action (see that file). Each test names the rule it exercises.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import pytest
from server_harness import InProcessServer

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.client import PolicyOptions, RouterClient
from semroute.errors import PolicyDeniedError, RequestError
from semroute.server import ServeConfig

REPO = Path(__file__).resolve().parents[1]
TEST_POLICY = REPO / "tests" / "data" / "policy" / "policy.yaml"

# One realistic sample per PII kind the detector claims (values are test data, not real people's).
PII_SAMPLES = {
    "email": "please write back to maria.lopez@example.org about my order",
    "phone": "you can call me on +44 20 7946 0958 after six",
    "credit_card": "my card 4111 1111 1111 1111 was charged twice",
    "iban": "send the refund to DE89 3704 0044 0532 0130 00 please",
    "national_id": "my DNI is 12345678Z, can you update my account",
    "us_ssn": "the form asks for my SSN 536-22-8726, is that safe",
    "ip_address": "our server at 203.0.113.45 keeps timing out",
    "api_key": "why does boto reject AKIAIOSFODNN7EXAMPLE as my access key",
    "private_key": "is this the right format -----BEGIN RSA PRIVATE KEY----- MIIEpAIBAAKCAQEA",
    "jwt": "my token eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
           "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U is rejected",
}
SECRETS = {"api_key", "private_key", "jwt"}


def build_with_policy(policy: Path, out: Path, encoder_dir: Path, reuse: Path) -> Path:
    from semroute.bundle import build_bundle
    from semroute.encoder import OnnxEncoder
    from semroute.routes import load_routes

    routes = out.parent / f"{out.name}-routes"
    shutil.copytree(REPO / "routes", routes)
    shutil.copy(policy, routes / "policy.yaml")
    build_bundle(load_routes([routes]), OnnxEncoder(encoder_dir, threads=1), encoder_dir, out, reuse=reuse)
    return out


@pytest.fixture(scope="module")
def policy_bundle(bundle_dir: Path, encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_with_policy(TEST_POLICY, tmp_path_factory.mktemp("policy") / "bundle", encoder_dir, bundle_dir)


@pytest.fixture(scope="module")
def server(policy_bundle: Path):  # type: ignore[no-untyped-def]
    with InProcessServer(ServeConfig(index=policy_bundle, port=0, watch=False)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: InProcessServer):  # type: ignore[no-untyped-def]
    with RouterClient(server.target, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server: InProcessServer):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.target) as ch:
        yield pb_grpc.RouterStub(ch)


def fired(d) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.subject for t in d.trace if t.kind == "rule fired"]


# --- rule kinds ---------------------------------------------------------------------------------------------


def test_regex_rule_forces_route_and_skips_the_encoder(client: RouterClient) -> None:
    d = client.route("about TICKET-1234 from yesterday", user_tier="standard")
    assert d.route == "billing" and d.rule == "regex-ticket" and d.reason.value == "rule"
    assert d.timings.encode_ns == 0 and d.scores == []  # decided alone: no encoder call
    assert "regex-ticket" in fired(d)
    # RE2 semantics: a near miss does not fire
    assert "regex-ticket" not in fired(client.route("about TICKET-12345 from yesterday", user_tier="premium"))


def test_keyword_rule_is_case_insensitive_whole_word(client: RouterClient) -> None:
    d = client.route("I just got a SUBPOENA in the mail", user_tier="premium")
    assert d.route == "legal" and d.rule == "keywords-legal" and d.model == "frontier-large"
    assert "keywords-legal" not in fired(client.route("subpoenaed is not a keyword match", user_tier="premium"))


def test_token_and_char_length_rules(client: RouterClient) -> None:
    long = "please summarise the quarterly report section by section. " * 110  # ~1600 estimated tokens
    d = client.route(long, user_tier="premium")
    assert d.model == "summarizer-long" and d.rule == "tokens-long" and d.timings.encode_ns == 0
    tiny = client.route("hi?", user_tier="premium")
    assert tiny.rule == "chars-tiny" and tiny.route is None
    # chars-tiny forces small-chat, but tier premium's rule excludes it: the no-eligible fallback answers
    assert tiny.model == "onprem-llm" and tiny.reason.value == "no_eligible_model"


def test_tenant_rule_requires_attribute(client: RouterClient) -> None:
    d = client.route("write a python function that parses a CSV file", user_tier="standard", tenant="acme")
    assert "tenant-acme-eu" in fired(d)
    # coding's candidates (code-medium, small-chat) carry no 'eu' tag: the compliant fallback answers
    assert d.model == "onprem-llm" and d.reason.value == "no_eligible_model"
    assert all(not c.eligible and "tenant-acme-eu" in c.excluded_by for c in d.candidates)


def test_tier_condition_and_exclude_action(client: RouterClient) -> None:
    d = client.route("summarize this article in three bullet points", user_tier="premium")
    assert "tier-premium-no-small" in fired(d)
    assert d.route == "summarization" and d.model == "summarizer-long"
    small = next(c for c in d.candidates if c.model == "small-chat")
    assert not small.eligible and "tier-premium-no-small" in small.excluded_by


def test_label_conditions_objective_floor_allow_and_deny(client: RouterClient) -> None:
    text = "summarize this article in three bullet points"
    cheap = client.route(text, user_tier="premium", labels={"budget": "low"})
    assert "label-cheap" in fired(cheap) and cheap.objective == "cheapest"
    allow = client.route("translate 'good morning' into German", user_tier="premium", labels={"only": "translator"})
    assert allow.model == "translator" and "allow-label" in fired(allow)
    with pytest.raises(PolicyDeniedError, match="deny-label"):
        client.route(text, user_tier="premium", labels={"block": "yes"})


def test_post_rules_read_route_and_confidence(client: RouterClient) -> None:
    d = client.route("solve the equation 3x + 7 = 22 for x", user_tier="premium")
    assert d.route is None and d.model == "frontier-large"  # forced model: no route in the answer
    assert "math-unsure" in fired(d) and d.score < 0.9 and d.timings.encode_ns > 0
    steps = [t.stage for t in d.trace]
    assert steps.index("semantic") < steps.index("post")
    code = client.route("write a python function that parses a CSV file", user_tier="standard")
    assert "coding-sure" in fired(code) and code.objective == "quality" and code.model == "code-medium"


def test_any_all_not_composition(client: RouterClient) -> None:
    # deny-secrets is all(pii secret, not tenant security-team); pii-on-prem is any(...)
    with pytest.raises(PolicyDeniedError, match="deny-secrets"):
        client.route(PII_SAMPLES["api_key"], user_tier="premium")
    d = client.route(PII_SAMPLES["api_key"], user_tier="premium", tenant="security-team")
    assert "deny-secrets" not in fired(d) and "api_key" in d.pii_kinds
    ip = client.route(PII_SAMPLES["ip_address"], user_tier="premium")
    assert "pii-on-prem" in fired(ip) and ip.model == "onprem-llm"


# --- PII kinds ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PII_SAMPLES))
def test_every_pii_kind_is_reported_and_never_its_value(client: RouterClient, kind: str) -> None:
    d = client.route(PII_SAMPLES[kind], user_tier="premium", tenant="security-team")
    assert kind in d.pii_kinds
    text = " ".join(f"{t.subject} {t.detail}" for t in d.trace)
    value_tokens = [w for w in PII_SAMPLES[kind].split() if any(ch.isdigit() for ch in w) or "@" in w]
    assert not any(v in text for v in value_tokens), "a matched value leaked into the trace"
    if kind not in SECRETS:  # personal data must land on the on-prem model
        assert d.model == "onprem-llm"


# --- objectives, tiers, constraints ---------------------------------------------------------------------------


def test_objectives_quality_cheapest_blend(client: RouterClient) -> None:
    text = "summarize this article in three bullet points"
    q = client.route(text, user_tier="standard", policy=PolicyOptions(objective="quality"))
    assert q.objective == "quality" and q.model == "summarizer-long"  # route quality 0.8 > 0.7
    c = client.route(text, user_tier="standard")  # tier standard: cheapest with floor 0.7
    assert c.objective == "cheapest" and c.model == "small-chat"
    assert c.estimated_cost == pytest.approx(min(x.estimated_cost for x in c.candidates))
    floor = client.route(text, user_tier="standard", policy=PolicyOptions(quality_floor=0.75))
    assert floor.model == "summarizer-long"  # the request raised the floor above small-chat's 0.7
    b = client.route(text, user_tier="blend")
    assert b.objective == "blend"
    scores = {x.model: x.score for x in b.candidates}
    assert b.model == max(scores, key=lambda m: scores[m] or 0.0) and all(s is not None for s in scores.values())


def test_free_tier_is_held_to_cheap_models_and_its_ceiling(client: RouterClient) -> None:
    d = client.route("what are the early symptoms of type 2 diabetes", user_tier="free")
    assert d.model == "onprem-llm" and d.tier == "free"
    frontier = next(c for c in d.candidates if c.model == "frontier-large")
    assert not frontier.eligible and "tier free" in frontier.excluded_by
    # a request may tighten the ceiling, never loosen it
    tight = client.route("translate 'good morning' into German", user_tier="free",
                         policy=PolicyOptions(max_cost=0.0000001))
    assert tight.reason.value == "no_eligible_model"
    assert "request max_cost" in tight.candidates[0].excluded_by
    loose = client.route("translate 'good morning' into German", user_tier="free", policy=PolicyOptions(max_cost=99))
    assert loose.model == "translator"


def test_no_eligible_model_deny_when_fallback_is_not_compliant(client: RouterClient) -> None:
    with pytest.raises(PolicyDeniedError, match="no eligible model") as info:
        client.route("summarize this article", user_tier="premium", labels={"impossible": "yes"})
    assert "onprem-llm" in str(info.value) and "impossible" in str(info.value)


# --- request validation, batches, info ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        (pb.RequestMetadata(user_tier="gold"), "metadata.user_tier"),
        (pb.RequestMetadata(), "metadata.user_tier"),  # no default tier declared
        (pb.RequestMetadata(user_tier="free", labels={"bad key": "x"}), "metadata.labels"),
        (pb.RequestMetadata(user_tier="free", labels={"k": "x" * 300}), "metadata.labels[k]"),
        (pb.RequestMetadata(user_tier="free", labels={f"k{i}": "v" for i in range(17)}), "metadata.labels"),
    ],
)
def test_bad_metadata_is_invalid_argument(stub: pb_grpc.RouterStub, metadata: pb.RequestMetadata,
                                          field: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Route(pb.RouteRequest(text="hello there", metadata=metadata), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field), info.value.details()


@pytest.mark.parametrize(("options", "field"), [
    (pb.RouteOptions(max_cost=-1), "options.max_cost"),
    (pb.RouteOptions(quality_floor=1.5), "options.quality_floor"),
    (pb.RouteOptions(objective="fastest"), "options.objective"),
])
def test_bad_options_are_invalid_argument(stub: pb_grpc.RouterStub, options: pb.RouteOptions, field: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Route(pb.RouteRequest(text="hello", metadata=pb.RequestMetadata(user_tier="free"), options=options),
                   timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field)


def test_deny_in_a_batch_names_the_query(client: RouterClient) -> None:
    with pytest.raises(PolicyDeniedError, match=r"queries\[1\]"):
        client.route_batch(["hello", PII_SAMPLES["jwt"]], user_tier="premium")


def test_batch_equals_single_requests(client: RouterClient) -> None:
    texts = ["about TICKET-1234", "summarize this article in three bullet points", PII_SAMPLES["email"],
             "solve the equation 3x + 7 = 22 for x", "what is the weather like on mars", "hi?"]
    batch = client.route_batch(texts, user_tier="standard")
    for t, b in zip(texts, batch, strict=True):
        one = client.route(t, user_tier="standard")
        assert (one.model, one.route, one.reason, one.trace, one.pii_kinds) == (b.model, b.route, b.reason,
                                                                               b.trace, b.pii_kinds)


def test_info_reports_the_policy(client: RouterClient, policy_bundle: Path) -> None:
    from semroute.router import Router

    info = client.info()
    assert info.policy_version.startswith("p-") and list(info.tiers) == ["free", "standard", "premium", "blend"]
    assert info.policy_version == Router.load(policy_bundle).policy.version
    assert '"deny-secrets"' in info.policy_json
    d = client.route("hello there", user_tier="free")
    assert d.policy_version == info.policy_version


def test_policy_hot_reloads_with_the_bundle(policy_bundle: Path, bundle_dir: Path, encoder_dir: Path,
                                            tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(bundle_dir, live)  # the bundled routes/ and their policy
    with InProcessServer(ServeConfig(index=live, port=0, watch=True, watch_interval=0.2)) as s, \
            RouterClient(s.target, timeout=30) as c:
        before = c.info().policy_version
        assert c.route("hello there").tier == "standard"  # the bundled policy's default tier...
        build_with_policy(REPO / "tests" / "data" / "policy" / "policy.yaml", live, encoder_dir, policy_bundle)
        deadline = time.monotonic() + 60
        while c.info().policy_version == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.info().policy_version != before
        with pytest.raises(RequestError, match=r"metadata\.user_tier"):  # ... and the test policy has none
            c.route("hello there")


def test_route_files_without_a_policy_have_no_policy_step(bundle_dir: Path, encoder_dir: Path,
                                                           tmp_path: Path) -> None:
    from semroute.bundle import build_bundle
    from semroute.encoder import OnnxEncoder
    from semroute.router import Router
    from semroute.routes import load_routes

    routes = tmp_path / "routes"
    shutil.copytree(REPO / "routes", routes)
    (routes / "policy.yaml").unlink()
    build_bundle(load_routes([routes]), OnnxEncoder(encoder_dir, threads=1), encoder_dir, tmp_path / "b",
                 reuse=bundle_dir)
    router = Router.load(tmp_path / "b")
    assert router.policy is None
    d = router.route(PII_SAMPLES["email"], context=None)
    assert d.policy_version == "" and d.pii_kinds == () and d.trace == ()
    with InProcessServer(ServeConfig(index=tmp_path / "b", port=0, watch=False)) as s, \
            RouterClient(s.target, timeout=30) as c:
        assert c.info().policy_version == ""
        # user_tier is a free-form label again: any value is accepted
        assert c.route("summarize this article", user_tier="whatever").model == "summarizer-long"
