"""Suite 'floor': where Route's time over the encoder goes at concurrency 1, in one run
(``python -m benchmarks --suites floor``; p50 per call and its ratio to the bare encoder).

Same queries, alternating blocks of 20 calls (each block after 2 untimed ones), one sync Python client as
RouterClient: the bare int8 encoder and the whole decision in process; an empty RPC (health Check) on the real
server; bare servers (benchmarks/_floor_server.py) answering a fixed decision after no work, after the encoder alone,
and after the whole decision, on grpc.aio (decision on the event loop) and on a synchronous grpc.server (decision on
a pool thread); and the real server (``semroute serve``) with and without ``--inline-when-idle``."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._common import REPO, Mode, build, queries


@contextlib.contextmanager
def _floor_server(kind: str, bundle: Path) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._floor_server", kind, str(bundle)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"on (127\.0\.0\.1:\d+)", line)
            if m:
                yield m.group(1)
                return
        raise RuntimeError(f"{kind} floor server did not start")
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    bundle = workdir / "floor-bundled"
    build(REPO / "routes", bundle)
    return measure(bundle, mode.n(5, 40))


def measure(bundle: Path, rounds: int) -> dict[str, Any]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from semroute._proto.semroute.v1 import router_pb2 as pb
    from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
    from semroute.encoder import OnnxEncoder
    from semroute.router import Router
    from semroute.server.convert import decision_from_pb

    from .grpc_e2e import ServerProcess

    qs = queries(20 * rounds + 2, seed=2)
    enc = OnnxEncoder(bundle / "encoder", threads=1)
    router = Router.load(bundle, threads=1)
    with contextlib.ExitStack() as st:
        aio = st.enter_context(_floor_server("aio", bundle))
        sync = st.enter_context(_floor_server("sync", bundle))
        real = st.enter_context(ServerProcess(bundle))
        worker = st.enter_context(ServerProcess(bundle, "--no-inline-when-idle"))

        def stub(target: str) -> Any:
            return pb_grpc.RouterStub(st.enter_context(grpc.insecure_channel(target)))  # type: ignore[no-untyped-call]

        def route(s: Any, work: str = "") -> Callable[[str], int]:
            md = pb.RequestMetadata(tenant=work)

            def call(q: str) -> int:
                r = s.Route(pb.RouteRequest(text=q, metadata=md,
                                            options=pb.RouteOptions(top_scores=5, top_neighbours=3)), timeout=10)
                decision_from_pb(r.decision)
                return int(r.decision.timings.total_ns)

            return call

        health = health_pb2_grpc.HealthStub(st.enter_context(grpc.insecure_channel(real.target)))
        a, s = stub(aio), stub(sync)
        calls: dict[str, Callable[[str], object]] = {
            "bare int8 encoder": lambda q: enc.encode([q]),
            "whole decision in process (Router.route)": lambda q: router.route(q),
            "empty RPC (health Check, real server)": lambda q: health.Check(health_pb2.HealthCheckRequest()),
            "bare grpc.aio, fixed answer, no work": route(a, "none"),
            "bare grpc.aio, encoder then fixed answer": route(a, "encode"),
            "bare grpc.aio, whole decision on the loop": route(a, "decide"),
            "bare sync grpc.server, whole decision on a pool thread": route(s, "decide"),
            "semroute serve (inline when idle, the default)": route(stub(real.target)),
            "semroute serve --no-inline-when-idle": route(stub(worker.target)),
        }
        wall: dict[str, list[float]] = {k: [] for k in calls}
        inside: dict[str, list[float]] = {k: [] for k in calls}
        load = os.getloadavg()
        for r in range(rounds):
            chunk = qs[r * 20: r * 20 + 22]
            for k, fn in calls.items():
                for q in chunk[:2]:
                    fn(q)
                for q in chunk[2:]:
                    t = time.perf_counter()
                    x = fn(q)
                    wall[k].append(time.perf_counter() - t)
                    if isinstance(x, int):
                        inside[k].append(x / 1e9)
    base = statistics.median(wall["bare int8 encoder"])
    return {"load_avg": [load, os.getloadavg()], "rows": {
        k: {"p50_ms": statistics.median(v) * 1e3, "ratio": statistics.median(v) / base, "n": len(v),
            "handler_p50_ms": statistics.median(inside[k]) * 1e3 if inside[k] else None}
        for k, v in wall.items()}}


def table(res: dict[str, Any]) -> str:
    lines = ["| call (c=1, p50) | ms | x bare encoder | in the handler, ms |", "|---|---|---|---|"]
    for k, r in res["rows"].items():
        h = f"{r['handler_p50_ms']:.2f}" if r["handler_p50_ms"] is not None else ""
        lines.append(f"| {k} | {r['p50_ms']:.2f} | {r['ratio']:.2f} | {h} |")
    (l0, *_), (l1, *_) = res["load_avg"]
    lines.append(f"\n_load average {l0:.2f} at start, {l1:.2f} at end; {next(iter(res['rows'].values()))['n']} calls "
                 "each_")
    return "\n".join(lines)
