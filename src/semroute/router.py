"""Router: text(s) -> Decision(s). The one entry point used by the CLI, the server and evaluation.

    >>> router = Router.load("bundle/")
    >>> d = router.route("my card was charged twice")
    >>> d.route, d.model, d.reason
    ('billing', 'small-chat', <Reason.MATCHED: 'matched'>)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .bundle import Bundle, load_bundle
from .encoder import Encoder, OnnxEncoder
from .errors import BundleError, RequestError
from .scoring import Decision, Neighbour, Timings, decide, fallback_similarity, route_scores


class Router:
    """Routes queries with one bundle and one encoder. Thread-safe for concurrent ``route_batch`` calls
    (onnxruntime sessions and FAISS searches may run concurrently); the server still serialises encoder calls
    through its batcher, which is faster on small machines."""

    def __init__(self, bundle: Bundle, encoder: Encoder) -> None:
        if encoder.fingerprint != bundle.manifest["encoder"]["fingerprint"]:
            raise BundleError(
                f"{bundle.path}: encoder fingerprint {encoder.fingerprint[:12]} does not match the bundle; rebuild it"
            )
        self.bundle = bundle
        self.encoder = encoder
        self._defaults = bundle.defaults
        from .quality.store import load_quality

        self.quality = load_quality(bundle)  # per-model quality predictor (semroute fit-quality), or None
        self._quality_cost = {m: request_cost(bundle, m) for m in (self.quality.models if self.quality else [])}

    @classmethod
    def load(cls, path: str | Path, *, threads: int = 1) -> Router:
        from .index import set_threads

        set_threads(threads)
        bundle = load_bundle(path)
        router = cls(bundle, OnnxEncoder(bundle.encoder_dir, threads=threads))
        router.warm()
        return router

    def warm(self) -> None:
        """Run a few queries so the first real request does not pay for lazy initialisation."""
        texts = ["warm up", "a somewhat longer sentence to warm up the encoder, the tokenizer and the index search"]
        for _ in range(5):
            for t in texts:
                self.route_batch([t])
            self.route_batch(texts * 4)

    @property
    def version(self) -> str:
        return self.bundle.version

    def route(self, text: str, *, top_scores: int = 5, top_neighbours: int = 3) -> Decision:
        return self.route_batch([text], top_scores=top_scores, top_neighbours=top_neighbours)[0]

    def route_batch(
        self, texts: Sequence[str], *, top_scores: int = 5, top_neighbours: int = 3,
        quality_targets: Sequence[float | None] | None = None,
    ) -> list[Decision]:
        """Decisions for ``texts``. ``quality_targets`` (one per text, None for none): choose the cheapest model
        whose predicted quality reaches the target instead of the route's model (needs a quality predictor)."""
        for i, t in enumerate(texts):
            if not t or not t.strip():
                raise RequestError(f"texts[{i}]" if len(texts) > 1 else "text", "is empty or only whitespace")
        if not texts:
            return []
        n = len(texts)
        enc = self.encoder.encode(texts)
        t0 = time.perf_counter_ns()
        hits = self.bundle.index.search(enc.vectors, self._defaults.neighbours)
        t1 = time.perf_counter_ns()
        table = self.bundle.table
        head = self.bundle.head
        probs = head.probabilities(enc.vectors) if head is not None else None
        # Scores and signals for every query first, so the confidence model runs once per batch.
        scored: list[_Scored] = []
        for q in range(n):
            sims, ids = hits.similarities[q], hits.ids[q]
            knn, pos_max, neg_max = route_scores(table, sims, ids, self._defaults.aggregation, self._defaults.top_k)
            scores = knn
            if probs is not None:  # the learned scorer: blend the head's confidence into the kNN score
                # a route with no retrieved hit stays out (-inf) whatever the weight (0 * -inf would be nan)
                hit = np.isfinite(knn)
                w = self._defaults.head_weight
                scores = np.full_like(knn, -np.inf)
                scores[hit] = (1 - w) * knn[hit] + w * probs[q][hit]
            order = np.argsort(-scores, kind="stable")
            signals = _signals(scores, knn, probs[q] if probs is not None else None, sims, ids, order)
            scored.append(_Scored(scores, pos_max, neg_max, order, signals))
        confidence = self.bundle.confidence
        with_signals = [q for q in range(n) if scored[q].signals]
        conf: dict[int, float] = {}
        if confidence is not None and with_signals:
            values = confidence.confidence([scored[q].signals for q in with_signals]).tolist()
            conf = dict(zip(with_signals, values, strict=True))
        predicted = self.quality.predict(enc.vectors, texts) if self.quality is not None else None
        # the batch's shared work (search, head, scores, confidence) is charged to each query in equal shares
        search_ns = (t1 - t0) // n
        shared_score_ns = (time.perf_counter_ns() - t1) // n
        tokenize_ns, encode_ns = enc.tokenize_ns // n, enc.encode_ns // n
        out = []
        for q, (scores, pos_max, neg_max, order, signals) in enumerate(scored):
            t2 = time.perf_counter_ns()
            sims, ids = hits.similarities[q], hits.ids[q]
            neighbours = [
                self._neighbour(i, s)
                for s, i in zip(sims[:top_neighbours].tolist(), ids[:top_neighbours].tolist(), strict=True)
                if i >= 0
            ]
            out.append(decide(
                table, scores, neg_max, pos_max,
                index_version=self.version, neighbours=neighbours, top_scores=top_scores,
                confidence=conf.get(q), fallback_max=fallback_similarity(table, sims, ids), order=order,
                truncated=enc.truncated[q], n_tokens=enc.n_tokens[q], signals=signals,
                timings=Timings(tokenize_ns=tokenize_ns, encode_ns=encode_ns, search_ns=search_ns,
                                score_ns=shared_score_ns + time.perf_counter_ns() - t2),
            ))
        if predicted is not None:
            out = [self._with_quality(d, predicted[q], quality_targets[q] if quality_targets else None)
                   for q, d in enumerate(out)]
        return out

    def _with_quality(self, d: Decision, predicted: npt.NDArray[np.float64], target: float | None) -> Decision:
        from .quality.objective import cheapest_meeting

        assert self.quality is not None
        quality = dict(zip(self.quality.models, predicted.tolist(), strict=True))
        if target is None:
            return dataclasses.replace(d, predicted_quality=quality)
        # candidates cheapest first, so equal costs keep the predictor's (alphabetical) order
        choice = cheapest_meeting(self.quality.models, quality, self._quality_cost, target)
        return dataclasses.replace(d, predicted_quality=quality, quality_target=target, model=choice.model)

    def _neighbour(self, row: int, similarity: float) -> Neighbour:
        table = self.bundle.table
        r = table.row_route_list[row]
        return Neighbour(text=table.row_text[row], route=table.names[r] if r >= 0 else "", similarity=similarity,
                         negative=table.row_negative_list[row])


