"""``semroute eval-cost``: a bundle's quality predictor judged on held-out outcomes.

Each prompt is scored by the predicted gain of the strong model over the weak one (``q_strong - q_weak``);
sweeping the share of prompts sent to the strong model, highest gain first, gives the quality-against-cost
curve, drawn beside the random router (the straight line) and the oracle (the router that knows the outcomes).
Only prompts with outcomes for both models count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from ..router import Router, request_cost
from .metrics import curve, oracle_scores, reliability, summary
from .outcomes import OutcomeSet
from .predictor import QualityPredictor

F64 = npt.NDArray[np.float64]


def predict_texts(router: Router, predictor: QualityPredictor, texts: Sequence[str], batch: int = 64) -> F64:
    """(n, M) predictions, embedding in length-sorted batches (less padding; vectors do not depend on the batch)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), len(predictor.models)))
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        chunk = [texts[i] for i in idx]
        out[idx] = predictor.predict(router.encoder.encode(chunk).vectors, chunk)
    return out


def pick_pair(router: Router, models: Sequence[str], weak: str | None, strong: str | None,
              data: OutcomeSet) -> tuple[str, str]:
    """The weak and strong model: as given, else the cheapest and the dearest by declared price (ties: the
    lower observed mean quality is the weak one)."""
    for name, m in (("--weak", weak), ("--strong", strong)):
        if m is not None and m not in models:
            raise DataError(f"{name} {m}: not a model of the quality predictor ({', '.join(models)})")
    if weak and strong:
        return weak, strong
    rank = sorted(models, key=lambda m: (request_cost(router.bundle, m),
                                         float(np.nanmean(data.column(m))) if m in data.models else 0.0))
    return weak or rank[0], strong or rank[-1]


def evaluate_cost(router: Router, data: OutcomeSet, *, weak: str | None = None,
                  strong: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, curves): the headline numbers, and the arrays the report plots."""
    predictor = router.quality_predictor
    if not isinstance(predictor, QualityPredictor):
        raise DataError(f"{router.bundle.path}: this bundle has no quality predictor; fit one with "
                        "'semroute fit-quality --index DIR --outcomes FILE --out NEW'")
    if len(predictor.models) < 2:
        raise DataError("the quality predictor knows one model only; cost-quality needs a weak and a strong one")
    w_name, s_name = pick_pair(router, predictor.models, weak, strong, data)
    for name in (w_name, s_name):
        if name not in data.models:
            raise DataError(f"{data.path}: no outcomes for model '{name}'")
    both = ~np.isnan(data.column(w_name)) & ~np.isnan(data.column(s_name))
    if not both.any():
        raise DataError(f"{data.path}: no prompt has outcomes for both {w_name} and {s_name}")
    texts = [t for t, keep in zip(data.texts, both.tolist(), strict=True) if keep]
    pred = predict_texts(router, predictor, texts)
    jw, js = predictor.models.index(w_name), predictor.models.index(s_name)
    yw, ys = data.column(w_name)[both], data.column(s_name)[both]
    if ys.mean() <= yw.mean():
        raise DataError(f"{data.path}: {s_name} is not better than {w_name} on these prompts "
                        f"({ys.mean():.3f} vs {yw.mean():.3f}); a gap to recover is needed (swap --weak/--strong?)")
    score = pred[:, js] - pred[:, jw]
    c = curve(score, weak=yw, strong=ys)
    rnd = curve(np.zeros_like(score), weak=yw, strong=ys)
    orc = curve(oracle_scores(yw, ys), weak=yw, strong=ys)
    prices = (request_cost(router.bundle, w_name), request_cost(router.bundle, s_name))
    m = summary(c, prices=prices if prices[1] > 0 else None)
    m.update(
        random_apgr=rnd.apgr, random_cpt50=rnd.cpt(0.5), oracle_apgr=orc.apgr, oracle_cpt50=orc.cpt(0.5),
        oracle_cpt80=orc.cpt(0.8), weak=w_name, strong=s_name,
        prices={"weak": prices[0], "strong": prices[1],
                "assumption": "500 input + 250 output tokens per request at the declared prices"},
        reliability={w_name: reliability(pred[:, jw], yw), s_name: reliability(pred[:, js], ys)},
        index_version=router.version, data={"path": str(data.path), "sha256": data.sha256},
        skipped_without_both=int((~both).sum()),
    )
    curves = {"router": c, "random": rnd, "oracle": orc, "pred": pred[:, [jw, js]], "observed": np.c_[yw, ys]}
    return m, curves
