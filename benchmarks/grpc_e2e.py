"""Suite 2: the real server over gRPC on 127.0.0.1. Latency and throughput at several concurrencies, batching on
and off, and the overhead ratio against the bare encoder for the same queries."""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semroute.client import AsyncRouterClient
from semroute.encoder import OnnxEncoder

from ._common import REPO, Mode, build, clinc_routes_file, queries, summary


class ServerProcess:
    """``semroute serve --port 0`` in a subprocess; ``started_s`` is process start -> serving line."""

    def __init__(self, bundle: Path, *args: str) -> None:
        self.bundle = bundle
        self.args = args

    def __enter__(self) -> ServerProcess:
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "semroute.cli", "serve", "--index", str(self.bundle), "--port", "0",
             "--no-watch", *self.args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            m = re.search(r"on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.started_s = time.perf_counter() - t
                return self
        raise RuntimeError("server did not start")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=60)


async def _load(target: str, qs: list[str], concurrency: int, total: int, max_s: float,
                lat: list[float] | None = None) -> dict[str, Any]:
    """``concurrency`` callers share ``total`` Route calls; latencies are appended to ``lat`` when given."""
    lat = [] if lat is None else lat
    errors = 0
    async with AsyncRouterClient(target, timeout=30) as c:
        for q in qs[:10]:
            await c.route(q)
        counter = iter(range(total))
        deadline = time.perf_counter() + max_s

        async def worker() -> None:
            nonlocal errors
            for i in counter:  # bounded in count ...
                if time.perf_counter() > deadline:  # ... and in time
                    return
                t = time.perf_counter()
                try:
                    await c.route(qs[i % len(qs)])
                except Exception:
                    errors += 1
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - t0
    return {**summary(lat), "throughput_rps": len(lat) / elapsed, "errors": errors, "elapsed_s": elapsed}


_ROUNDS = 3


