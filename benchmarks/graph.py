"""Suite: the encoder's ONNX graph, lean (written from the weights, the default for BERT) vs traced (generic).

Both graphs are exported here from the same weights and calibration; int8 and fp32 of each are timed at batch 1,
one thread, in alternating blocks (``_common.interleave``). The traced export is what semroute shipped before the
lean graph and what any non-BERT model still gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from semroute.encoder import FP32_MODEL_FILE, MODEL_FILE, OnnxEncoder
from semroute.export import default_encoder_dir, export_encoder

from ._common import Mode, interleave, summary
from .encoder import _texts


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    dirs = {"lean": default_encoder_dir(), "traced": export_encoder(workdir / "traced-encoder", lean=False)}
    encs = {
        f"{g}_{q}": OnnxEncoder(d, threads=1, model_file=MODEL_FILE if q == "int8" else FP32_MODEL_FILE)
        for g, d in dirs.items()
        for q in ("int8", "fp32")
    }
    # what shipped before this graph: the traced int8 with onnxruntime's SkipLayerNormalization fusion on
    encs["traced_int8_skipln"] = OnnxEncoder(dirs["traced"], threads=1, disabled_optimizers=[])
    encs["lean_int8_skipln"] = OnnxEncoder(dirs["lean"], threads=1, disabled_optimizers=[])
    nodes = {
        f"{g}_{q}": len(onnx.load(str(d / (MODEL_FILE if q == "int8" else FP32_MODEL_FILE))).graph.node)
        for g, d in dirs.items()
        for q in ("int8", "fp32")
    }
    rows = []
    for kind in (["short", "long"] if mode.quick else ["short", "medium", "long"]):
        texts = _texts(kind, 1)
        samples = interleave({k: (lambda e=e, t=texts: e.encode(t)) for k, e in encs.items()}, n=mode.n(50, 300))
        med = {k: summary(v)["median_ms"] for k, v in samples.items()}
        rows.append({"input": kind, "tokens": encs["lean_int8"].encode(texts).n_tokens[0], "median_ms": med,
                     "int8_over_fp32": {g: med[f"{g}_int8"] / med[f"{g}_fp32"] for g in dirs}})
    return {"nodes": nodes, "rows": rows}


def table(res: dict[str, Any]) -> str:
    n = res["nodes"]
    lines = [f"ONNX nodes: lean int8 {n['lean_int8']}, fp32 {n['lean_fp32']}; traced int8 {n['traced_int8']}, "
             f"fp32 {n['traced_fp32']}.", "",
             "SkipLN fusion on: onnxruntime's SkipLayerNormFusion left enabled (semroute disables it; the traced int8 "
             "with it on is what semroute shipped before).", "",
             "| input (tokens) | lean int8 | lean fp32 | traced int8 | traced fp32 | int8/fp32 lean | int8/fp32 traced "
             "| lean int8, SkipLN fusion on | traced int8, SkipLN fusion on | lean int8 / before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        m = r["median_ms"]
        lines.append(f"| {r['input']} ({r['tokens']}) | {m['lean_int8']:.3f} | {m['lean_fp32']:.3f} | "
                     f"{m['traced_int8']:.3f} | {m['traced_fp32']:.3f} | {r['int8_over_fp32']['lean']:.2f} | "
                     f"{r['int8_over_fp32']['traced']:.2f} | {m['lean_int8_skipln']:.3f} | "
                     f"{m['traced_int8_skipln']:.3f} | {m['lean_int8'] / m['traced_int8_skipln']:.2f} |")
    return "\n".join(lines)
