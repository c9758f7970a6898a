"""Runtime feedback benchmark: the decision cache, ReportOutcome, and the cost of sharing state through Redis.

    PYTHONPATH=src python -m benchmarks.feedback [--n 300] [--out benchmarks/results]

Writes OUT/feedback.json and OUT/feedback.md. Three measurements, each side by side in one run, in alternating
blocks so that load on the machine falls on both sides alike:
1. Route p50, uncached vs cached, over gRPC on 127.0.0.1 (in-process state). Uncached calls send the same texts
   under a fresh tenant each time (the tenant is part of the cache key), so both sides route the same texts.
2. ReportOutcome p50 in process: the server's handler (validation + the feedback loop + the in-process store),
   called directly on an event loop; over gRPC alongside for context.
3. Route p50 with --state redis://127.0.0.1:PORT vs in-process state, two real servers, uncached and cached.
Needs Debian's redis-server for 3 (skipped, and said so, without it). Also the ``feedback`` suite of
``python -m benchmarks`` (--quick: 100 queries per side; --full: 300).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import REPO, Mode, build, machine, queries, summary, write_results
from .grpc_e2e import ServerProcess

FEEDBACK_YAML = """\
version: 1
feedback:
  escalation: {ladder: [small-chat, code-medium, frontier-large]}
  cache: {enabled: true, size: 100000, ttl_s: 3600}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Redis:
    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _route_block(client: Any, texts: list[str], *, cached: bool, tenants: itertools.count[int]) -> list[float]:
    out = []
    for t in texts:
        tenant = "warm" if cached else f"t{next(tenants)}"
        t0 = time.perf_counter()
        client.route(t, tenant=tenant)
        out.append(time.perf_counter() - t0)
    return out


def _alternate(blocks: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {k: [] for k in blocks}
    for _ in range(rounds):
        for k, fn in blocks.items():
            samples[k] += fn()
    return samples


def _report_in_process(bundle: Path, n: int) -> list[float]:
    from semroute._proto.semroute.v1 import router_pb2 as pb
    from semroute.router import Router
    from semroute.server.feedback import make_store
    from semroute.server.metrics import Metrics

    router = Router.load(bundle)
    fb = make_store("memory", Metrics())

    async def main() -> list[float]:
        out = []
        for i in range(n + 50):
            req = pb.ReportOutcomeRequest(request_id=f"r{i}", model="small-chat", outcome=pb.OUTCOME_OK,
                                          latency_ms=120.0, tokens_in=200, tokens_out=80, tenant="acme")
            t0 = time.perf_counter()
            await fb.report(router, req)
            if i >= 50:
                out.append(time.perf_counter() - t0)
        return out

    return asyncio.run(main())


def _store_overhead(bundle: Path, url: str, texts: list[str], rounds: int) -> dict[str, Any]:
    """The Route path's feedback step alone (cache lookup, snapshot, choice, background writes) with the encoder
    replaced by a decision computed beforehand: in-process vs Redis state in one event loop, alternating blocks.
    Isolates what the store adds from the encoder's time, which dominates (and is noisy on) a loaded machine."""
    from semroute._proto.semroute.v1 import router_pb2 as pb
    from semroute.router import Router
    from semroute.server.convert import decision_to_pb
    from semroute.server.feedback import make_store
    from semroute.server.metrics import Metrics

    router = Router.load(bundle)
    decided = {t: decision_to_pb(router.route(t)) for t in texts}
    stores = {"memory": make_store("memory", Metrics()), "redis": make_store(url, Metrics())}

    async def block(name: str, cached: bool, counter: itertools.count[int]) -> list[float]:
        fb = stores[name]
        out = []
        for t in texts:
            req = pb.RouteRequest(text=t, metadata=pb.RequestMetadata(tenant="warm" if cached else f"u{next(counter)}"))

            async def compute(t: str = t) -> pb.Decision:
                d = pb.Decision()
                d.CopyFrom(decided[t])
                return d

            t0 = time.perf_counter()
            await fb.route(router, req, (5, 3), time.perf_counter_ns(), compute, time.perf_counter_ns)
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0)  # let the background writes go, as between real requests
        return out

    async def main() -> dict[str, list[float]]:
        counter = itertools.count()
        samples: dict[str, list[float]] = {}
        for name in stores:  # warm: the cache under tenant "warm", connections open
            await block(name, True, counter)
        for _ in range(rounds):
            for name in stores:
                for cached in (False, True):
                    samples.setdefault(f"{name}_{'cached' if cached else 'uncached'}", []).extend(
                        await block(name, cached, counter))
        for fb in stores.values():
            await fb.loop.store.close()
        return samples

    s = asyncio.run(main())
    r: dict[str, Any] = {k: summary(v) for k, v in s.items()}
    for kind in ("uncached", "cached"):
        r[f"added_p50_ms_{kind}"] = r[f"redis_{kind}"]["median_ms"] - r[f"memory_{kind}"]["median_ms"]
    return r


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    """The ``feedback`` suite of ``python -m benchmarks``."""
    work = workdir / "feedback"
    work.mkdir()
    return measure(mode.n(100, 300), work)


