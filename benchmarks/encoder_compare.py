"""Two int8 encoders against the first one's fp32 graph on CLINC150 val (how item 2 of issue 15 was checked).

    python -m benchmarks.encoder_compare OLD_ENCODER_DIR NEW_ENCODER_DIR

Decisions as in tests/test_clinc_agreement.py (index = train, one route per intent, threshold 0.55, the router's
scoring code); prints int8/fp32 agreement, accuracy and cosines to fp32 for each, and old-vs-new agreement.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from semroute.encoder import FP32_MODEL_FILE, OnnxEncoder

from ._common import REPO, clinc


def main() -> int:
    sys.path.insert(0, str(REPO / "tests"))
    from test_clinc_agreement import _decisions, _embed

    old, new = (Path(p) for p in sys.argv[1:3])
    c = clinc()
    queries = [t for t, _ in c["val"]] + [t for t, _ in c["oos_val"]]
    truth = [i for _, i in c["val"]] + [None] * len(c["oos_val"])
    encs = {"fp32": OnnxEncoder(old, threads=2, model_file=FP32_MODEL_FILE), "int8_old": OnnxEncoder(old, threads=2),
            "int8_new": OnnxEncoder(new, threads=2)}
    dec = {k: _decisions(e, c["train"], queries, 0.55) for k, e in encs.items()}
    for k in ("int8_old", "int8_new"):
        agree = np.mean([a == b for a, b in zip(dec[k], dec["fp32"], strict=True)])
        acc = np.mean([a == t for a, t in zip(dec[k], truth, strict=True)])
        print(f"{k}: agreement with fp32 {agree:.4f}  accuracy {acc:.4f}")
    print(f"fp32 accuracy {np.mean([a == t for a, t in zip(dec['fp32'], truth, strict=True)]):.4f}")
    same = np.mean([a == b for a, b in zip(dec["int8_old"], dec["int8_new"], strict=True)])
    print(f"old vs new decisions agree {same:.4f}")
    vq = {k: _embed(e, queries) for k, e in encs.items()}
    for k in ("int8_old", "int8_new"):
        cos = (vq[k] * vq["fp32"]).sum(1)
        print(f"{k} cosine to fp32 on val: mean {cos.mean():.5f} min {cos.min():.5f}")
    cos = (vq["int8_old"] * vq["int8_new"]).sum(1)
    print(f"new vs old cosine mean {cos.mean():.5f} min {cos.min():.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
