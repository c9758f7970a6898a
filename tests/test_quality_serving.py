"""The quality predictor's serving path: the same numbers as the fit's reference formulas, batch invariance to
the bit, and fit-quality's latency rule (head only when it is within noise of the most accurate setting)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from test_quality import _prompts

from semroute.index import VectorIndex
from semroute.quality.fit import Grid, fit_predictor, paired_gap
from semroute.quality.linear import logit, predict_logistic, sigmoid
from semroute.quality.predictor import QualityPredictor, Settings, assign, knn_estimate, text_features


def _predictor(blend: float, *, n: int = 300, d: int = 16, clusters: int = 3, missing: bool = True,
               seed: int = 0) -> tuple[QualityPredictor, np.ndarray, list[str]]:
    """A predictor with random (unit) vectors, outcomes and heads: the arithmetic, not the learning."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = (rng.random((n, 2)) < 0.6).astype(np.float64)
    if missing:
        scores[rng.random((n, 2)) < 0.1] = np.nan  # unknown outcomes count for nothing
    cent = rng.normal(size=(clusters, d))
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    heads = rng.normal(scale=0.3, size=(clusters, 2, d + 4))
    predictor = QualityPredictor(
        models=["a", "b"], settings=Settings(k=7, tau=0.5, alpha=2.0, clusters=clusters, blend=blend),
        prior=np.array([0.6, 0.55]), scores=scores,
        index=VectorIndex.build(x, "Flat") if blend < 1 else None, centroids=cent,
        heads=heads if blend > 0 else np.zeros((0, 2, d + 4)), platt=np.array([[1.2, -0.1], [0.9, 0.2]]), info={})
    q = rng.normal(size=(9, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    texts = [f"query {i} with {i * 7} apples and {i + 2} pears" for i in range(9)]
    return predictor, q, texts


@pytest.mark.parametrize("blend", [0.0, 0.4, 1.0])
def test_serving_matches_the_fit_formulas(blend: float) -> None:
    p, q, texts = _predictor(blend)
    s = p.settings
    expect = np.zeros((len(q), 2))
    if blend < 1:
        assert p.index is not None
        hits = p.index.search(q, s.k)
        expect += (1 - blend) * knn_estimate(hits.similarities.astype(np.float64), hits.ids, p.scores, p.prior,
                                             s.k, s.tau, s.alpha)
    if blend > 0:
        feats = np.c_[q.astype(np.float64), text_features(texts)]
        cl = assign(q.astype(np.float64), p.centroids)
        for j in range(2):
            expect[:, j] += blend * np.array([predict_logistic(p.heads[c, j], feats[i : i + 1])[0]
                                              for i, c in enumerate(cl)])
    np.testing.assert_allclose(p.raw(q, texts), expect, rtol=1e-12, atol=1e-12)
    calibrated = sigmoid(p.platt[:, 0] * logit(expect) + p.platt[:, 1])
    np.testing.assert_allclose(p.predict(q, texts), calibrated, rtol=1e-12, atol=1e-12)
    assert p.uses_index == (blend < 1)


@pytest.mark.parametrize("blend", [0.0, 0.5, 1.0])
def test_batch_invariance_to_the_bit(blend: float) -> None:
    p, q, texts = _predictor(blend)
    batch = p.predict(q, texts)
    alone = np.vstack([p.predict(q[i : i + 1], texts[i : i + 1]) for i in range(len(q))])
    assert np.array_equal(batch, alone)
    # and in another batch, in another order
    order = [4, 0, 8, 2]
    assert np.array_equal(p.predict(q[order], [texts[i] for i in order]), batch[order])


def test_fewer_outcome_prompts_than_k() -> None:
    p, q, texts = _predictor(0.0, n=4, missing=False)  # k = 7 > 4 prompts: the estimate uses the 4
    assert p.index is not None
    hits = p.index.search(q, 4)
    assert hits.ids.shape == (len(q), 4)
    w = np.exp((np.minimum(hits.similarities.astype(np.float64), 1) - 1) / p.settings.tau)
    expect = np.array([(w[i] @ p.scores[hits.ids[i]] + p.settings.alpha * p.prior) / (w[i].sum() + p.settings.alpha)
                       for i in range(len(q))])
    np.testing.assert_allclose(p.raw(q, texts), expect, rtol=1e-12)


def test_paired_gap_by_hand() -> None:
    y = np.array([[1.0, 0.0], [0.0, np.nan], [1.0, 1.0]])
    a = np.array([[0.5, 0.5], [0.5, 0.9], [1.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, 0.1], [0.5, 0.5]])
    # per prompt squared errors over observed outcomes: a 0.5, 0.25, 1.0; b 0, 0, 0.5; 5 observed outcomes
    gap, se = paired_gap(a, b, y)
    assert gap == pytest.approx((0.5 + 0.25 + 0.5) / 5)
    assert se == pytest.approx(np.std([0.5, 0.25, 0.5], ddof=1) * np.sqrt(3) / 5)


def test_latency_rule_prefers_the_head_within_noise(encoder_dir: Path) -> None:
    from semroute.encoder import OnnxEncoder

    rows = _prompts(random.Random(5), 160)
    texts = [str(r["text"]) for r in rows]
    y = np.array([[r["outcomes"]["big"], r["outcomes"]["cheap"]] for r in rows])  # type: ignore[index]
    x = OnnxEncoder(encoder_dir, threads=2).encode(texts).vectors
    grid = Grid(k=(10, 20), tau=(1.0,), clusters=(1,), l2=(1e-3,))
    _, rep0 = fit_predictor(x, texts, y, ["big", "cheap"], folds=4, grid=grid, fast_within_se=0.0)
    assert rep0.settings == rep0.most_accurate  # rule off: the lowest Brier score, whatever it costs
    assert min(t["brier"] for t in rep0.table) == pytest.approx(rep0.brier)
    fast, rep = fit_predictor(x, texts, y, ["big", "cheap"], folds=4, grid=grid, fast_within_se=1e6)
    assert rep.settings.blend == 1 and fast.index is None and not fast.uses_index  # no search when serving
    assert rep.most_accurate == rep0.most_accurate
    if rep0.settings.blend != 1:  # the rule's comparison is recorded, and it was within the (huge) tolerance
        assert rep.rule["head_only_chosen"] and rep.rule["head_only_brier_gap"] >= 0 and rep.rule["gap_se"] > 0
    # the head alone still tells word problems from facts on these prompts
    gain = rep.oof[:, 0] - rep.oof[:, 1]
    assert gain[0::2].mean() > gain[1::2].mean() + 0.3
    assert fast.info["cv"]["latency_rule"]["fast_within_se"] == 1e6


def test_fit_quality_head_only_bundle_has_no_outcome_index(encoder_dir: Path, tmp_path: Path) -> None:
    """Through the CLI and the Router: --fast-within-se 1000 serves the head alone, without an outcome index."""
    import json

    from click.testing import CliRunner
    from test_quality import ROUTES

    from semroute.bundle import load_bundle
    from semroute.cli import main
    from semroute.router import Router

    (tmp_path / "routes.yaml").write_text(ROUTES)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _prompts(random.Random(11), 120)))
    runner = CliRunner()
    r = runner.invoke(main, ["build-index", str(tmp_path / "routes.yaml"), "--out", str(tmp_path / "b0"),
                             "--encoder", str(encoder_dir)])
    assert r.exit_code == 0, r.output
    fit = ["fit-quality", "--index", str(tmp_path / "b0"), "--outcomes", str(tmp_path / "train.jsonl")]
    r = runner.invoke(main, [*fit, "--out", str(tmp_path / "b1"), "--folds", "3", "--fast-within-se", "1000"])
    assert r.exit_code == 0, r.output
    assert "head only" in r.output
    b = load_bundle(tmp_path / "b1")
    assert "quality/quality.faiss" not in b.manifest["files"]
    assert b.manifest["quality"]["latency_rule"]["fast_within_se"] == 1000
    router = Router.load(tmp_path / "b1")
    assert router.quality_predictor is not None and router.quality_predictor.index is None
    d = router.route("Ann has 12 eggs, buys 3 boxes of 6 eggs each, gives a third away and sells the rest for $2 "
                     "each. How much does she make?")
    assert set(d.predicted_quality) == {"big", "cheap"}
    assert d.predicted_quality["cheap"] < 0.5
    r = runner.invoke(main, [*fit, "--out", str(tmp_path / "b2"), "--fast-within-se", "-1"])
    assert r.exit_code == 2 and "fast-within-se" in r.output
