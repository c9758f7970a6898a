"""int8 vs fp32 on CLINC150 val: the decisions agree and accuracy is within a point.

Index = CLINC150 train (one route per intent); queries = val + out-of-scope val. The same scoring code as the
router (route_scores + decide) runs on each encoder's vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semroute.encoder import FP32_MODEL_FILE, OnnxEncoder
from semroute.index import VectorIndex
from semroute.routes import Defaults
from semroute.scoring import RouteTable, decide, route_scores


def _embed(enc: OnnxEncoder, texts: list[str]) -> np.ndarray:
    return np.concatenate([enc.encode(texts[i : i + 64]).vectors for i in range(0, len(texts), 64)])


def _decisions(enc: OnnxEncoder, train: list[list[str]], queries: list[str], threshold: float) -> list[str | None]:
    names = sorted({i for _, i in train})
    pos = {n: k for k, n in enumerate(names)}
    table = RouteTable(
        names=names,
        models=names,
        thresholds=np.full(len(names), threshold),
        row_route=np.array([pos[i] for _, i in train]),
        row_negative=np.zeros(len(train), bool),
        row_text=[t for t, _ in train],
        fallback_model="fallback",
        n_positive=np.bincount([pos[i] for _, i in train]),
    )
    d = Defaults()
    index = VectorIndex.build(_embed(enc, [t for t, _ in train]))
    hits = index.search(_embed(enc, queries), d.neighbours)
    out = []
    for q in range(len(queries)):
        s, p, n = route_scores(table, hits.similarities[q], hits.ids[q], d.aggregation, d.top_k)
        out.append(decide(table, s, n, p, index_version="t", neighbours=[]).route)
    return out


def test_int8_agrees_with_fp32_on_clinc_val(encoder_dir: Path, clinc: dict[str, list[list[str]]]) -> None:
    queries = [t for t, _ in clinc["val"]] + [t for t, _ in clinc["oos_val"]]
    truth = [i for _, i in clinc["val"]] + [None] * len(clinc["oos_val"])
    threshold = 0.55
    int8 = _decisions(OnnxEncoder(encoder_dir, threads=2), clinc["train"], queries, threshold)
    fp32 = _decisions(OnnxEncoder(encoder_dir, threads=2, model_file=FP32_MODEL_FILE), clinc["train"], queries,
                      threshold)
    agree = np.mean([a == b for a, b in zip(int8, fp32, strict=True)])
    acc8 = np.mean([a == t for a, t in zip(int8, truth, strict=True)])
    acc32 = np.mean([a == t for a, t in zip(fp32, truth, strict=True)])
    print(f"agreement {agree:.4f}  int8 accuracy {acc8:.4f}  fp32 accuracy {acc32:.4f}")
    assert agree >= 0.97
    assert abs(acc8 - acc32) <= 0.01
    assert acc8 > 0.8  # a sanity floor: the router is doing real work
