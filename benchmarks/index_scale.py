"""Suite 3: FAISS at 1k-1M vectors (synthetic, unit-length, clustered like sentence embeddings)."""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np

from semroute.index import HNSW_EF_SEARCH, VectorIndex, choose_factory, set_threads

from ._common import Mode, summary


def _data(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    # clusters: real utterance sets are paraphrase groups, which is what makes ANN recall hard
    centers = rng.standard_normal((max(n // 100, 10), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _queries(x: np.ndarray, n_q: int, rng: np.random.Generator) -> np.ndarray:
    # A query paraphrases some utterance: cosine about 0.8 to it, as real queries are to their nearest example
    # (CLINC150 val, int8 encoder: median nearest-utterance similarity 0.82 in scope, 0.41 out of scope). Noise of
    # norm 0.75 on a unit vector gives that.
    # (An earlier version added 0.3 per dimension, norm 5.9: queries at cosine 0.17 to everything, a worst case
    # no router sees, where all neighbours are nearly equidistant and recall@10 collapses.)
    base = x[rng.integers(0, len(x), n_q)]
    q = base + (0.75 / np.sqrt(x.shape[1])) * rng.standard_normal(base.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32)


def run(mode: Mode) -> dict[str, Any]:
    set_threads(1)
    rng = np.random.default_rng(0)
    dim = 384
    sizes = [1_000, 10_000, 50_000] if mode.quick else [1_000, 10_000, 100_000, 1_000_000]
    rows = []
    n_q = mode.n(200, 1000)
    for n in sizes:
        x = _data(n, dim, rng)
        q = _queries(x, n_q, rng)
        exact = VectorIndex.build(x, "Flat")
        truth = exact.search(q, 10).ids
        for factory in sorted({"Flat", choose_factory(n), "HNSW32,Flat"}):
            if factory == "Flat" and n > 200_000 and mode.quick:
                continue
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t = time.perf_counter()
            set_threads(2)  # build with both cores, as build-index does; search with one, as the server does
            idx = exact if factory == "Flat" else VectorIndex.build(x, factory)
            set_threads(1)
            build_s = 0.0 if factory == "Flat" else time.perf_counter() - t
            mem_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            # HNSW: the default efSearch and twice it, to show what more search effort buys
            for ef in (HNSW_EF_SEARCH, 2 * HNSW_EF_SEARCH) if factory != "Flat" else (None,):
                idx.set_ef_search(ef)
                samples = []
                found = 0
                for i in range(n_q):
                    t = time.perf_counter()
                    ids = idx.search(q[i : i + 1], 10).ids[0]
                    samples.append(time.perf_counter() - t)
                    found += len(set(ids.tolist()) & set(truth[i].tolist()))
                rows.append({"vectors": n, "factory": factory, "ef_search": ef,
                             "default": factory == choose_factory(n) and ef in (None, HNSW_EF_SEARCH),
                             "build_s": build_s, "rss_growth_mb": mem_mb, **summary(samples),
                             "recall_at_10": found / (10 * n_q)})
    return {"rows": rows}


def table(res: dict[str, Any]) -> str:
    lines = ["| vectors | index | default | build s | memory growth MB | search p50 ms | p99 ms | recall@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        name = r["factory"] + (f" (efSearch {r['ef_search']})" if r.get("ef_search") else "")
        lines.append(f"| {r['vectors']:,} | {name} | {'yes' if r['default'] else ''} | {r['build_s']:.1f} | "
                     f"{r['rss_growth_mb']:.0f} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['recall_at_10']:.3f} |")
    return "\n".join(lines)
