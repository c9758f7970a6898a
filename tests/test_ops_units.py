"""Logic of the ops pieces without a server: token buckets, rates, option parsing; audit -> calibration data."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import InProcessServer

from semroute.errors import ConfigError, DataError
from semroute.ops import OpsConfig, parse_rate
from semroute.ops.ratelimit import MemoryBucketStore, RateLimiter
from semroute.server import ServeConfig


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_at_the_rate_and_caps_at_the_burst() -> None:
    clock = Clock()
    store = MemoryBucketStore(clock=clock)
    lim = RateLimiter(store, rate_per_s=2.0, burst=4)

    def take(cost: float = 1) -> float:
        return asyncio.run(lim.take("k", cost))

    assert [take() for _ in range(4)] == [0, 0, 0, 0]
    assert take() == pytest.approx(0.5)  # one token every 0.5 s
    clock.t = 0.5
    assert take() == 0 and take() == pytest.approx(0.5)
    clock.t = 100.0  # refills to the burst, not beyond
    assert [take() for _ in range(4)] == [0, 0, 0, 0] and take() > 0
    assert take(5) == float("inf")


def test_eviction_bounds_memory() -> None:
    store = MemoryBucketStore(max_keys=10)
    for i in range(100):
        store.take_now(f"k{i}", 1, 1, 1)
    assert len(store._buckets) == 10


def test_parse_rate_and_config_validation() -> None:
    assert parse_rate("600/min") == (10.0, 600.0)
    assert parse_rate("5 / s") == (5.0, 5.0)
    for bad in ("fast", "0/s", "5/day"):
        with pytest.raises(ConfigError, match=r"--rate-limit: .* is not a rate"):
            parse_rate(bad)
    with pytest.raises(ConfigError, match="limiting per key needs API keys"):
        OpsConfig(rate_limit="5/s")
    assert OpsConfig(rate_limit="5/s", rate_by="tenant").intercepts
    assert not OpsConfig().intercepts
    with pytest.raises(ConfigError, match="--auth-open: unknown service"):
        OpsConfig(open_services=frozenset({"metrics"}))


def test_otlp_provider_builds_without_a_collector() -> None:
    from semroute.ops.tracing import provider_for

    provider_for("http://127.0.0.1:1").shutdown()  # nothing listens; building and closing must not fail


def test_calibrate_from_the_audit_trail(bundle_dir: Path, tmp_path: Path) -> None:
    """Serve with --audit-text full, label some request ids, join, and calibrate a new bundle from it."""
    from semroute.client import RouterClient

    log = tmp_path / "audit.log"
    texts = {"r1": ("my card was charged twice", "billing"), "r2": ("write a python function to sort a list",
                                                                    "coding"),
             "r3": ("what is the capital of France", None), "r4": ("I have a fever and a headache", "medical"),
             "r5": ("translate good night into French", None)}
    config = ServeConfig(index=bundle_dir, port=0, watch=False, ops=OpsConfig(audit_log=log, audit_text="full"))
    with InProcessServer(config) as s, RouterClient(s.target) as c:
        decided = {rid: c.route(t, request_id=rid) for rid, (t, _) in texts.items()}
        c.route("unlabelled traffic", request_id="r9")
    labels = tmp_path / "labels.jsonl"
    rows = [{"request_id": rid, "route": r} for rid, (_, r) in list(texts.items())[:4]]
    rows.append({"request_id": "r5", "outcome": "correct"})
    rows.append({"request_id": "r9", "outcome": "wrong"})
    rows.append({"request_id": "never-sent", "route": None})
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "val.jsonl"

    def cli(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "semroute.cli", *a], capture_output=True, text=True,
                              timeout=600)

    r = cli("audit", "to-labelled", str(log), "--labels", str(labels), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "joined 5," in r.stdout and "wrong_without_route 1" in r.stdout and "labels_without_record 1" in r.stdout
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got[4] == {"text": texts["r5"][0], "route": decided["r5"].route}
    assert got[0] == {"text": texts["r1"][0], "route": "billing"}
    r = cli("calibrate", "--index", str(bundle_dir), "--data", str(out), "--out", str(tmp_path / "b2"),
            "--no-confidence")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b2" / "manifest.json").read_text())["calibration"]["data"]["n"] == 5
    # a log written with the default (hmac) text mode cannot be calibrated from, and says why
    log2 = tmp_path / "h" / "audit.log"
    with InProcessServer(ServeConfig(index=bundle_dir, port=0, watch=False, ops=OpsConfig(audit_log=log2))) as s, \
            RouterClient(s.target) as c:
        c.route("my card was charged twice", request_id="r1")
    from semroute.audit.labels import audit_to_labelled

    with pytest.raises(DataError, match="--audit-text hmac; serve with --audit-text full"):
        audit_to_labelled([log2], labels, tmp_path / "x.jsonl")
    labels.write_text('{"request_id": "r1", "route": "a", "outcome": "correct"}\n')
    with pytest.raises(DataError, match=r"labels\.jsonl:1: give exactly one of 'route'"):
        audit_to_labelled([log], labels, tmp_path / "x.jsonl")


def test_serve_options_build_an_ops_config_only_when_a_feature_is_on() -> None:
    import click

    from semroute.ops.commands import ops_options, pop_ops_config

    seen: dict[str, object] = {}

    @click.command()
    @ops_options
    def cmd(**options: object) -> None:
        seen["config"] = pop_ops_config(options)
        seen["left"] = options

    cmd.main([], standalone_mode=False)
    assert seen["config"] is None and seen["left"] == {}
    cmd.main(["--audit-log", "/tmp/x.log", "--auth-open", "health"], standalone_mode=False)
    config = seen["config"]
    assert isinstance(config, OpsConfig) and config.open_services == frozenset({"health"})
    with pytest.raises(ConfigError, match="give both --tls-cert and --tls-key"):
        cmd.main(["--tls-key", "k.pem"], standalone_mode=False)
