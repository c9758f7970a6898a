"""Router: text(s) -> Decision(s). The one entry point used by the CLI, the server and evaluation.

    >>> router = Router.load("bundle/")
    >>> d = router.route("my card was charged twice")
    >>> d.route, d.model, d.reason
    ('billing', 'small-chat', <Reason.MATCHED: 'matched'>)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ._text import CONTENTLESS, has_content
from .bundle import Bundle, load_bundle
from .encoder import Encoder, OnnxEncoder
from .errors import BundleError, EncoderError, PolicyDeniedError, RequestError, SemrouteError
from .policy.engine import PolicyEngine
from .policy.types import NoRuntime, QualityPredictor, RequestContext, RuntimeSource
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
        if encoder.dim != bundle.index.dim:
            raise BundleError(f"{bundle.path}: the encoder makes {encoder.dim}-d vectors, the index holds "
                              f"{bundle.index.dim}-d ones; rebuild the bundle")
        self.bundle = bundle
        self.encoder = encoder
        self._defaults = bundle.defaults
        # None when the route files declare no policy: decisions are then the semantic step's alone, as before
        # policies existed (no PII detection, no trace)
        self.policy = (PolicyEngine(bundle.policy, bundle.models, bundle.route_candidates(),
                                    bundle.fallback_candidates()) if bundle.policy is not None else None)
        # plug-in point: runtime state (breakers, budgets, observed latency) for each request; none by default
        self.runtime: RuntimeSource = NoRuntime()
        # plug-in point: per-query predicted quality per model, read by the objective; none by default
        self.quality_predictor: QualityPredictor | None = None

    @classmethod
    def load(cls, path: str | Path, *, threads: int = 1) -> Router:
        from .index import set_threads

        set_threads(threads)
        bundle = load_bundle(path)
        try:
            encoder = OnnxEncoder(bundle.encoder_dir, threads=threads)
        except EncoderError as e:
            raise BundleError(f"{path}: the bundle's encoder cannot be loaded ({e}); rebuild the bundle") from e
        router = cls.checked(bundle, encoder)
        router.warm()
        return router

    @classmethod
    def checked(cls, bundle: Bundle, encoder: Encoder) -> Router:
        """A router over ``bundle`` that has routed a batch. A bundle whose files parse but do not fit together
        (a head of the wrong shape, say) fails here as a BundleError, not on a user's request."""
        try:
            router = cls(bundle, encoder)  # compiles the bundle's policy, if any
            # the semantic step: a policy rule may deny any text, which says nothing about the bundle
            router.semantic_batch(["check the bundle", "a second query, so the batch path runs too"])
        except SemrouteError:
            raise
        except Exception as e:  # numpy/FAISS/policy errors from content that passed load_bundle's checks
            raise BundleError(f"{bundle.path}: the bundle loads but cannot route ({type(e).__name__}: {e}); "
                              "rebuild it") from e
        return router

    def warm(self) -> None:
        """Run a few queries so the first real request does not pay for lazy initialisation."""
        texts = ["warm up", "a somewhat longer sentence to warm up the encoder, the tokenizer and the index search"]
        for _ in range(5):
            for t in texts:
                self.semantic_batch([t])
            self.semantic_batch(texts * 4)

    @property
    def version(self) -> str:
        return self.bundle.version

    def route(
        self, text: str, *, context: RequestContext | None = None, top_scores: int = 5, top_neighbours: int = 3,
        policy: bool = True,
    ) -> Decision:
        return self.route_batch([text], contexts=[context or _NO_CONTEXT], top_scores=top_scores,
                                top_neighbours=top_neighbours, policy=policy)[0]

    def route_batch(
        self, texts: Sequence[str], *, contexts: Sequence[RequestContext] | None = None, top_scores: int = 5,
        top_neighbours: int = 3, policy: bool = True,
    ) -> list[Decision]:
        """Decide for each text: the policy's pre rules, the semantic step for those no rule decided, then the
        policy's post rules and candidate choice. ``policy=False``: the semantic step alone (calibration, and
        the policy-off side of evaluation). Raises PolicyDeniedError (naming ``texts[i]`` in a batch)."""
        if not policy or self.policy is None:
            return self.semantic_batch(texts, top_scores=top_scores, top_neighbours=top_neighbours)
        _check_texts(texts)
        ctxs = list(contexts) if contexts is not None else [_NO_CONTEXT] * len(texts)
        if len(ctxs) != len(texts):
            raise ValueError("one context per text")
        many = len(texts) > 1
        engine = self.policy
        pres = []
        for i, (t, c) in enumerate(zip(texts, ctxs, strict=True)):
            try:
                pres.append(engine.pre(t, c, field_prefix=f"contexts[{i}]" if many else "context"))
            except PolicyDeniedError as e:
                raise PolicyDeniedError(f"texts[{i}]: {e}" if many else str(e)) from None
        todo = [i for i, p in enumerate(pres) if not p.decided]
        semantic = dict(zip(todo, self.semantic_batch([texts[i] for i in todo], top_scores=top_scores,
                                                      top_neighbours=top_neighbours), strict=True))
        out = []
        for i, p in enumerate(pres):
            try:
                out.append(engine.finish(p, semantic.get(i), index_version=self.version,
                                              runtime=self.runtime.view(ctxs[i])))
            except PolicyDeniedError as e:
                raise PolicyDeniedError(f"texts[{i}]: {e}" if many else str(e)) from None
        return out

    def semantic_batch(
        self, texts: Sequence[str], *, top_scores: int = 5, top_neighbours: int = 3
    ) -> list[Decision]:
        """The semantic step alone: encoder, index, scores, thresholds. What the server's batcher runs."""
        _check_texts(texts)
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
        predicted = self.quality_predictor.predict(enc.vectors) if self.quality_predictor is not None else None
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
                predicted_quality=predicted[q] if predicted is not None else None,
            ))
        return out

    def _neighbour(self, row: int, similarity: float) -> Neighbour:
        table = self.bundle.table
        r = table.row_route_list[row]
        return Neighbour(text=table.row_text[row], route=table.names[r] if r >= 0 else "", similarity=similarity,
                         negative=table.row_negative_list[row])


_NO_CONTEXT = RequestContext()


def _check_texts(texts: Sequence[str]) -> None:
    for i, t in enumerate(texts):
        if not t or not t.strip():
            raise RequestError(f"texts[{i}]" if len(texts) > 1 else "text", "is empty or only whitespace")
        if not has_content(t):
            raise RequestError(f"texts[{i}]" if len(texts) > 1 else "text", CONTENTLESS)


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


__all__ = ["Router"]
