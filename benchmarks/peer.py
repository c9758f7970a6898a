"""Suite 5: aurelio semantic-router side by side with semroute, same routes, same queries, same model weights.

The peer runs in its own virtual environment (its dependencies conflict with nothing of ours, but it needs torch):
    python -m venv .peer-venv && .peer-venv/bin/pip install torch==2.13.0 && \\
        .peer-venv/bin/pip install -r benchmarks/peer_requirements.txt
    SEMROUTE_PEER_PYTHON=.peer-venv/bin/python python -m benchmarks --suites peer
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from semroute.client import RouterClient
from semroute.router import Router
from semroute.routes import load_routes

from ._common import REPO, Mode, build, clinc_routes_file, queries, summary
from .grpc_e2e import ServerProcess


def _peer_python() -> str | None:
    # An explicit SEMROUTE_PEER_PYTHON wins, even when it points nowhere: then the suite is skipped, not silently
    # run with some other environment that happens to sit in the checkout.
    env = os.environ.get("SEMROUTE_PEER_PYTHON")
    p = env if env is not None else str(REPO / ".peer-venv" / "bin" / "python")
    return p if p and Path(p).is_file() else None


def _peer(py: str, routes_dir: Path, qs: list[str]) -> dict[str, Any]:
    from semroute.export import default_model_path

    rs = load_routes([routes_dir])
    job = {"model_path": str(default_model_path()), "threads": 1, "queries": qs,
           "routes": {r.name: list(r.utterances) for r in rs.routes}}
    out = subprocess.run([py, str(Path(__file__).with_name("_peer_worker.py"))], input=json.dumps(job),
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"peer failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    py = _peer_python()
    if py is None:
        return {"skipped": "no peer environment: set SEMROUTE_PEER_PYTHON (see benchmarks/peer.py)"}
    qs = queries(mode.n(100, 500), seed=3)
    result: dict[str, Any] = {"peer_python": py}
    sets = {"bundled": REPO / "routes"}
    if not mode.quick:
        sets["clinc15k"] = clinc_routes_file(workdir / "clinc_routes" / "routes.yaml").parent
    for name, routes in sets.items():
        bundle = workdir / f"peer-{name}"
        sem_build = build(routes, bundle)
        # alternate: peer, semroute in-process, semroute over gRPC -- all at batch 1, one thread each
        peer = _peer(py, routes, qs)
        router = Router.load(bundle)
        local = []
        for q in qs:
            t = time.perf_counter()
            router.route(q)
            local.append(time.perf_counter() - t)
        with ServerProcess(bundle) as srv, RouterClient(srv.target) as c:
            for q in qs[:5]:
                c.route(q)
            remote = []
            for q in qs:
                t = time.perf_counter()
                c.route(q)
                remote.append(time.perf_counter() - t)
        t = time.perf_counter()
        Router.load(bundle)
        load_s = time.perf_counter() - t
        p50 = {k: statistics.median(v) for k, v in
               {"peer": peer["latencies_s"], "local": local, "grpc": remote}.items()}
        result[name] = {
            "peer_version": peer["version"],
            "peer_build_s": peer["build_s"],
            "semroute_build_index_s": sem_build,
            "semroute_bundle_load_s": load_s,
            "peer": summary(peer["latencies_s"]),
            "semroute_in_process": summary(local),
            "semroute_grpc": summary(remote),
            "decisions_per_s": {k: 1 / v for k, v in p50.items()},
            "speedup_in_process": p50["peer"] / p50["local"],
            "speedup_grpc": p50["peer"] / p50["grpc"],
        }
    return result


def table(res: dict[str, Any]) -> str:
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    lines = ["| route set | system | p50 ms | p99 ms | decisions/s (batch 1) | x peer | build / start s |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        if not isinstance(r, dict):
            continue
        lines.append(f"| {name} | semantic-router {r['peer_version']} | {r['peer']['median_ms']:.2f} | "
                     f"{r['peer']['p99_ms']:.2f} | {r['decisions_per_s']['peer']:.0f} | 1.0 | "
                     f"{r['peer_build_s']:.1f} (re-embeds at every start) |")
        lines.append(f"| {name} | semroute in-process | {r['semroute_in_process']['median_ms']:.2f} | "
                     f"{r['semroute_in_process']['p99_ms']:.2f} | {r['decisions_per_s']['local']:.0f} | "
                     f"{r['speedup_in_process']:.1f} | build {r['semroute_build_index_s']:.1f}, "
                     f"load {r['semroute_bundle_load_s']:.2f} |")
        lines.append(f"| {name} | semroute gRPC | {r['semroute_grpc']['median_ms']:.2f} | "
                     f"{r['semroute_grpc']['p99_ms']:.2f} | {r['decisions_per_s']['grpc']:.0f} | "
                     f"{r['speedup_grpc']:.1f} | |")
    return "\n".join(lines)
