"""Where a `semroute serve` process spends a Route call: CPU time and run-queue wait per thread, per call.

    python -m benchmarks.server_threads BUNDLE [BUNDLE ...] [--n 300] [--src DIR ...]

For each bundle (and each ``--src``: a semroute source tree put first on the server's PYTHONPATH, to compare two
versions of the code on the same bundles), starts ``semroute serve``, warms it, sends ``--n`` Route calls at
concurrency 1 and reads ``/proc/PID/task/*/schedstat`` before and after: per thread (by name), CPU time and time
runnable but waiting for a core, divided by the calls. A diagnostic (prints a table; no result files): it showed
that the quality predictor's cost on the server is in the encoder thread, where it runs, and nowhere else.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc

from ._common import machine, queries


def threads(pid: int) -> dict[str, tuple[str, int, int]]:
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            run, wait, _ = (t / "schedstat").read_text().split()
            out[t.name] = ((t / "comm").read_text().strip(), int(run), int(wait))
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
    return out


def measure(bundle: Path, src: str | None, qs: list[str], n: int) -> tuple[float, list[tuple[str, float, float]]]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "semroute.cli", "serve", "--index", str(bundle), "--port", "0",
                             "--no-watch"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            m = re.search(r"on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise RuntimeError(f"{bundle}: the server did not start")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = pb_grpc.RouterStub(chan)
            for q in qs[:30]:
                stub.Route(pb.RouteRequest(text=q))
            before = threads(proc.pid)
            t0 = time.perf_counter()
            for i in range(n):
                stub.Route(pb.RouteRequest(text=qs[i % len(qs)]))
            wall = (time.perf_counter() - t0) / n * 1e3
            after = threads(proc.pid)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    rows = []
    for tid, (name, run, wait) in after.items():
        _, run0, wait0 = before.get(tid, (name, 0, 0))
        if run - run0 > 0.01 * n * 1e6:  # threads with at least 0.01 ms of CPU per call
            rows.append((name, (run - run0) / n / 1e6, (wait - wait0) / n / 1e6))
    return wall, sorted(rows, key=lambda r: -r[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.server_threads", description=__doc__)
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--src", action="append", help="a semroute source tree for the server (repeatable)")
    ns = ap.parse_args(argv)
    qs = queries(200, seed=1)
    la = machine()["loadavg_at_start"]
    print(f"load average at start {la[0]:.2f}; per Route call, per thread: CPU ms / run-queue wait ms")
    for src in ns.src or [None]:
        for b in ns.bundles:
            wall, rows = measure(b, src, qs, ns.n)
            per = "  ".join(f"{name} {cpu:.3f}/{wait:.3f}" for name, cpu, wait in rows)
            print(f"{src or 'this tree'} | {b.name}: {wall:.3f} ms per call | {per}", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
