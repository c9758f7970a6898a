"""What per-query quality prediction adds to Route latency: the same bundle with and without a quality predictor
over 15,000 outcome prompts, each served by ``semroute serve``, Route at concurrency 1, in alternating blocks.

    python -m benchmarks.quality_latency [--n 400] [--out benchmarks/results]

The 15,000 outcome prompts are RouteLLM's 13,117 (benchmarks/routellm_data.py, embeddings cached by
benchmarks/cost_quality.py) and 1,883 of them again with a little noise added to their vectors (the size is
what costs time, not where the vectors came from). The predictor uses the settings the cost-quality benchmark
chose in every fold (kNN k=50 blended half and half with 4 cluster heads), so both the index search and the
heads are on the path. Queries: CLINC150 validation texts (short, so the encoder's share is small and the
predictor's share shows). Writes ``quality_latency.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from semroute._fs import atomic_write_bytes
from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.quality.fit import refit
from semroute.quality.predictor import Settings, text_features
from semroute.quality.store import write_quality_bundle

from . import routellm_data
from ._common import REPO, build, machine, queries
from .cost_quality import MODELS, load
from .grpc_e2e import ServerProcess

N_PROMPTS = 15_000
SETTINGS = Settings(k=50, tau=1.0, alpha=1.0, clusters=4, l2=1e-3, blend=0.5)


def make_bundles(tmp: Path) -> tuple[Path, Path, Any]:
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
    predictor = refit(xs, feats, ys, MODELS, SETTINGS, np.array([[1.0, 0.0], [1.0, 0.0]]), seed=0,
                      index_factory=None, info={"cv": {"note": "latency benchmark: fixed settings"}})
    fitted = tmp / "fitted"
    write_quality_bundle(plain, fitted, predictor, {"note": "benchmarks/quality_latency.py"})
    return plain, fitted, predictor


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality_latency", description=__doc__)
    ap.add_argument("--n", type=int, default=400, help="timed Route calls per server")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ns = ap.parse_args(argv)
    qs = queries(200, seed=1)
    with tempfile.TemporaryDirectory(prefix="semroute-qlat-") as d:
        plain, fitted, predictor = make_bundles(Path(d))
        # the predictor alone, in process, one query at a time (what the server adds per query)
        from semroute.router import Router

        router = Router.load(fitted)
        vecs = router.encoder.encode(qs).vectors
        alone = []
        for i in range(len(qs)):
            t = time.perf_counter()
            predictor.predict(vecs[i : i + 1], qs[i : i + 1])
            alone.append(time.perf_counter() - t)
        del router
        lat: dict[str, list[float]] = {"without": [], "with": []}
        with ServerProcess(plain) as s0, ServerProcess(fitted) as s1:
            chans = {"without": grpc.insecure_channel(s0.target), "with": grpc.insecure_channel(s1.target)}
            stubs = {k: pb_grpc.RouterStub(c) for k, c in chans.items()}
            i = 0
            while min(len(v) for v in lat.values()) < ns.n:
                for k, stub in stubs.items():
                    for _ in range(3):  # untimed warm-up of each block
                        stub.Route(pb.RouteRequest(text=qs[i % len(qs)]))
                    for _ in range(25):
                        q = qs[i % len(qs)]
                        i += 1
                        t = time.perf_counter()
                        stub.Route(pb.RouteRequest(text=q))
                        lat[k].append(time.perf_counter() - t)
            for c in chans.values():
                c.close()
    p50 = {k: statistics.median(v) * 1e3 for k, v in lat.items()}
    res = {
        "machine": machine(), "n_outcome_prompts": N_PROMPTS, "settings": vars(SETTINGS), "n": ns.n,
        "route_p50_ms": p50, "added_ms": p50["with"] - p50["without"], "ratio": p50["with"] / p50["without"],
        "predictor_alone_p50_ms": statistics.median(alone) * 1e3,
        "index_factory": predictor.info.get("index_factory"),
    }
    md = (f"Quality prediction on the Route path ({res['machine']['date']}, load average at start "
          f"{res['machine']['loadavg_at_start']}): {N_PROMPTS} outcome prompts, index "
          f"{res['index_factory']}, concurrency 1, {ns.n} calls each in alternating blocks of 25.\n\n"
          "| | Route p50 (ms) |\n|---|---|\n"
          f"| bundle without predictor | {p50['without']:.3f} |\n| bundle with predictor | {p50['with']:.3f} |\n"
          f"| added | {res['added_ms']:.3f} (ratio {res['ratio']:.3f}; goal <= 0.2 ms) |\n"
          f"| predictor alone, in process, batch 1 (p50) | {res['predictor_alone_p50_ms']:.3f} |\n")
    ns.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(ns.out / "quality_latency.json", (json.dumps(res, indent=1) + "\n").encode())
    atomic_write_bytes(ns.out / "quality_latency.md", md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
