"""Statistics of real utterance embeddings (CLINC150, the int8 encoder) beside the index suite's synthetic ones.

    python -m benchmarks.embedding_stats [--encoder DIR]

What benchmarks/index_scale.py's generator was shaped to match: the spectrum (how many dimensions the vectors
really use), the mean direction, and how close and how crowded a query's neighbours are, which is what decides
how hard approximate search is. Takes a few minutes (it embeds 18,100 sentences).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._common import clinc
from .index_scale import synthetic


def stats(x: np.ndarray, queries: np.ndarray, n_in_scope: int) -> dict[str, float]:
    import faiss

    xc = x - x.mean(0)
    ev = np.linalg.eigvalsh(xc.T @ xc / len(x))[::-1]
    idx = faiss.IndexFlatIP(x.shape[1])
    idx.add(np.ascontiguousarray(x, dtype=np.float32))
    self_nn, _ = idx.search(np.ascontiguousarray(x[:3000]), 2)
    d, _ = idx.search(np.ascontiguousarray(queries, dtype=np.float32), 100)
    d_in, d_oos = d[:n_in_scope], d[n_in_scope:]
    return {
        "mean vector norm": float(np.linalg.norm(x.mean(0))),
        "participation ratio": float(ev.sum() ** 2 / (ev**2).sum()),
        "dims for 90% of variance": float(np.searchsorted(np.cumsum(ev) / ev.sum(), 0.9) + 1),
        "utterance's nearest other, median cos": float(np.median(self_nn[:, 1])),
        "query 1st neighbour, median cos": float(np.median(d_in[:, 0])),
        "query 10th neighbour, median cos": float(np.median(d_in[:, 9])),
        "vectors within 0.05 of the 10th, median": float(np.median((d_in >= d_in[:, 9:10] - 0.05).sum(1))),
        "vectors within 0.1 of the 10th, median": float(np.median((d_in >= d_in[:, 9:10] - 0.1).sum(1))),
        "out-of-scope query 1st neighbour, median cos": float(np.median(d_oos[:, 0])),
    }


def main() -> None:
    from semroute.encoder import OnnxEncoder
    from semroute.export import default_encoder_dir

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--encoder", type=Path, default=None)
    ns = ap.parse_args()
    enc = OnnxEncoder(ns.encoder or default_encoder_dir(), threads=2)
    data = clinc()

    def embed(texts: list[str]) -> np.ndarray:
        return np.concatenate([enc.encode(texts[i : i + 64]).vectors for i in range(0, len(texts), 64)])

    train = embed([t for t, _ in data["train"]])
    queries = embed([t for t, _ in data["val"]] + [t for t, _ in data["oos_val"]])
    real = stats(train, queries, len(data["val"]))
    x, q = synthetic(len(train), 1000)
    synth = stats(x, q, 900)
    print(f"| statistic | CLINC150 (train {len(train):,}, val + oos_val queries) | synthetic, same size |")
    print("|---|---|---|")
    for k in real:
        print(f"| {k} | {real[k]:.3f} | {synth[k]:.3f} |")


if __name__ == "__main__":
    main()
