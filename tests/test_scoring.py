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
