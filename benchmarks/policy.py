"""What the routing policy costs, measured side by side in one run:

1. Route p50 at concurrency 1 over gRPC: the bundled routes with their policy plus 200 generated rules (keyword,
   regex, label and tenant rules that do not fire on the queries, so every request pays for evaluating them) and
   PII detection on, against the same routes with no policy declared (no policy step at all). Same queries, two
   server processes, alternating blocks. Target: within 1.10x.
2. A request decided by a rule alone (the bundled ``legal-keywords`` rule: no encoder call) against the semantic
   path's p50 on the same server. Target: <= 0.2x.
3. 100 KB adversarial texts through every rule of the bundled policy and PII detection (in process, the policy's
   pre step: detection + one RE2 pass + rule evaluation). Target: <= 5 ms.

    python -m benchmarks.policy [--n 400] [--out benchmarks/results]

Writes policy.json and policy.md. Also the ``policy`` suite of ``python -m benchmarks`` (--quick: 100 calls per
path; --full: 400).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ._common import REPO, Mode, machine, summary, write_results
from .grpc_e2e import ServerProcess

_BLOCK = 25
_FLOOR = "\x00floor"


def generated_rules(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` rules of the kinds a platform team writes, none of which fire on ordinary queries."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(9)) for _ in range(5 * n)]
    rules: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            when: dict[str, Any] = {"keywords": words[5 * i: 5 * i + 5]}
        elif kind == 1:
            when = {"regex": rf"\b(?:PRJ|ACC)-{i:03d}-[0-9]{{6}}\b"}
        elif kind == 2:
            when = {"labels": {f"team{i}": "blocked"}}
        else:
            when = {"all": [{"tenant": [f"tenant-{i}"]}, {"not": {"tier": ["premium"]}}]}
        then = rng.choice([{"exclude": ["frontier-large"]}, {"require": {"deployment": "on_prem"}},
                           {"objective": "cheapest"}, {"route": "billing"}, {"deny": "blocked"}])
        rules.append({"name": f"gen-{i:03d}", "when": when, "then": then})
    return rules


def _bundles(work: Path) -> tuple[Path, Path, int]:
    from semroute.bundle import build_bundle
    from semroute.encoder import OnnxEncoder
    from semroute.export import default_encoder_dir
    from semroute.routes import load_routes

    enc_dir = default_encoder_dir()
    enc = OnnxEncoder(enc_dir, threads=1)
    off_routes, on_routes = work / "routes-off", work / "routes-on"
    shutil.copytree(REPO / "routes", off_routes)
    (off_routes / "policy.yaml").unlink()
    shutil.copytree(REPO / "routes", on_routes)
    doc = yaml.safe_load((on_routes / "policy.yaml").read_text())
    doc["policy"]["rules"] += generated_rules(200)
    (on_routes / "policy.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    rs_on = load_routes([on_routes])
    build_bundle(load_routes([off_routes]), enc, enc_dir, work / "off")
    build_bundle(rs_on, enc, enc_dir, work / "on", reuse=work / "off")
    return work / "off", work / "on", len(rs_on.policy.rules) if rs_on.policy else 0


def _route_timer(target: str) -> tuple[Callable[[str], tuple[float, float, int]], Any]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from semroute._proto.semroute.v1 import router_pb2 as pb
    from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc

    ch = grpc.insecure_channel(target)
    stub = pb_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
    health = health_pb2_grpc.HealthStub(ch)

    def call(q: str) -> tuple[float, float, int]:
        if q == _FLOOR:  # an empty round trip: what any Python gRPC call pays, decision or not
            t = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=30)
            return time.perf_counter() - t, 0.0, 0
        t = time.perf_counter()
        resp = stub.Route(pb.RouteRequest(text=q, metadata=pb.RequestMetadata(), options=pb.RouteOptions()),
                          timeout=30)
        return time.perf_counter() - t, resp.decision.timings.total_ns / 1e9, resp.decision.timings.encode_ns

    return call, ch


def _interleaved(calls: dict[str, Callable[[str], tuple[float, float, int]]], qs: dict[str, list[str]], n: int
                 ) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {k: {"client": [], "server": [], "encode_ns": []} for k in calls}
    i = 0
    while any(len(v["client"]) < n for v in out.values()):
        for k, fn in calls.items():
            pool = qs[k]
            for j in range(2):
                fn(pool[(i + j) % len(pool)])
            for j in range(_BLOCK):
                c, s, e = fn(pool[(i + j) % len(pool)])
                out[k]["client"].append(c)
                out[k]["server"].append(s)
                out[k]["encode_ns"].append(float(e))
        i += _BLOCK
    return out


ADVERSARIAL = {
    "digits_and_separators": "1234-5678 9012 " * 6900,
    "phone_look_alikes": "+1 (555) 000-0000 call me " * 4000,
    "email_near_misses": "user.name+tag@@example..org a@b.png " * 3000,
    "keyword_prefixes": "subpoen affidavi ceas and desis power of attorne " * 2100,
    "secret_fragments": "sk- ghp_ AKIA eyJ.eyJ. -----BEGIN PRIVATE " * 2600,
    "one_long_token": "a" * 100_000,
    "unicode_mix": "naïve café 東京 ✓ 0.0.0.0. " * 3600,
}


def _100kb(text: str) -> str:
    return text.encode("utf-8")[:100_000].decode("utf-8", "ignore")


def adversarial(on_bundle: Path, reps: int) -> dict[str, Any]:
    from semroute.bundle import load_bundle
    from semroute.errors import PolicyDeniedError
    from semroute.policy.engine import PolicyEngine
    from semroute.policy.types import RequestContext
    from semroute.routes import load_routes

    b = load_bundle(on_bundle)
    rs = load_routes([REPO / "routes"])  # the bundled rules only, as the target says
    assert rs.policy is not None
    engine = PolicyEngine(rs.policy, b.models, b.route_candidates(), b.fallback_candidates())
    rows = []
    for name, text in ADVERSARIAL.items():
        text = _100kb(text)
        ctx = RequestContext()
        samples = []
        for i in range(reps + 1):
            t = time.perf_counter()
            with contextlib.suppress(PolicyDeniedError):  # a refusal is an answer too; its time is what counts
                engine.pre(text, ctx)
            if i:  # the first call warms up
                samples.append(time.perf_counter() - t)
        rows.append({"text": name, "bytes": len(text.encode()), **summary(samples)})
    return {"rules": len(rs.policy.rules), "rows": rows, "worst_median_ms": max(r["median_ms"] for r in rows)}


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    """The ``policy`` suite of ``python -m benchmarks``."""
    work = workdir / "policy"
    work.mkdir()
    return measure(mode.n(100, 400), work)


def measure(n: int, work: Path) -> dict[str, Any]:
    """``n`` timed Route calls per path; bundles are built in ``work``."""
    qs = [json.loads(line)["text"] for line in (REPO / "examples" / "bundled_eval.jsonl").read_text().splitlines()]
    rule_qs = [f"I received a subpoena about {w}, what now" for w in ("my lease", "the accident", "a contract",
                                                                     "my employer", "a parking ticket")]
    off, on, n_rules = _bundles(work)
    with ServerProcess(off) as s_off, ServerProcess(on) as s_on:
        call_off, ch1 = _route_timer(s_off.target)
        call_on, ch2 = _route_timer(s_on.target)
        try:
            res = _interleaved(
                {"policy_off": call_off, "policy_on": call_on, "rule_alone": call_on, "grpc_floor": call_on},
                {"policy_off": qs, "policy_on": qs, "rule_alone": rule_qs, "grpc_floor": [_FLOOR]}, n)
        finally:
            ch1.close()
            ch2.close()
    adv = adversarial(on, reps=max(20, n // 20))
    out: dict[str, Any] = {"n": n, "rules_in_policy_on": n_rules, "queries": len(qs)}
    for k, v in res.items():
        out[k] = {"client": summary(v["client"]), "server": summary(v["server"]),
                  "encoder_called": sum(e > 0 for e in v["encode_ns"]) / len(v["encode_ns"])}
    med = {k: (statistics.median(v["client"]), statistics.median(v["server"])) for k, v in res.items()}
    out["ratios"] = {
        "on_over_off_client": med["policy_on"][0] / med["policy_off"][0],
        "on_over_off_server": med["policy_on"][1] / med["policy_off"][1],
        "rule_alone_over_semantic_client": med["rule_alone"][0] / med["policy_on"][0],
        "rule_alone_over_semantic_server": med["rule_alone"][1] / med["policy_on"][1],
        # both paths less the round trip every gRPC call pays (a health check on the same channel)
        "rule_alone_over_semantic_above_floor": (med["rule_alone"][0] - med["grpc_floor"][0])
        / (med["policy_on"][0] - med["grpc_floor"][0]),
    }
    out["adversarial_100kb"] = adv
    return out


def markdown(res: dict[str, Any]) -> str:
    """The standalone script's policy.md: the table under a heading, with the load average at the start and the end."""
    return "\n".join([
        "## Policy overhead", "", table(res), "",
        f"Load average (1, 5, 15 min) at the start {res['machine'].get('loadavg_at_start')}, at the end "
        f"{res.get('load_at_end')}: the machine is shared; ratios come from alternating blocks in one run.", "",
    ])


