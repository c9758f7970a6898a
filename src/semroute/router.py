"""Router: text(s) -> Decision(s). The one entry point used by the CLI, the server and evaluation.

    >>> router = Router.load("bundle/")
    >>> d = router.route("my card was charged twice")
    >>> d.route, d.model, d.reason
    ('billing', 'small-chat', <Reason.MATCHED: 'matched'>)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

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
        self, texts: Sequence[str], *, top_scores: int = 5, top_neighbours: int = 3
    ) -> list[Decision]:
        for i, t in enumerate(texts):
            if not t or not t.strip():
                raise RequestError(f"texts[{i}]" if len(texts) > 1 else "text", "is empty or only whitespace")
        if not texts:
            return []
        enc = self.encoder.encode(texts)
        t0 = time.perf_counter_ns()
        hits = self.bundle.index.search(enc.vectors, self._defaults.neighbours)
        search_ns = (time.perf_counter_ns() - t0) // len(texts)
        table = self.bundle.table
        head = self.bundle.head
        probs = head.probabilities(enc.vectors) if head is not None else None
        confidence = self.bundle.confidence
        out = []
        for q in range(len(texts)):
            t1 = time.perf_counter_ns()
            sims, ids = hits.similarities[q], hits.ids[q]
            scores, pos_max, neg_max = route_scores(
                table, sims, ids, self._defaults.aggregation, self._defaults.top_k
            )
            knn = scores
            if probs is not None:  # the learned scorer: blend the head's confidence into the kNN score
                # a route with no retrieved hit stays out (-inf) whatever the weight (0 * -inf would be nan)
                hit = np.isfinite(knn)
                w = self._defaults.head_weight
                scores = np.full_like(knn, -np.inf)
                scores[hit] = (1 - w) * knn[hit] + w * probs[q][hit]
            signals = _signals(scores, knn, probs[q] if probs is not None else None, sims, ids)
            neighbours = [
                Neighbour(
                    text=table.row_text[int(i)],
                    route=table.names[r] if (r := int(table.row_route[int(i)])) >= 0 else "",
                    similarity=float(s),
                    negative=bool(table.row_negative[int(i)]),
                )
                for s, i in zip(sims[:top_neighbours], ids[:top_neighbours], strict=True)
                if i >= 0
            ]
            d = decide(
                table, scores, neg_max, pos_max,
                index_version=self.version, neighbours=neighbours, top_scores=top_scores,
                confidence=float(confidence.confidence(signals)[0]) if confidence is not None and signals else None,
                fallback_max=fallback_similarity(table, sims, ids),
            )
            score_ns = time.perf_counter_ns() - t1
            # batch timings are shared: each query is charged its share of the batch's tokenize/encode time
            timings = Timings(
                tokenize_ns=enc.tokenize_ns // len(texts),
                encode_ns=enc.encode_ns // len(texts),
                search_ns=search_ns,
                score_ns=score_ns,
            )
            out.append(_with(d, enc.truncated[q], enc.n_tokens[q], timings, signals))
        return out


def _signals(
    scores: npt.NDArray[np.float64],
    knn: npt.NDArray[np.float64],
    probs: npt.NDArray[np.float32] | None,
    sims: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int64],
) -> tuple[float, ...]:
    """What the confidence model reads (confidence.SIGNALS, in order); () when no route had a hit."""
    if not np.isfinite(scores).any():
        return ()
    order = np.argsort(-scores, kind="stable")
    best = int(order[0])
    runner_up = float(scores[order[1]]) if len(order) > 1 and np.isfinite(scores[order[1]]) else 0.0
    head = float(probs[best]) if probs is not None else float(knn[best])
    none = max(0.0, 1.0 - float(probs.sum())) if probs is not None else 0.0
    nearest = float(sims[ids >= 0][0]) if (ids >= 0).any() else 0.0
    return (float(scores[best]), float(scores[best]) - runner_up, float(knn[best]), head, nearest, none)


def _with(d: Decision, truncated: bool, n_tokens: int, timings: Timings, signals: tuple[float, ...]) -> Decision:
    from dataclasses import replace

    return replace(d, truncated=truncated, n_tokens=n_tokens, timings=timings, signals=signals)


__all__ = ["Router"]
