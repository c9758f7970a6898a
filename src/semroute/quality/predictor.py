"""Per-model quality prediction from the encoder's embedding of a query.

Two estimates, blended and then calibrated per model:

- **kNN**: the outcome prompts nearest to the query (a FAISS index of their embeddings), each weighted by
  ``exp((similarity - 1) / tau)``, with ``alpha`` pseudo-prompts at the model's mean quality:
  ``(sum_i w_i y_i + alpha * prior) / (sum_i w_i + alpha)``. A neighbourhood with few or distant prompts
  leans on the prior instead of on one or two noisy outcomes. Prompts with no outcome for a model are left out
  of that model's sums.
- **head**: a logistic regression per model on the embedding and three text statistics (log length in
  characters, in words, and the count of numbers: a word problem's number of quantities tracks its number of
  steps). With ``clusters`` > 1 the outcome prompts are split by k-means on their embeddings and each cluster
  gets its own heads (a query uses its nearest centroid's): on the RouteLLM data one head for knowledge questions
  and one for word problems beat a shared one.

``blend`` weights the head against the kNN estimate; a Platt scaling per model, fitted on held-out folds,
makes the result a calibrated probability (monotone, so it does not change any ranking). Everything is chosen by
cross-validation on the outcome file (fit.py).

    >>> q = predictor.predict(vectors, texts)   # (n_queries, n_models), calibrated quality in [0, 1]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import BundleError
from ..index import VectorIndex
from .linear import logit, sigmoid

F64 = npt.NDArray[np.float64]
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
N_TEXT_FEATURES = 3


def text_features(texts: Sequence[str]) -> F64:
    """Cheap statistics of the raw text, scaled to about [0, 1]."""
    rows = [(math.log1p(len(t)) / 8, math.log1p(len(t.split())) / 6, math.log1p(len(_NUMBER.findall(t))) / 3)
            for t in texts]
    return np.array(rows, dtype=np.float64).reshape(len(texts), N_TEXT_FEATURES)



@dataclass(frozen=True)
class Settings:
    """Hyper-parameters, chosen by cross-validation (fit.py)."""

    k: int = 50
    tau: float = 1.0
    alpha: float = 1.0
    clusters: int = 1
    l2: float = 1e-3
    blend: float = 0.5  # weight of the head; 0: kNN only (no head), 1: head only (no index search)


def knn_estimate(
    sims: F64, ids: npt.NDArray[np.int64], scores: F64, prior: F64, k: int, tau: float, alpha: float
) -> F64:
    """(n, M) similarity-weighted outcome means of each query's first ``k`` neighbours, shrunk to ``prior``.
    ``ids`` < 0 (fewer neighbours than k) and NaN outcomes count for nothing."""
    ids_k = ids[:, :k]
    valid = ids_k >= 0
    w = np.where(valid, np.exp((np.minimum(sims[:, :k], 1.0) - 1.0) / tau), 0.0)  # (n, k)
    y = scores[np.where(valid, ids_k, 0)]  # (n, k, M)
    seen = ~np.isnan(y)
    wy = np.where(seen, w[:, :, None] * np.nan_to_num(y), 0.0).sum(1)
    ws = np.where(seen, w[:, :, None], 0.0).sum(1)
    return (wy + alpha * prior) / (ws + alpha)  # type: ignore[no-any-return]


def assign(vectors: F64, centroids: F64) -> npt.NDArray[np.int64]:
    if len(centroids) <= 1:
        return np.zeros(len(vectors), dtype=np.int64)
    return np.asarray(np.argmax(vectors @ centroids.T, axis=1), dtype=np.int64)


# HNSW search effort for the outcome index. The route index's default (128) buys recall@10 0.99; the kNN estimate is
# a weighted mean over k = 20-100 neighbours with nearly flat weights (tau 1), so a neighbour missed near the k-th
# changes it by ~1/k of one outcome. FAISS searches with max(efSearch, k). Measured by
# benchmarks/quality_search_effort.py: against exact search, 0.004 mean difference, gain correlation 0.992.
QUALITY_EF_SEARCH = 64


@dataclass(frozen=True)
class QualityPredictor:
    models: list[str]
    settings: Settings
    prior: F64  # (M,) mean observed quality per model
    scores: F64  # (n_prompts, M) outcomes of the indexed prompts; NaN where unknown
    index: VectorIndex | None  # the outcome prompts' embeddings (None when blend == 1)
    centroids: F64  # (C, d); one row (unused) when clusters == 1
    heads: F64  # (C, M, d + N_TEXT_FEATURES + 1); empty when blend == 0
    platt: F64  # (M, 2): calibrated = sigmoid(a * logit(raw) + b)
    info: dict[str, Any]

    def __post_init__(self) -> None:
        # Serving forms, computed once so a query costs a few matrix-vector products and no per-model Python:
        # the heads' weights and biases apart, the outcome table with NaN as 0 beside a mask of the observed ones.
        # Never written after this (the router is shared by threads).
        seen = ~np.isnan(self.scores)
        object.__setattr__(self, "_w", np.ascontiguousarray(self.heads[:, :, :-1]))  # (C, M, D)
        object.__setattr__(self, "_b", np.ascontiguousarray(self.heads[:, :, -1]))  # (C, M)
        object.__setattr__(self, "_y0", np.where(seen, self.scores, 0.0))  # (n, M)
        object.__setattr__(self, "_seen", seen.astype(np.float64))  # (n, M)
        object.__setattr__(self, "_cent", np.ascontiguousarray(self.centroids))
        if self.index is not None:
            self.index.set_ef_search(QUALITY_EF_SEARCH)

    @property
    def uses_index(self) -> bool:
        """Whether a prediction searches the outcome index (blend < 1), which costs most of its time."""
        return self.settings.blend < 1

    def raw(self, vectors: npt.NDArray[np.float32], texts: Sequence[str]) -> F64:
        """(n, M) blended estimate before calibration.

        Each query is computed on its own, row by row (matrix-vector products; FAISS searches each query on its
        own too): a matrix product's blocking may depend on the batch size, and a query's prediction must not
        (batch invariance)."""
        s = self.settings
        n, m = len(vectors), len(self.models)
        out = np.zeros((n, m))
        v = np.asarray(vectors, dtype=np.float64)
        if s.blend < 1:
            assert self.index is not None
            hits = self.index.search(vectors, s.k)
            sims = np.minimum(hits.similarities.astype(np.float64), 1.0)
            ids = hits.ids
            y0, seen = self._y0, self._seen  # type: ignore[attr-defined]
            base = s.alpha * self.prior
            for i in range(n):
                valid = ids[i] >= 0
                w = np.exp((sims[i] - 1.0) / s.tau)
                if not valid.all():  # fewer outcome prompts than k: the missing ones weigh nothing
                    w = np.where(valid, w, 0.0)
                rows = np.where(valid, ids[i], 0)
                out[i] = (1 - s.blend) * (w @ y0[rows] + base) / (w @ seen[rows] + s.alpha)
        if s.blend > 0:
            x = np.empty((n, v.shape[1] + N_TEXT_FEATURES))
            x[:, : v.shape[1]] = v
            x[:, v.shape[1] :] = text_features(texts)
            w_h, b_h, cent = self._w, self._b, self._cent  # type: ignore[attr-defined]
            many = len(cent) > 1
            for i in range(n):
                c = int(np.argmax(cent @ v[i])) if many else 0
                out[i] += s.blend * sigmoid(w_h[c] @ x[i] + b_h[c])
        return out

    def predict(self, vectors: npt.NDArray[np.float32], texts: Sequence[str]) -> F64:
        """(n, M) calibrated probability that each model answers each query well."""
        r = self.raw(vectors, texts)
        return sigmoid(self.platt[:, 0] * logit(r) + self.platt[:, 1])

    def predict_quality(self, vectors: npt.NDArray[np.float32], texts: Sequence[str]) -> list[dict[str, float]]:
        """The policy layer's plug-in (policy.types.QualityPredictor): one model -> quality mapping per query."""
        return [dict(zip(self.models, row, strict=True)) for row in self.predict(vectors, texts).tolist()]

    # -- storage: quality/ in a bundle ---------------------------------------------------------------------
    def save(self, directory: Path) -> list[str]:
        """Write the predictor's files into ``directory``; returns their names (relative), for the manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"models": self.models, "settings": asdict(self.settings), "info": self.info}
        (directory / "quality.json").write_text(json.dumps(meta, indent=1) + "\n")
        np.savez(directory / "quality.npz", prior=self.prior, scores=self.scores, centroids=self.centroids,
                 heads=self.heads, platt=self.platt)
        names = ["quality.json", "quality.npz"]
        if self.index is not None:
            self.index.save(directory / "quality.faiss")
            names.append("quality.faiss")
        return names

    @classmethod
    def load(cls, directory: Path) -> QualityPredictor:
        try:
            meta = json.loads((directory / "quality.json").read_text())
            with np.load(directory / "quality.npz") as f:
                arrays = {k: f[k] for k in ("prior", "scores", "centroids", "heads", "platt")}
            settings = Settings(**meta["settings"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleError(f"{directory}: cannot read the quality predictor ({e}); refit it with "
                              "'semroute fit-quality'") from e
        index = None
        if settings.blend < 1:
            index = VectorIndex.load(directory / "quality.faiss", meta["info"].get("index_factory", "?"))
            if index.ntotal != len(arrays["scores"]):
                raise BundleError(f"{directory}: quality index holds {index.ntotal} prompts but the outcome table "
                                  f"{len(arrays['scores'])}; refit it")
        return cls(models=list(meta["models"]), settings=settings, index=index, info=meta["info"], **arrays)
