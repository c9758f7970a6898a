"""Route scores and decisions, on hand-made neighbour lists (no encoder)."""

from __future__ import annotations

import numpy as np

from semroute.scoring import Reason, RouteTable, decide, route_scores


def _table(rows: list[tuple[int, bool]], names: tuple[str, ...] = ("a", "b")) -> RouteTable:
    counts = [sum(1 for r, neg in rows if r == i and not neg) for i in range(len(names))]
    return RouteTable(
        names=list(names),
        models=[f"m-{n}" for n in names],
        thresholds=np.array([0.5] * len(names)),
        row_route=np.array([r for r, _ in rows]),
        row_negative=np.array([neg for _, neg in rows]),
        row_text=[f"u{i}" for i in range(len(rows))],
        fallback_model="frontier",
        n_positive=np.array(counts),
    )


def test_mean_topk_is_within_each_route_so_duplicates_cannot_crowd_others_out() -> None:
    # route a: many near-duplicates at 0.70; route b: three strong hits further down the list
    rows = [(0, False)] * 10 + [(1, False)] * 3
    table = _table(rows)
    sims = np.array([0.70] * 10 + [0.69, 0.68, 0.67], dtype=np.float32)
    ids = np.arange(13)
    scores, pos_max, _ = route_scores(table, sims, ids, "mean_topk", 3)
    assert np.isclose(scores[0], 0.70)
    # b is scored on its own top-3, even though a top-3 across all routes would hold only a's hits
    assert np.isclose(scores[1], (0.69 + 0.68 + 0.67) / 3)
    assert np.isclose(pos_max[1], 0.69)


def test_missing_hits_count_as_the_lowest_retrieved_similarity() -> None:
    rows = [(0, False)] * 5 + [(1, False)] * 5
    table = _table(rows)
    sims = np.array([0.9, 0.5, 0.4, 0.3], dtype=np.float32)
    ids = np.array([5, 0, 1, 2])  # b has one lucky hit
    scores, _, _ = route_scores(table, sims, ids, "mean_topk", 3)
    assert np.isclose(scores[1], (0.9 + 0.3 + 0.3) / 3)
    assert np.isclose(scores[0], (0.5 + 0.4 + 0.3) / 3)


def test_max_aggregation() -> None:
    table = _table([(0, False), (1, False), (1, False)])
    scores, _, _ = route_scores(table, np.array([0.8, 0.6, 0.55], np.float32), np.array([1, 0, 2]), "max", 3)
    assert np.allclose(scores, [0.6, 0.8])


def _decide(table: RouteTable, sims: list[float], ids: list[int]):  # type: ignore[no-untyped-def]
    s, p, n = route_scores(table, np.array(sims, np.float32), np.array(ids), "max", 1)
    return decide(table, s, n, p, index_version="v", neighbours=[])


def test_matched_below_threshold_and_margin() -> None:
    table = _table([(0, False), (1, False)])
    d = _decide(table, [0.8, 0.3], [0, 1])
    assert (d.route, d.model, d.fallback, d.reason) == ("a", "m-a", False, Reason.MATCHED)
    assert np.isclose(d.margin, 0.5) and d.threshold == 0.5
    assert [s.route for s in d.scores] == ["a", "b"]
    d = _decide(table, [0.45, 0.3], [0, 1])
    assert (d.route, d.model, d.fallback, d.reason) == (None, "frontier", True, Reason.BELOW_THRESHOLD)
    assert np.isclose(d.score, 0.45)


def test_negative_example_vetoes_route() -> None:
    table = _table([(0, False), (0, True), (1, False)])
    d = _decide(table, [0.9, 0.7, 0.2], [1, 0, 2])  # closest to a's negative example
    assert d.fallback and d.reason == Reason.NEGATIVE_MATCH and d.model == "frontier"


def test_no_positive_hit_is_no_match() -> None:
    table = _table([(0, True), (1, False)])
    d = _decide(table, [0.9], [0])
    assert d.fallback and d.reason == Reason.NO_MATCH and d.route is None


def _reference_route_scores(  # type: ignore[no-untyped-def]
    table: RouteTable, sims, ids, aggregation: str, top_k: int
):
    """The array implementation route_scores replaced (kept here as the oracle it must match bit for bit)."""
    n = len(table.names)
    valid = ids >= 0
    ids, sims = ids[valid], sims[valid].astype(np.float64)
    floor = float(sims[-1]) if len(sims) else -1.0
    routed = table.row_route[ids] >= 0
    ids, sims = ids[routed], sims[routed]
    routes, neg = table.row_route[ids], table.row_negative[ids]
    scores, neg_max, pos_max = np.full(n, -np.inf), np.full(n, -np.inf), np.full(n, -np.inf)
    if len(sims) == 0:
        return scores, pos_max, neg_max
    pos_r, pos_s = routes[~neg], sims[~neg]
    if neg.any():
        np.maximum.at(neg_max, routes[neg], sims[neg])
    np.maximum.at(pos_max, pos_r, pos_s)
    if aggregation == "max":
        return pos_max.copy(), pos_max, neg_max
    sums, counts = np.zeros(n), np.zeros(n, dtype=np.int64)
    for r, s in zip(pos_r.tolist(), pos_s.tolist(), strict=True):
        if counts[r] < top_k:
            sums[r] += s
            counts[r] += 1
    hit = counts > 0
    k = np.minimum(top_k, table.n_positive)[hit]
    scores[hit] = (sums[hit] + (k - counts[hit]) * floor) / k
    return scores, pos_max, neg_max


def test_route_scores_match_the_array_reference_exactly() -> None:
    rng = np.random.default_rng(0)
    names = tuple(f"r{i}" for i in range(7))
    # rows: positives of every route, some negatives, some fallback (-1) examples; route r6 has one utterance
    rows = [(int(r), bool(rng.random() < 0.15)) for r in rng.integers(0, 6, 300)] + [(-1, False)] * 20 + [(6, False)]
    table = _table(rows, names)
    for trial in range(300):
        k_found = int(rng.integers(0, 33))  # fewer than asked for: FAISS pads with id -1
        ids = np.full(32, -1, dtype=np.int64)
        ids[:k_found] = rng.choice(len(rows), k_found, replace=False)
        sims = np.full(32, -np.inf, dtype=np.float32)
        sims[:k_found] = np.sort(rng.uniform(-0.2, 0.95, k_found).astype(np.float32))[::-1]
        for aggregation in ("mean_topk", "max"):
            top_k = int(rng.integers(1, 6))
            got = route_scores(table, sims, ids, aggregation, top_k)  # type: ignore[arg-type]
            want = _reference_route_scores(table, sims, ids, aggregation, top_k)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w, err_msg=f"trial {trial} {aggregation} top_k={top_k}")
