"""Suite 3: FAISS at 1k-1M vectors (synthetic, unit-length, shaped like sentence embeddings of utterances).

Each size reports exact search and the default index; the size just below the largest also reports the
alternatives the default was chosen over (see src/semroute/index.py), so the table shows why it won, and the
largest (1M in full mode) the recall/latency frontier around the 1 ms target. Recall@10 is also split between
in-scope queries and the 10% out of scope, which is where the approximate indexes lose it.
`python -m benchmarks --full --suites index --index-sizes 1000000` reruns one size and keeps the other rows.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from semroute.index import ANN_FACTORY, VectorIndex, choose_factory, set_threads

from ._common import Mode, summary

# Synthetic utterance embeddings shaped like real ones (python -m benchmarks.embedding_stats prints both side by
# side). Measured on CLINC150 with the int8 encoder (train: 15,000 utterances, 150 intents of 100; val: 3,000
# queries; oos_val: 100 out-of-scope queries): mean vector norm 0.30 (random pairs: median cosine 0.07, 99th
# percentile 0.44); 47% of the variance between intent centroids, 53% within intents; participation ratio of the
# spectrum 92, 90% of the variance in 187 dimensions; an utterance's nearest other: median cosine 0.88; a val
# query's 1st / 10th neighbour: median 0.82 / 0.67, with a median 22 utterances within 0.05 of the 10th (42 within
# 0.1): the near-ties that make recall@10 hard; out-of-scope queries' 1st neighbour: 0.41.
# The generator: a shared mean of norm 0.30; intents of ~100 utterances whose centres have a power-law spectrum
# (exponent 0.9) in a random basis; paraphrase groups of ~8 inside an intent (power law 0.6, 65% of the within
# variance); utterances around their group (the other 35%). Queries are fresh paraphrases of a random group, 10%
# from intents not in the index (out of scope). At 15,000 vectors it gives: mean norm 0.31, participation ratio
# 110, 90% of the variance in 241 dimensions, nearest other 0.85; queries' 1st / 10th neighbour 0.83 / 0.59 with 29
# within 0.05 of the 10th (65 within 0.1); out-of-scope 1st neighbour 0.35. Every difference makes approximate
# search harder than on the real data (more dimensions, more near-ties at the 10th neighbour), none easier.
# Larger sets add intents with the same shapes: at 1M a query's 1st / 10th neighbour are still 0.83 / 0.59, with
# 31 vectors within 0.05 of the 10th and 12 within 0.01.
_MEAN_NORM, _VAR_BETWEEN, _VAR_WITHIN = 0.30, 0.426, 0.484
_ALPHA_BETWEEN, _ALPHA_WITHIN = 0.9, 0.6
_PER_INTENT, _PER_GROUP, _LEAF_SHARE, _QUERY_SPREAD, _OOS_SHARE = 100, 8, 0.35, 1.15, 0.1


def _power_law(dim: int, alpha: float, total: float) -> np.ndarray:
    s = np.arange(1, dim + 1, dtype=np.float64) ** -alpha
    return np.sqrt(s / s.sum() * total).astype(np.float32)


def synthetic(n: int, n_q: int, dim: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors and ``n_q`` unit queries shaped like utterance embeddings (see above)."""
    rng = np.random.default_rng(seed)

    def rotation() -> np.ndarray:
        return np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)

    def gauss(rows: int, scale: np.ndarray, rot: np.ndarray) -> np.ndarray:
        return (rng.standard_normal((rows, dim), dtype=np.float32) * scale) @ rot

    mean = rotation()[0] * _MEAN_NORM
    between, within = _power_law(dim, _ALPHA_BETWEEN, _VAR_BETWEEN), _power_law(dim, _ALPHA_WITHIN, _VAR_WITHIN)
    rot_b, rot_w = rotation(), rotation()
    n_oos = int(_OOS_SHARE * n_q)
    n_intents, n_groups = max(n // _PER_INTENT, 1), max(n // _PER_GROUP, 1)
    intents = gauss(n_intents + n_oos, between, rot_b)
    parent = np.concatenate([rng.integers(0, n_intents, n_groups), np.arange(n_intents, n_intents + n_oos)])
    groups = mean + intents[parent] + np.sqrt(1 - _LEAF_SHARE) * gauss(len(parent), within, rot_w)
    leaf = np.sqrt(_LEAF_SHARE) * within
    x = np.empty((n, dim), np.float32)
    for i in range(0, n, 100_000):  # in chunks: a 1M set's temporaries would otherwise take GBs
        m = min(n, i + 100_000) - i
        x[i : i + m] = groups[rng.integers(0, n_groups, m)] + gauss(m, leaf, rot_w)
    q_groups = np.concatenate([rng.integers(0, n_groups, n_q - n_oos), np.arange(n_groups, n_groups + n_oos)])
    q = groups[q_groups] + _QUERY_SPREAD * gauss(n_q, leaf, rot_w)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q.astype(np.float32)


# (factory, search-effort overrides, why it is in the table): the alternatives to the default at 100k
ALTERNATIVES: list[tuple[str, dict[str, int], str]] = [
    ("HNSW32,Flat", {}, "float32 vectors: more memory, no better recall"),
    ("HNSW32,SQ8", {}, "8-bit vectors: least memory, lower recall at equal effort"),
    ("HNSW16,SQfp16", {}, "fewer links: faster build, lower recall at equal effort"),
]
# At 1M: the frontier around the target (p99 <= 1 ms at recall@10 >= 0.98): the HNSW default below LARGE_FROM
# (the default at 1M too until 2026-11-29) at three search efforts, against the default (refined IVF).
FRONTIER: list[tuple[str, dict[str, int], str]] = [
    (ANN_FACTORY, {"ef_search": 256}, "HNSW over fp16 vectors (the default below 300k)"),
    (ANN_FACTORY, {"ef_search": 192}, "HNSW, less effort"),
    (ANN_FACTORY, {"ef_search": 128}, "HNSW, half the effort"),
]
HALF = {"half": 1}  # half of each of the default's search-effort settings


def _ivf_alternative(n: int) -> tuple[str, dict[str, int], str]:
    nlist = 1 << max(6, round(np.log2(np.sqrt(n) * 4)))  # FAISS's rule of thumb, 4 * sqrt(n) lists
    return f"IVF{nlist}_HNSW32,Flat", {}, "inverted lists: fastest build; at 1M far slower at equal recall"


def _measure(idx: VectorIndex, q: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    wall, cpu = [], []
    found = []
    for i in range(min(50, len(q))):  # warm up caches and FAISS's lazy allocations
        idx.search(q[i : i + 1], 10)
    for i in range(len(q)):
        t, c = time.perf_counter(), time.thread_time()
        ids = idx.search(q[i : i + 1], 10).ids[0]
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        found.append(len(set(ids.tolist()) & set(truth[i].tolist())))
    # CPU time of the searching thread: unlike wall-clock, it is not inflated when other processes take the core
    cpu_sorted = sorted(cpu)
    n_in = len(q) - int(_OOS_SHARE * len(q))  # synthetic() puts the out-of-scope queries last
    return {**summary(wall), "cpu_median_ms": float(np.median(cpu)) * 1e3,
            "cpu_p99_ms": cpu_sorted[min(len(cpu) - 1, round(0.99 * (len(cpu) - 1)))] * 1e3,
            "recall_at_10": sum(found) / (10 * len(q)),
            "recall_in_scope": sum(found[:n_in]) / (10 * n_in),
            "recall_out_of_scope": sum(found[n_in:]) / (10 * max(1, len(q) - n_in))}


def _index_mb(idx: VectorIndex) -> float:
    # The serialized index (what the bundle stores, and what the loaded index holds in RAM, within a few %)
    with tempfile.TemporaryDirectory(prefix="semroute-index-") as tmp:
        path = os.path.join(tmp, "index.faiss")
        idx.save(Path(path))
        return os.path.getsize(path) / 2**20


def run(mode: Mode) -> dict[str, Any]:
    set_threads(1)
    all_sizes = [1_000, 10_000, 50_000] if mode.quick else [1_000, 10_000, 100_000, 1_000_000]
    sizes = [n for n in all_sizes if not mode.index_sizes or n in mode.index_sizes]
    # the alternatives at 100k and the frontier at 1M in full mode only: building them takes minutes
    compare_at, frontier_at = (None, None) if mode.quick else (100_000, 1_000_000)
    n_q = mode.n(300, 1000)
    rows = []
    for n in sizes:
        x, q = synthetic(n, n_q, seed=n)
        exact = VectorIndex.build(x, "Flat")
        truth = exact.search(q, 10).ids
        default = choose_factory(n, x.shape[1])
        plan: list[tuple[str, dict[str, int], str]] = [("Flat", {}, "exact")]
        if default != "Flat":
            plan += [(default, {}, "default"), (default, HALF, "half the search effort")]
        if n == compare_at:
            if default == "Flat":
                plan.append((ANN_FACTORY, {}, "the default past EXACT_MAX"))
            plan += [*ALTERNATIVES, _ivf_alternative(n)]
        if n == frontier_at:
            plan += FRONTIER
        built: dict[str, tuple[VectorIndex, float, float]] = {"Flat": (exact, 0.0, _index_mb(exact))}
        for factory, effort, why in plan:
            if factory not in built:
                t = time.perf_counter()
                set_threads(2)  # build with both cores, as build-index does; search with one, as the server does
                idx = VectorIndex.build(x, factory)
                set_threads(1)
                built[factory] = (idx, time.perf_counter() - t, _index_mb(idx))
            idx, build_s, mb = built[factory]
            idx.reset_search_params()
            if effort is HALF:
                effort = {k: v // 2 for k, v in idx.search_params.items()}
            idx.set_ef_search(effort.get("ef_search"))
            idx.set_nprobe(effort.get("nprobe"))
            idx.set_k_factor(effort.get("k_factor"))
            rows.append({"vectors": n, "factory": factory, **idx.search_params, "why": why,
                         "default": factory == default and not effort, "build_s": build_s, "index_mb": mb,
                         **_measure(idx, q, truth)})
        del built, exact
    return {"rows": rows, "sizes": sizes}


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A rerun of some sizes keeps the previous run's rows for the others (each row is one size's own run)."""
    kept = [r for r in (old or {}).get("rows", []) if r["vectors"] not in new["sizes"]]
    return {"rows": sorted([*kept, *new["rows"]], key=lambda r: r["vectors"]), "sizes": new["sizes"]}


def table(res: dict[str, Any]) -> str:
    lines = ["| vectors | index | search effort | default | build s | index MB | p50 ms | p99 ms | cpu p99 ms "
             "| recall@10 | in scope / out | why in the table |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"ef_search": "efSearch", "nprobe": "nprobe", "k_factor": "k_factor"}
    for r in res["rows"]:
        effort = ", ".join(f"{names[k]} {r[k]}" for k in names if k in r)
        split = (f"{r['recall_in_scope']:.3f} / {r['recall_out_of_scope']:.3f}" if "recall_in_scope" in r else "")
        lines.append(f"| {r['vectors']:,} | {r['factory']} | {effort} | {'yes' if r['default'] else ''} | "
                     f"{r['build_s']:.1f} | {r['index_mb']:.0f} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['cpu_p99_ms']:.3f} | {r['recall_at_10']:.3f} | {split} | {r['why']} |")
    return "\n".join(lines)
