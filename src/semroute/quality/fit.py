"""Fitting the quality predictor by cross-validation on the outcome prompts.

1. The prompts are split into folds at random. For every fold, each candidate setting (kNN k / tau / alpha,
   head clusters / L2 penalty) predicts the held-out prompts from the others: out-of-fold predictions.
2. The setting and the head-vs-kNN blend with the lowest out-of-fold Brier score (mean over models, observed
   outcomes only) win, with one latency-aware exception (the one-standard-error rule, Hastie et al., *Elements
   of Statistical Learning* 7.10): if the best **head-only** setting (blend 1, no index search at serving time:
   a few microseconds against a few hundred for the search) is within ``fast_within_se`` paired standard errors
   of the best Brier score, it wins instead. The held-out folds never see their own outcomes; no test split is
   involved at all (the benchmark runs this whole procedure inside each of its own training folds).
3. A Platt scaling per model is fitted on the winner's out-of-fold predictions.
4. The winner is refitted on every prompt and stored.

    >>> predictor, report = fit_predictor(vectors, texts, scores, models)
    >>> report.oof       # calibrated out-of-fold predictions, (n, M)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from ..index import VectorIndex, choose_factory
from .linear import LogisticFitter, logit, predict_logistic, sigmoid
from .predictor import N_TEXT_FEATURES, QualityPredictor, Settings, assign, knn_estimate, text_features

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Grid:
    """The candidate settings tried by cross-validation."""

    k: tuple[int, ...] = (20, 50, 100)
    tau: tuple[float, ...] = (0.1, 1.0)
    alpha: tuple[float, ...] = (1.0,)
    clusters: tuple[int, ...] = (1, 2, 4)
    l2: tuple[float, ...] = (1e-3, 3e-3)
    blend: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class FitReport:
    oof: F64  # calibrated out-of-fold predictions (n, M)
    oof_raw: F64
    settings: Settings
    brier: float
    table: list[dict[str, Any]] = field(default_factory=list)  # every candidate's out-of-fold Brier score
    seconds: float = 0.0
    # the lowest-Brier setting and its calibration, whether or not the latency rule chose it, and the rule's
    # comparison (Brier of the best head-only setting minus the best, and that difference's standard error)
    most_accurate: Settings | None = None
    most_accurate_platt: F64 | None = None
    head_only: Settings | None = None  # the best head-only setting (None if the grid has no blend 1)
    head_only_platt: F64 | None = None
    rule: dict[str, Any] = field(default_factory=dict)


def kmeans(x: F64, c: int, *, seed: int = 0, iterations: int = 25) -> F64:
    """Spherical k-means (unit centroids, cosine assignment), deterministic for a seed."""
    if c <= 1:
        return np.zeros((1, x.shape[1]))
    rng = np.random.default_rng(seed)
    cent = x[rng.choice(len(x), c, replace=False)].copy()
    for _ in range(iterations):
        a = np.argmax(x @ cent.T, axis=1)
        for j in range(c):
            members = x[a == j]
            if len(members):
                v = members.mean(0)
                cent[j] = v / (np.linalg.norm(v) or 1.0)
    return cent


def fit_heads(x: F64, scores: F64, cent: F64, l2s: Sequence[float], *, min_cluster: int = 50,
              whole: dict[float, F64] | None = None) -> dict[float, F64]:
    """Heads (C, M, d + 1) per penalty. A cluster with fewer than ``min_cluster`` outcomes of a model uses the
    head fitted on all prompts for that model (``whole``: those heads, (M, d + 1) per penalty, if already fitted)."""
    c_n, m = len(cent), scores.shape[1]
    cl = assign(x[:, : x.shape[1] - N_TEXT_FEATURES], cent)
    out = {l2: np.zeros((c_n, m, x.shape[1] + 1)) for l2 in l2s}
    if whole is None:
        whole = fit_whole(x, scores, l2s)
    for l2 in l2s:
        out[l2][:] = whole[l2][None]
    if c_n > 1:
        for c in range(c_n):
            rows = cl == c
            for j in range(m):
                keep = rows & ~np.isnan(scores[:, j])
                if keep.sum() < min_cluster:
                    continue
                fitter = LogisticFitter(x[keep])
                for l2 in l2s:
                    out[l2][c, j] = fitter.fit(scores[keep, j], l2=l2)
    return out


def fit_whole(x: F64, scores: F64, l2s: Sequence[float]) -> dict[float, F64]:
    """One head per model on every prompt: (M, d + 1) per penalty."""
    m = scores.shape[1]
    out = {l2: np.zeros((m, x.shape[1] + 1)) for l2 in l2s}
    fitter = LogisticFitter(x)
    for j in range(m):
        seen = ~np.isnan(scores[:, j])
        f = fitter if seen.all() else LogisticFitter(x[seen])
        for l2 in l2s:
            out[l2][j] = f.fit(scores[seen, j], l2=l2)
    return out


def _neighbours(q: F64, base: F64, k: int, chunk: int = 1024) -> tuple[F64, npt.NDArray[np.int64]]:
    """Exact top-k inner products (sorted), in chunks to bound memory."""
    k = min(k, len(base))
    sims = np.empty((len(q), k))
    ids = np.empty((len(q), k), dtype=np.int64)
    b32 = base.astype(np.float32)
    for s in range(0, len(q), chunk):
        sim = q[s : s + chunk].astype(np.float32) @ b32.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sim, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        ids[s : s + chunk] = np.take_along_axis(part, order, 1)
        sims[s : s + chunk] = np.take_along_axis(ps, order, 1)
    return sims, ids


def _brier(pred: F64, scores: F64) -> float:
    seen = ~np.isnan(scores)
    return float(np.mean((pred[seen] - scores[seen]) ** 2))


def _prompt_losses(pred: F64, scores: F64) -> F64:
    """Per prompt: the sum of squared errors over its observed outcomes (their total / observed count = Brier)."""
    seen = ~np.isnan(scores)
    return np.where(seen, (pred - np.where(seen, scores, 0.0)) ** 2, 0.0).sum(1)  # type: ignore[no-any-return]


def paired_gap(a: F64, b: F64, scores: F64) -> tuple[float, float]:
    """Brier(a) - Brier(b) and its standard error, paired by prompt (the same prompts, the same folds)."""
    d = _prompt_losses(a, scores) - _prompt_losses(b, scores)
    n_obs = int((~np.isnan(scores)).sum())
    se = float(d.std(ddof=1)) * np.sqrt(len(d)) / n_obs if len(d) > 1 else 0.0
    return float(d.sum()) / n_obs, se


def fit_platt(raw: F64, y: F64) -> tuple[float, float]:
    seen = ~np.isnan(y)
    w = LogisticFitter(logit(raw[seen])[:, None]).fit(y[seen], l2=1e-6)
    return float(w[0]), float(w[1])


def fit_predictor(
    vectors: npt.NDArray[np.float32],
    texts: Sequence[str],
    scores: F64,
    models: Sequence[str],
    *,
    folds: int = 5,
    seed: int = 0,
    grid: Grid | None = None,
    fast_within_se: float = 1.0,
    index_factory: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[QualityPredictor, FitReport]:
    t0 = time.perf_counter()
    grid = grid or Grid()
    n, m = scores.shape
    if n < 2 * folds:
        raise DataError(f"{n} outcome prompts are too few to cross-validate with {folds} folds; "
                        f"give at least {2 * folds}")
    x = vectors.astype(np.float64)
    feats = np.c_[x, text_features(texts)]
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(n), folds)
    knn_cfgs = list(itertools.product(grid.k, grid.tau, grid.alpha))
    head_cfgs = list(itertools.product(grid.clusters, grid.l2))
    oof_knn = {c: np.zeros((n, m)) for c in knn_cfgs}
    oof_head = {c: np.zeros((n, m)) for c in head_cfgs}
    kmax = max(grid.k)
    for f, test in enumerate(parts):
        train = np.setdiff1d(np.arange(n), test)
        prior = np.nanmean(scores[train], axis=0)
        prior = np.where(np.isnan(prior), np.nanmean(scores), prior)
        sims, ids = _neighbours(x[test], x[train], kmax)
        for c in knn_cfgs:
            oof_knn[c][test] = knn_estimate(sims, ids, scores[train], prior, *c)
        if any(b > 0 for b in grid.blend):
            whole = fit_whole(feats[train], scores[train], grid.l2)  # shared by every cluster count
            for clusters in grid.clusters:
                cent = kmeans(x[train], clusters, seed=seed)
                heads = fit_heads(feats[train], scores[train], cent, grid.l2, whole=whole)
                cl = assign(x[test], cent)
                for l2 in grid.l2:
                    for j in range(m):
                        w = heads[l2][cl, j]  # (n_test, d + 1)
                        oof_head[(clusters, l2)][test, j] = sigmoid(
                            np.einsum("nd,nd->n", feats[test], w[:, :-1]) + w[:, -1])
        if progress:
            progress(f"fold {f + 1}/{folds} done")
    table = []
    best: tuple[float, Settings, F64] | None = None
    fast: tuple[float, Settings, F64] | None = None  # the best head-only setting
    for blend in grid.blend:
        kc = knn_cfgs if blend < 1 else knn_cfgs[:1]
        hc = head_cfgs if blend > 0 else head_cfgs[:1]
        for kcfg, hcfg in itertools.product(kc, hc):
            raw = (1 - blend) * oof_knn[kcfg] + blend * oof_head[hcfg] if blend > 0 else oof_knn[kcfg]
            b = _brier(raw, scores)
            s = Settings(k=kcfg[0], tau=kcfg[1], alpha=kcfg[2], clusters=hcfg[0], l2=hcfg[1], blend=blend)
            table.append({**asdict(s), "brier": b})
            if best is None or b < best[0] - 1e-12:
                best = (b, s, raw)
            if blend == 1 and (fast is None or b < fast[0] - 1e-12):
                fast = (b, s, raw)
    assert best is not None
    rule: dict[str, Any] = {"fast_within_se": fast_within_se, "most_accurate": asdict(best[1])}
    chosen = best
    if fast is not None and fast is not best:
        gap, se = paired_gap(fast[2], best[2], scores)
        rule.update(head_only_brier_gap=gap, gap_se=se, head_only_chosen=bool(gap <= fast_within_se * se))
        if gap <= fast_within_se * se:
            chosen = fast
    brier, settings, raw = chosen
    distinct = {id(c): c for c in (best, chosen, fast) if c is not None}
    platts = {i: np.array([fit_platt(c[2][:, j], scores[:, j]) for j in range(m)]) for i, c in distinct.items()}
    platt = platts[id(chosen)]
    oof = sigmoid(platt[:, 0] * logit(raw) + platt[:, 1])
    predictor = refit(vectors, feats, scores, models, settings, platt, seed=seed, index_factory=index_factory,
                      info={"cv": {"folds": folds, "seed": seed, "criterion": "out-of-fold Brier score",
                                   "brier": brier, "brier_calibrated": _brier(oof, scores),
                                   "candidates": len(table), "grid": asdict(grid), "latency_rule": rule}})
    report = FitReport(oof=oof, oof_raw=raw, settings=settings, brier=brier, table=table,
                       seconds=time.perf_counter() - t0, most_accurate=best[1],
                       most_accurate_platt=platts[id(best)], rule=rule,
                       head_only=fast[1] if fast is not None else None,
                       head_only_platt=platts[id(fast)] if fast is not None else None)
    return predictor, report


def refit(
    vectors: npt.NDArray[np.float32], feats: F64, scores: F64, models: Sequence[str], settings: Settings,
    platt: F64, *, seed: int, index_factory: str | None, info: dict[str, Any],
) -> QualityPredictor:
    """The chosen setting fitted on every outcome prompt."""
    n, m = scores.shape
    x = vectors.astype(np.float64)
    prior = np.nanmean(scores, axis=0)
    index = None
    factory = index_factory or choose_factory(n, vectors.shape[1])
    if settings.blend < 1:
        index = VectorIndex.build(np.ascontiguousarray(vectors, dtype=np.float32), factory)
    cent = kmeans(x, settings.clusters, seed=seed)
    heads = (fit_heads(feats, scores, cent, [settings.l2])[settings.l2] if settings.blend > 0
             else np.zeros((0, m, feats.shape[1] + 1)))
    return QualityPredictor(
        models=list(models), settings=settings, prior=prior, scores=scores, index=index, centroids=cent,
        heads=heads, platt=platt,
        info={**info, "n_prompts": n, "index_factory": factory if index is not None else None,
              "observed": {mod: int((~np.isnan(scores[:, j])).sum()) for j, mod in enumerate(models)}},
    )


__all__ = ["FitReport", "Grid", "fit_predictor", "kmeans", "predict_logistic"]
