"""How much HNSW search effort the quality predictor's kNN estimate needs: the outcome index's efSearch against
exact search, on RouteLLM's outcomes (embeddings cached by benchmarks/cost_quality.py).

    python -m benchmarks.quality_search_effort [--out benchmarks/results]

600 prompts are held out; the other 12,517 form the outcome index (HNSW32,SQfp16, the default past 10k vectors).
For each efSearch, every held-out prompt's kNN estimate (k=50, tau 1, alpha 1: what the cost-quality folds
chose) is compared with the same estimate from exact search: mean and largest absolute difference per model, and
the correlation of the strong-minus-weak gain (what routing ranks by). Search time: batch 1, one thread, back to
back. Writes ``quality_search_effort.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from semroute.index import VectorIndex, set_threads
from semroute.quality.predictor import knn_estimate

from . import routellm_data
from ._common import REPO, machine, write_results
from .cost_quality import MODELS, load

EFS = (50, 64, 96, 128)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality_search_effort", description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ns = ap.parse_args(argv)
    mach = machine()
    set_threads(1)
    rows, x = load(routellm_data.OUT)
    y = np.array([[r["outcomes"][m] for m in MODELS] for r in rows])
    perm = np.random.default_rng(0).permutation(len(x))
    test, train = perm[:600], perm[600:]
    prior = y[train].mean(0)

    def estimates(index: VectorIndex) -> tuple[np.ndarray, float]:
        out, ts = [], []
        for i in test:
            t = time.perf_counter()
            h = index.search(x[i : i + 1], 50)
            ts.append(time.perf_counter() - t)
            out.append(knn_estimate(h.similarities.astype(np.float64), h.ids, y[train], prior, 50, 1.0, 1.0)[0])
        return np.array(out), statistics.median(ts) * 1e3

    exact, t_exact = estimates(VectorIndex.build(x[train], "Flat"))
    hnsw = VectorIndex.build(x[train], "HNSW32,SQfp16")
    res: dict[str, Any] = {"machine": mach, "n_index": len(train), "n_queries": len(test),
                           "exact_search_p50_ms": t_exact, "ef": {}}
    for ef in EFS:
        hnsw.set_ef_search(ef)
        est, t = estimates(hnsw)
        gain, gain_x = est[:, 0] - est[:, 1], exact[:, 0] - exact[:, 1]
        res["ef"][ef] = {"search_p50_ms": t, "abs_diff_mean": float(np.abs(est - exact).mean()),
                         "abs_diff_max": float(np.abs(est - exact).max()),
                         "gain_corr_with_exact": float(np.corrcoef(gain, gain_x)[0, 1])}
    res["loadavg_at_end"] = os.getloadavg()
    la = mach["loadavg_at_start"]
    md = [f"kNN estimate against outcome-index search effort ({mach['date']}, load average {la[0]:.1f} at start, "
          f"{res['loadavg_at_end'][0]:.1f} at the end, 2 cores): {len(train)} RouteLLM outcome prompts indexed, "
          f"{len(test)} held out; k=50, tau 1. Exact search (Flat): {t_exact:.3f} ms p50.", "",
          "| efSearch | search p50 (ms) | mean abs. difference from exact | largest | gain correlation with exact |",
          "|---|---|---|---|---|"]
    md += [f"| {ef} | {r['search_p50_ms']:.3f} | {r['abs_diff_mean']:.4f} | {r['abs_diff_max']:.3f} | "
           f"{r['gain_corr_with_exact']:.4f} |" for ef, r in res["ef"].items()]
    text = "\n".join(md) + "\n"
    write_results(ns.out, "quality_search_effort", res, lambda: text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