def measure(n: int, tmp: Path) -> dict[str, Any]:
    """``n`` queries per side; routes, bundle and Redis live in ``tmp``."""
    from semroute.client import RouterClient

    routes = tmp / "routes"
    shutil.copytree(REPO / "routes", routes)
    (routes / "zz_feedback.yaml").write_text(FEEDBACK_YAML)
    bundle = tmp / "bundle"
    build(routes, bundle)
    texts = queries(n)
    block = max(10, n // 10)
    chunks = [texts[i:i + block] for i in range(0, len(texts), block)]
    res: dict[str, Any] = {"n_queries": n, "block": block}
    tenants = itertools.count()

    with ServerProcess(bundle) as mem, RouterClient(mem.target, timeout=30) as c:
        for t in texts:  # warm: every text now in the cache under tenant "warm"
            c.route(t, tenant="warm")
        it = itertools.cycle(chunks)
        s = _alternate({
            "uncached": lambda: _route_block(c, next(it), cached=False, tenants=tenants),
            "cached": lambda: _route_block(c, next(it), cached=True, tenants=tenants),
        }, rounds=len(chunks))
        res["route_cache"] = {k: summary(v) for k, v in s.items()}
        res["route_cache"]["ratio_p50"] = (res["route_cache"]["cached"]["median_ms"]
                                           / res["route_cache"]["uncached"]["median_ms"])
        grpc_report = []
        for i in range(n):
            t0 = time.perf_counter()
            c.report_outcome(f"g{i}", "small-chat", "ok", latency_ms=100, tokens_in=10, tokens_out=10)
            grpc_report.append(time.perf_counter() - t0)
    res["report_outcome"] = {"in_process": summary(_report_in_process(bundle, n)), "grpc": summary(grpc_report)}

    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        res["redis"] = {"skipped": "redis-server is not installed (apt-get install redis-server)"}
        return res
    redis = _Redis(tmp)
    try:
        url = f"redis://127.0.0.1:{redis.port}"
        with ServerProcess(bundle) as mem, ServerProcess(bundle, "--state", url) as red, \
                RouterClient(mem.target, timeout=30) as cm, RouterClient(red.target, timeout=30) as cr:
            for t in texts:
                cm.route(t, tenant="warm")
                cr.route(t, tenant="warm")
            it = itertools.cycle(chunks)
            s = _alternate({
                "memory_uncached": lambda: _route_block(cm, next(it), cached=False, tenants=tenants),
                "redis_uncached": lambda: _route_block(cr, next(it), cached=False, tenants=tenants),
                "memory_cached": lambda: _route_block(cm, next(it), cached=True, tenants=tenants),
                "redis_cached": lambda: _route_block(cr, next(it), cached=True, tenants=tenants),
            }, rounds=len(chunks))
            r = {k: summary(v) for k, v in s.items()}
            r["added_p50_ms_uncached"] = r["redis_uncached"]["median_ms"] - r["memory_uncached"]["median_ms"]
            r["added_p50_ms_cached"] = r["redis_cached"]["median_ms"] - r["memory_cached"]["median_ms"]
            res["redis"] = r
        res["redis_feedback_step"] = _store_overhead(bundle, url, texts[:50], rounds=max(1, n // 50))
    finally:
        redis.close()
    return res


def table(res: dict[str, Any]) -> str:
    rc, ro = res["route_cache"], res["report_outcome"]
    lines = [
        "| measurement | p50 ms | p90 ms | n | target | result |",
        "|---|---:|---:|---:|---|---|",
        f"| Route uncached (gRPC) | {rc['uncached']['median_ms']:.3f} | {rc['uncached']['p90_ms']:.3f} | "
        f"{rc['uncached']['n']} | | |",
        f"| Route cached (gRPC) | {rc['cached']['median_ms']:.3f} | {rc['cached']['p90_ms']:.3f} | "
        f"{rc['cached']['n']} | <= 0.3x uncached | {rc['ratio_p50']:.2f}x |",
        f"| ReportOutcome in process | {ro['in_process']['median_ms']:.3f} | {ro['in_process']['p90_ms']:.3f} | "
        f"{ro['in_process']['n']} | <= 0.5 ms | {'met' if ro['in_process']['median_ms'] <= 0.5 else 'missed'} |",
        f"| ReportOutcome over gRPC | {ro['grpc']['median_ms']:.3f} | {ro['grpc']['p90_ms']:.3f} | "
        f"{ro['grpc']['n']} | (context) | |",
    ]
    r = res.get("redis", {})
    if "skipped" in r:
        lines.append(f"\nRedis comparison skipped: {r['skipped']}")
    else:
        for kind in ("uncached", "cached"):
            for side in ("memory", "redis"):
                x = r[f"{side}_{kind}"]
                lines.append(f"| Route {kind}, state {side} | {x['median_ms']:.3f} | {x['p90_ms']:.3f} | "
                             f"{x['n']} | | |")
            added = r[f"added_p50_ms_{kind}"]
            lines.append(f"| Redis adds, {kind} | {added:+.3f} | | | <= 0.5 ms | "
                         f"{'met' if added <= 0.5 else 'missed'} |")
    f = res.get("redis_feedback_step")
    if f:
        lines += ["", "The feedback step alone (encoder replaced by a decision computed beforehand), in process:", "",
                  "| feedback step | memory p50 ms | redis p50 ms | Redis adds (p50) | target |",
                  "|---|---:|---:|---:|---|"]
        for kind in ("uncached", "cached"):
            lines.append(f"| {kind} | {f[f'memory_{kind}']['median_ms']:.3f} | {f[f'redis_{kind}']['median_ms']:.3f} | "
                         f"{f[f'added_p50_ms_{kind}']:+.3f} ms | <= 0.5 ms |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.feedback", description=__doc__)
    ap.add_argument("--n", type=int, default=300, help="queries per side (default 300)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ns = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="semroute-fb-") as tmp:
        t0 = time.perf_counter()
        res = measure(ns.n, Path(tmp))
    doc = {"machine": machine(), "ran": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "seconds": round(time.perf_counter() - t0, 1), "feedback": res}
    write_results(ns.out, "feedback", doc, lambda: f"# Runtime feedback benchmark ({doc['ran']})\n\n" + table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
