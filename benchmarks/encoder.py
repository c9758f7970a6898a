"""Suite 1: the encoder alone. int8 vs fp32 ONNX vs sentence-transformers (torch), interleaved in one process."""

from __future__ import annotations

import os
from typing import Any

from semroute.encoder import FP32_MODEL_FILE, OnnxEncoder
from semroute.export import default_encoder_dir, default_model_path

from ._common import Mode, interleave, queries, summary


def _texts(kind: str, n: int) -> list[str]:
    qs = queries(n * 13, seed=1)
    per = {"short": 1, "medium": 4, "long": 13}[kind]  # ~10, ~40, ~128 tokens
    return [" ".join(qs[i * per : (i + 1) * per]) for i in range(n)]


def run(mode: Mode) -> dict[str, Any]:
    enc_dir = default_encoder_dir()
    batches = [1, 8] if mode.quick else [1, 8, 32]
    kinds = ["short", "long"] if mode.quick else ["short", "medium", "long"]
    threads_list = [1] if mode.quick else [1, 2]
    rows: list[dict[str, Any]] = []
    st = None
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(default_model_path()), device="cpu")
    except ImportError:
        torch = None  # type: ignore[assignment]
    for threads in threads_list:
        int8 = OnnxEncoder(enc_dir, threads=threads)
        fp32 = OnnxEncoder(enc_dir, threads=threads, model_file=FP32_MODEL_FILE)
        if torch is not None:
            torch.set_num_threads(threads)
        for kind in kinds:
            for bs in batches:
                texts = _texts(kind, bs)
                fns = {
                    "tokenize": lambda t=texts, e=int8: e._tokenizer.encode_batch(t),
                    "int8_onnx": lambda t=texts, e=int8: e.encode(t),
                    "fp32_onnx": lambda t=texts, e=fp32: e.encode(t),
                }
                if st is not None:
                    fns["torch_st"] = lambda t=texts: st.encode(t, batch_size=len(t), normalize_embeddings=True)
                n = mode.n(30, 200) if bs == 1 else mode.n(8, 40)
                samples = interleave(fns, n=n)
                tokens = sum(int8.encode(texts).n_tokens) / bs
                for name, s in samples.items():
                    summ = summary(s)
                    rows.append({
                        "encoder": name, "threads": threads, "input": kind, "avg_tokens": round(tokens, 1),
                        "batch": bs, **summ, "per_query_ms": summ["median_ms"] / bs,
                    })
    ratios = []
    for r in rows:
        if r["encoder"] == "int8_onnx":
            fp = next(x for x in rows if x["encoder"] == "fp32_onnx" and all(
                x[k] == r[k] for k in ("threads", "input", "batch")))
            ratios.append({k: r[k] for k in ("threads", "input", "batch")} | {
                "int8_over_fp32": r["median_ms"] / fp["median_ms"]})
    return {"rows": rows, "int8_vs_fp32": ratios}


def table(res: dict[str, Any]) -> str:
    lines = ["| encoder | threads | input (tokens) | batch | median ms/call | p99 ms | ms/query |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['encoder']} | {r['threads']} | {r['input']} ({r['avg_tokens']}) | {r['batch']} | "
                     f"{r['median_ms']:.3f} | {r['p99_ms']:.3f} | {r['per_query_ms']:.3f} |")
    lines += ["", "| threads | input | batch | int8 / fp32 (median) |", "|---|---|---|---|"]
    for r in res["int8_vs_fp32"]:
        lines.append(f"| {r['threads']} | {r['input']} | {r['batch']} | {r['int8_over_fp32']:.2f} |")
    return "\n".join(lines)