def table(res: dict[str, Any]) -> str:
    r = res["ratios"]
    lines = [
        f"Route over gRPC, concurrency 1, {res['n']} calls each, alternating blocks; policy on = "
        f"{res['rules_in_policy_on']} rules + PII detection.", "",
        "| path | p50 client ms | p90 client ms | p50 in server ms | encoder called |", "|---|---:|---:|---:|---:|",
    ]
    for k in ("policy_off", "policy_on", "rule_alone", "grpc_floor"):
        v = res[k]
        server = f"{v['server']['median_ms']:.3f}" if k != "grpc_floor" else "-"
        lines.append(f"| {k} | {v['client']['median_ms']:.3f} | {v['client']['p90_ms']:.3f} | "
                     f"{server} | {v['encoder_called']:.0%} |")
    lines += ["", "| ratio (p50) | client | in server | target |", "|---|---:|---:|---|",
              f"| policy on / off | {r['on_over_off_client']:.3f} | {r['on_over_off_server']:.3f} | <= 1.10 |",
              f"| rule alone / semantic | {r['rule_alone_over_semantic_client']:.3f} | "
              f"{r['rule_alone_over_semantic_server']:.3f} | <= 0.20 |",
              f"| rule alone / semantic, each less the gRPC floor | "
              f"{r['rule_alone_over_semantic_above_floor']:.3f} | - | |", ""]
    a = res["adversarial_100kb"]
    lines += [f"100 KB adversarial texts through the bundled policy's {a['rules']} rules + PII detection (in process, "
              "the pre step):", "", "| text | bytes | p50 ms | max ms |", "|---|---:|---:|---:|"]
    lines += [f"| {x['text']} | {x['bytes']} | {x['median_ms']:.2f} | {x['max_ms']:.2f} |" for x in a["rows"]]
    lines += ["", f"Worst p50: {a['worst_median_ms']:.2f} ms (target <= 5 ms)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.policy", description=__doc__)
    ap.add_argument("--n", type=int, default=400, help="timed Route calls per path")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ns = ap.parse_args(argv)
    t0 = time.perf_counter()
    facts = machine()
    with tempfile.TemporaryDirectory(prefix="semroute-policy-bench-") as tmp:
        res = {**measure(ns.n, Path(tmp)), "machine": facts, "load_at_end": list(os.getloadavg()), "wall_s": 0.0}
    res["wall_s"] = time.perf_counter() - t0
    write_results(ns.out, "policy", res, lambda: markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
