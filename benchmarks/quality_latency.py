"""What per-query quality prediction adds to Route latency: the same bundle without a quality predictor, with the
head-only predictor (what fit-quality chooses on RouteLLM's outcomes) and with kNN + heads, each over 15,000
outcome prompts and served by ``semroute serve``; Route at concurrency 1, in alternating blocks, in one run.

    python -m benchmarks.quality_latency [--n 600] [--out benchmarks/results]

The 15,000 outcome prompts are RouteLLM's 13,117 (benchmarks/routellm_data.py, embeddings cached by
benchmarks/cost_quality.py) and 1,883 of them again with a little noise added to their vectors (the size is
what costs time, not where the vectors came from). Settings: 4 cluster heads (every cost-quality fold chose
them); the kNN variant blends them half and half with k=50 neighbours (the most the folds chose), so both the
outcome index search and the heads are on its path. Queries: CLINC150 validation texts (short, so the encoder's
share is small and the predictor's share shows).

Beside wall-clock latency, each server's threads' scheduler statistics (/proc/PID/task/*/schedstat: time on a
CPU and time runnable but waiting for one) are read before and after its calls, so the added latency splits
into work the predictor does and waiting for a core on a busy machine. Writes ``quality_latency.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.quality.fit import refit
from semroute.quality.predictor import QualityPredictor, Settings, text_features
from semroute.quality.store import write_quality_bundle

from . import routellm_data
from ._common import REPO, build, machine, queries, write_results
from .cost_quality import MODELS, load
from .grpc_e2e import ServerProcess

N_PROMPTS = 15_000
VARIANTS = {
    "head_only": Settings(k=50, tau=1.0, alpha=1.0, clusters=4, l2=1e-3, blend=1.0),
    "knn_heads": Settings(k=50, tau=1.0, alpha=1.0, clusters=4, l2=1e-3, blend=0.5),
}


def make_bundles(tmp: Path) -> tuple[Path, dict[str, tuple[Path, QualityPredictor]]]:
    plain = tmp / "plain"
    build(REPO / "examples" / "routellm" / "routes.yaml", plain)
    rows, x = load(routellm_data.OUT)
    texts = [r["text"] for r in rows]
    y = np.array([[r["outcomes"][m] for m in MODELS] for r in rows])
    rng = np.random.default_rng(0)
    extra = rng.choice(len(rows), N_PROMPTS - len(rows), replace=False)
    noisy = x[extra] + rng.normal(0, 0.02, (len(extra), x.shape[1])).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    xs = np.vstack([x, noisy]).astype(np.float32)
    ts = texts + [texts[i] for i in extra]
    ys = np.vstack([y, y[extra]])
    feats = np.c_[xs.astype(np.float64), text_features(ts)]
    out = {}
    for name, st in VARIANTS.items():
        predictor = refit(xs, feats, ys, MODELS, st, np.array([[1.0, 0.0], [1.0, 0.0]]), seed=0,
                          index_factory=None, info={"cv": {"note": "latency benchmark: fixed settings"}})
        write_quality_bundle(plain, tmp / name, predictor, {"note": "benchmarks/quality_latency.py"})
        out[name] = (tmp / name, predictor)
    return plain, out


def schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable waiting for a CPU), summed over the process's threads."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            a, b, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
        run += int(a)
        wait += int(b)
    return run, wait


def in_process(plain: Path, variants: dict[str, tuple[Path, QualityPredictor]], qs: list[str]) -> dict[str, Any]:
    """The predictor alone, batch 1, on the serving thread's settings (one FAISS thread)."""
    from semroute.index import set_threads
    from semroute.router import Router

    set_threads(1)
    router = Router.load(plain)
    vecs = router.encoder.encode(qs).vectors
    out: dict[str, Any] = {}
    for name, (path, _) in variants.items():
        pred = Router.load(path).quality_predictor
        assert isinstance(pred, QualityPredictor)
        for i in range(20):  # warm
            pred.predict(vecs[i : i + 1], qs[i : i + 1])
        t_all: list[float] = []
        for _ in range(3):
            for i in range(len(qs)):
                t = time.perf_counter()
                pred.predict(vecs[i : i + 1], qs[i : i + 1])
                t_all.append(time.perf_counter() - t)
        # as in the server: right after the encoder has run (its ~11 MB of int8 weights pass through the cache
        # the outcome index would otherwise stay in)
        t_cold: list[float] = []
        for i in range(len(qs)):
            router.encoder.encode(qs[i : i + 1])
            t = time.perf_counter()
            pred.predict(vecs[i : i + 1], qs[i : i + 1])
            t_cold.append(time.perf_counter() - t)
        out[name] = {"predict_p50_ms": statistics.median(t_all) * 1e3,
                     "predict_after_encoder_p50_ms": statistics.median(t_cold) * 1e3}
        if pred.index is not None:  # the outcome index search alone, at the serving effort and the route index's
            for ef in (pred.index.search_params.get("ef_search"), 128):
                pred.index.set_ef_search(ef)
                t_s = []
                for i in range(len(qs)):
                    t = time.perf_counter()
                    pred.index.search(vecs[i : i + 1], pred.settings.k)
                    t_s.append(time.perf_counter() - t)
                out[name][f"search_ef{ef}_p50_ms"] = statistics.median(t_s) * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality_latency", description=__doc__)
    ap.add_argument("--n", type=int, default=600, help="timed Route calls per server")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ns = ap.parse_args(argv)
    qs = queries(200, seed=1)
    mach = machine()
    with tempfile.TemporaryDirectory(prefix="semroute-qlat-") as d:
        plain, variants = make_bundles(Path(d))
        alone = in_process(plain, variants, qs)
        names = ["without", *variants]
        paths = {"without": plain, **{k: v[0] for k, v in variants.items()}}
        lat: dict[str, list[float]] = {k: [] for k in names}
        score: dict[str, list[int]] = {k: [] for k in names}
        cpu: dict[str, list[int]] = {k: [0, 0] for k in names}
        servers = {k: ServerProcess(paths[k]) for k in names}
        for s in servers.values():
            s.__enter__()
        try:
            chans = {k: grpc.insecure_channel(s.target) for k, s in servers.items()}
            stubs = {k: pb_grpc.RouterStub(c) for k, c in chans.items()}
            i = 0
            while min(len(v) for v in lat.values()) < ns.n:
                for k, stub in stubs.items():
                    for _ in range(3):  # untimed warm-up of each block
                        stub.Route(pb.RouteRequest(text=qs[i % len(qs)]))
                    r0, w0 = schedstat(servers[k].proc.pid)
                    for _ in range(25):
                        q = qs[i % len(qs)]
                        i += 1
                        t = time.perf_counter()
                        resp = stub.Route(pb.RouteRequest(text=q))
                        lat[k].append(time.perf_counter() - t)
                        score[k].append(resp.decision.timings.score_ns)
                    r1, w1 = schedstat(servers[k].proc.pid)
                    cpu[k][0] += r1 - r0
                    cpu[k][1] += w1 - w0
            for c in chans.values():
                c.close()
        finally:
            for s in servers.values():
                s.__exit__(None, None, None)
    end_load = os.getloadavg()
    p50 = {k: statistics.median(v) * 1e3 for k, v in lat.items()}
    res: dict[str, Any] = {
        "machine": mach, "loadavg_at_end": end_load, "n_outcome_prompts": N_PROMPTS, "n": ns.n,
        "settings": {k: vars(v) for k, v in VARIANTS.items()},
        "route_p50_ms": p50,
        "added_ms": {k: p50[k] - p50["without"] for k in variants},
        "ratio": {k: p50[k] / p50["without"] for k in variants},
        "server_score_stage_p50_ms": {k: statistics.median(v) / 1e6 for k, v in score.items()},
        # per timed call: the server's CPU time and its threads' time runnable but waiting for a core (warm-up calls
        # are outside the window)
        "server_cpu_ms_per_call": {k: v[0] / len(lat[k]) / 1e6 for k, v in cpu.items()},
        "server_runqueue_wait_ms_per_call": {k: v[1] / len(lat[k]) / 1e6 for k, v in cpu.items()},
        "in_process": alone,
        "index_factory": variants["knn_heads"][1].info.get("index_factory"),
    }
    la = mach["loadavg_at_start"]
    md = [f"Quality prediction on the Route path ({mach['date']}; load average at start {la[0]:.2f} / {la[1]:.2f} / "
          f"{la[2]:.2f}, at end {end_load[0]:.2f} / {end_load[1]:.2f} / {end_load[2]:.2f}; 2 cores): "
          f"{N_PROMPTS} outcome prompts, outcome index {res['index_factory']}, concurrency 1, {ns.n} calls per "
          "server in alternating blocks of 25, one run.", "",
          "| bundle | Route p50 (ms) | added (ms) | ratio | server score stage p50 (ms) | server CPU per call (ms) "
          "| server runqueue wait per call (ms) | predictor alone, in process, p50 (ms): back to back / after an "
          "encoder call |", "|---|---|---|---|---|---|---|---|"]
    for k in names:
        added = f"{res['added_ms'][k]:+.3f}" if k in variants else ""
        ratio = f"{res['ratio'][k]:.3f}" if k in variants else ""
        own = (f"{alone[k]['predict_p50_ms']:.3f} / {alone[k]['predict_after_encoder_p50_ms']:.3f}" if k in alone
               else "")
        md.append(f"| {k} | {p50[k]:.3f} | {added} | {ratio} | {res['server_score_stage_p50_ms'][k]:.3f} | "
                  f"{res['server_cpu_ms_per_call'][k]:.3f} | {res['server_runqueue_wait_ms_per_call'][k]:.3f} | "
                  f"{own} |")
    knn = alone["knn_heads"]
    md += ["", "Goal: prediction adds <= 0.2 ms to Route p50. Outcome index search alone (k=50, batch 1): " +
           ", ".join(f"{k.removeprefix('search_').removesuffix('_p50_ms')} {v:.3f} ms"
                     for k, v in knn.items() if k.startswith("search_")) + "."]
    text = "\n".join(md) + "\n"
    write_results(ns.out, "quality_latency", res, lambda: text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