class _Scored(NamedTuple):
    """One query's scores, before its Decision is built."""

    scores: npt.NDArray[np.float64]
    pos_max: npt.NDArray[np.float64]
    neg_max: npt.NDArray[np.float64]
    order: npt.NDArray[np.intp]  # route ids by descending score (stable)
    signals: tuple[float, ...]


def _signals(
    scores: npt.NDArray[np.float64],
    knn: npt.NDArray[np.float64],
    probs: npt.NDArray[np.float32] | None,
    sims: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int64],
    order: npt.NDArray[np.intp],
) -> tuple[float, ...]:
    """What the confidence model reads (confidence.SIGNALS, in order); () when no route had a hit."""
    best = int(order[0])
    best_score = float(scores[best])
    if not math.isfinite(best_score):  # sorted first, so no score is finite
        return ()
    runner_up = float(scores[order[1]]) if len(order) > 1 else 0.0
    runner_up = runner_up if math.isfinite(runner_up) else 0.0
    head = float(probs[best]) if probs is not None else float(knn[best])
    none = max(0.0, 1.0 - float(probs.sum())) if probs is not None else 0.0
    nearest = next((s for s, i in zip(sims.tolist(), ids.tolist(), strict=True) if i >= 0), 0.0)
    return (best_score, best_score - runner_up, float(knn[best]), head, nearest, none)


def request_cost(bundle: Bundle, model: str) -> float:
    """A typical request's price (500 input + 250 output tokens, as evaluation reports assume); 0 if undeclared."""
    spec = bundle.models.get(model)
    return 0.0 if spec is None else 0.5 * spec.cost_per_1k_input + 0.25 * spec.cost_per_1k_output


__all__ = ["Router"]