def _levels(servers: dict[str, ServerProcess], qs: list[str], levels: list[int], total: int) -> dict[str, Any]:
    """Each level in ``_ROUNDS`` rounds, each round every server in turn with ``total / _ROUNDS`` calls, so load
    drift on a shared machine (measured: +-20% between back-to-back runs of a second or two) hits every server
    alike; per server, latencies pooled and throughput = calls / time over its rounds."""
    out: dict[str, Any] = {}
    for c in levels:
        lat: dict[str, list[float]] = {k: [] for k in servers}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in servers}
        for _ in range(_ROUNDS):
            for k, s in servers.items():
                before = len(lat[k])
                r = asyncio.run(_load(s.target, qs, c, max(total // _ROUNDS, c), 60, lat[k]))
                runs[k].append({**r, "throughput_rps": (len(lat[k]) - before) / r["elapsed_s"]})
        out[str(c)] = {k: {**summary(lat[k]), "throughput_rps": len(lat[k]) / sum(r["elapsed_s"] for r in runs[k]),
                           "errors": sum(r["errors"] for r in runs[k]),
                           "rounds_rps": [round(r["throughput_rps"], 1) for r in runs[k]]}
                       for k in servers}
    return out


_BLOCK = 25


def _overhead(bundle: Path, target: str, qs: list[str], worker_target: str | None = None) -> dict[str, Any]:
    """Interleaved, same queries: bare int8 encoder (1 thread, batch 1), the whole decision in-process
    (Router.route), an empty gRPC round trip (health Check: the floor any Python gRPC service pays), and Route over
    gRPC at concurrency 1 with the Python client. For each Route call the server's own time (``timings.total_ns``:
    handler entered -> answer built) is read back, so what the server adds and what the transport and the client
    add show separately. The differences say where the time over the encoder goes. ``worker_target``: a server
    started with --no-inline-when-idle, whose lone queries still cross to the encoder thread and back (the design
    before the inline path), timed in the same rotation."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from semroute._proto.semroute.v1 import router_pb2 as pb
    from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
    from semroute.router import Router
    from semroute.server.convert import decision_from_pb

    enc = OnnxEncoder(bundle / "encoder", threads=1)
    router = Router.load(bundle, threads=1)
    samples: dict[str, list[float]] = {"bare_encoder": [], "in_process": [], "grpc_empty_rtt": [],
                                       "grpc_route_c1": []}
    server_s: list[float] = []
    with contextlib.ExitStack() as stack:
        ch = stack.enter_context(grpc.insecure_channel(target))
        health = health_pb2_grpc.HealthStub(ch)
        stub = pb_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]

        def route_via(s: Any) -> Callable[[str], float]:
            def route(q: str) -> float:  # what RouterClient.route does, keeping the server's timing
                req = pb.RouteRequest(text=q, metadata=pb.RequestMetadata(),
                                      options=pb.RouteOptions(top_scores=5, top_neighbours=3))
                resp = s.Route(req, timeout=10)
                decision_from_pb(resp.decision)
                return resp.decision.timings.total_ns / 1e9

            return route

        calls: dict[str, Callable[[str], object]] = {
            "bare_encoder": lambda q: enc.encode([q]),
            "in_process": lambda q: router.route(q),
            "grpc_empty_rtt": lambda q: health.Check(health_pb2.HealthCheckRequest(), timeout=10),
            "grpc_route_c1": route_via(stub),
        }
        if worker_target is not None:
            wch = stack.enter_context(grpc.insecure_channel(worker_target))
            calls["grpc_route_c1_via_worker"] = route_via(pb_grpc.RouterStub(wch))  # type: ignore[no-untyped-call]
            samples["grpc_route_c1_via_worker"] = []
        # alternating blocks of queries (see _common.interleave): the three encoders here (bare, in-process, the
        # server's) touch ~11 MB of layer weights each, plus the indexes, against a 32 MB L3; one call each in
        # turn measured cold caches
        for start in range(0, len(qs), _BLOCK):
            chunk = qs[start : start + _BLOCK]
            for k, fn in calls.items():
                for q in chunk[:2]:
                    fn(q)  # re-warm after the other calls' block
                for q in chunk:
                    t = time.perf_counter()
                    r = fn(q)
                    samples[k].append(time.perf_counter() - t)
                    if k == "grpc_route_c1":
                        server_s.append(float(r))  # type: ignore[arg-type]
    out: dict[str, Any] = {k: summary(v) for k, v in samples.items()}
    out["grpc_route_server_side"] = summary(server_s)
    out["grpc_route_outside_server"] = summary(
        [c - s for c, s in zip(samples["grpc_route_c1"], server_s, strict=True)]
    )
    out["p50_ratio"] = statistics.median(samples["grpc_route_c1"]) / statistics.median(samples["bare_encoder"])
    if worker_target is not None:
        out["p50_ratio_via_worker"] = (statistics.median(samples["grpc_route_c1_via_worker"])
                                       / statistics.median(samples["bare_encoder"]))
    return out


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    qs = queries(mode.n(200, 1000), seed=2)
    sets = {"bundled": REPO / "routes"}
    if not mode.quick:
        sets["clinc15k"] = clinc_routes_file(workdir / "clinc_routes" / "routes.yaml").parent
    levels = [1, 8, 32] if mode.quick else [1, 4, 8, 16, 32, 64]
    total = mode.n(300, 3000)
    out: dict[str, Any] = {}
    for name, routes in sets.items():
        bundle = workdir / f"grpc-{name}"
        build(routes, bundle)
        res: dict[str, Any] = {"levels": {}}
        # on: the default server (batching, a lone query encoded inline); worker: batching, every query through the
        # encoder thread (--no-inline-when-idle, the design before the inline path); off: no batching
        with ServerProcess(bundle) as on, ServerProcess(bundle, "--no-inline-when-idle") as worker, \
                ServerProcess(bundle, "--max-batch-size", "1") as off:
            res["overhead"] = _overhead(bundle, on.target, qs[: mode.n(100, 500)], worker.target)
            servers = {"batching_on": on, "batching_on_no_inline": worker, "batching_off": off}
            res["levels"] = _levels(servers, qs, levels, total)
            res["rss_mb_after_load"] = {k: s.rss_mb() for k, s in servers.items()}
        base = res["levels"]["1"]["batching_off"]["throughput_rps"]
        for r in res["levels"].values():
            r["on_over_sequential"] = r["batching_on"]["throughput_rps"] / base
        out[name] = res
    return out


def table(res: dict[str, Any]) -> str:
    lines = []
    for name, r in res.items():
        o = r["overhead"]
        lines.append(f"**{name}**: bare int8 encoder p50 {o['bare_encoder']['median_ms']:.2f} ms; Route over gRPC "
                     f"(c=1) p50 {o['grpc_route_c1']['median_ms']:.2f} ms, p99 {o['grpc_route_c1']['p99_ms']:.2f} ms;"
                     f" overhead ratio {o['p50_ratio']:.2f}x")
        if "in_process" in o:  # where the time over the encoder goes (p50s, interleaved, same queries)
            # a Python gRPC service cannot beat encoder + empty round trip: the ratio's floor on this machine
            floor = (o["bare_encoder"]["median_ms"] + o["grpc_empty_rtt"]["median_ms"]) / o["bare_encoder"]["median_ms"]
            lines.append(f"(whole decision in-process p50 {o['in_process']['median_ms']:.2f} ms; empty gRPC round "
                         f"trip, health Check, p50 {o['grpc_empty_rtt']['median_ms']:.2f} ms, so encoder + empty round "
                         f"trip = {floor:.2f}x)")
        if "grpc_route_c1_via_worker" in o:
            w = o["grpc_route_c1_via_worker"]["median_ms"]
            lines.append(f"(the same server with --no-inline-when-idle, every query through the encoder thread: p50 "
                         f"{w:.2f} ms, ratio {o['p50_ratio_via_worker']:.2f}x)")
        if "grpc_route_server_side" in o:
            lines.append(f"(of each Route call: in the server, handler to answer, p50 "
                         f"{o['grpc_route_server_side']['median_ms']:.2f} ms; outside it, transport and client, p50 "
                         f"{o['grpc_route_outside_server']['median_ms']:.2f} ms)")
        lines += ["", "| concurrency | batching | p50 ms | p99 ms | req/s | x sequential | req/s by round |",
                  "|---|---|---|---|---|---|---|"]
        for c, lv in r["levels"].items():
            for k, x in lv.items():
                if not isinstance(x, dict):
                    continue
                ratio = x["throughput_rps"] / r["levels"]["1"]["batching_off"]["throughput_rps"]
                label = {"batching_on": "on", "batching_on_no_inline": "on, --no-inline-when-idle",
                         "batching_off": "off"}.get(k, k)
                by_round = ", ".join(f"{v:.0f}" for v in x.get("rounds_rps", []))
                lines.append(f"| {c} | {label} | {x['median_ms']:.2f} | {x['p99_ms']:.2f} | "
                             f"{x['throughput_rps']:.0f} | {ratio:.2f} | {by_round} |")
        lines.append("")
    return "\n".join(lines)
