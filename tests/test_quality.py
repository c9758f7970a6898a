"""The quality predictor through the real parts: the real encoder's embeddings, a real FAISS outcome index, the
fit-quality and eval-cost commands, the Router and the gRPC server.

The outcome data is synthetic but semantic: word problems with several quantities, which the cheap model gets
wrong (most of the time) and the big one right, and one-line factual questions both get right. A predictor that
reads meaning from the embeddings must learn the difference; one that does not, cannot."""

from __future__ import annotations

import json
import random
from pathlib import Path

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from server_harness import InProcessServer

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.cli import main
from semroute.quality.metrics import reliability
from semroute.quality.objective import best_within, cheapest_meeting
from semroute.server import ServeConfig

REPO = Path(__file__).resolve().parents[1]
ROUTES = """
version: 1
fallback: {model: big}
models:
  big: {cost_per_1k_input: 0.01, cost_per_1k_output: 0.03}
  cheap: {cost_per_1k_input: 0.0002, cost_per_1k_output: 0.0002}
routes:
  - name: general
    model: cheap
    utterances: [answer this question, solve this problem, tell me a fact]
"""
NAMES = ["Ann", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo"]
THINGS = ["apples", "marbles", "books", "eggs", "pencils", "stamps", "cookies", "shells"]
COUNTRIES = ["France", "Peru", "Japan", "Kenya", "Norway", "Chile", "Egypt", "Canada", "India", "Spain",
             "Italy", "Ghana"]


def _prompts(rng: random.Random, n: int) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        if i % 2 == 0:
            a, b, c = rng.randint(3, 90), rng.randint(2, 9), rng.randint(2, 40)
            name, thing = rng.choice(NAMES), rng.choice(THINGS)
            text = (f"{name} has {a} {thing}, buys {b} bags of {c} {thing} each, gives away a third of them and "
                    f"sells the rest for ${b + 1} each. How much money does {name} make?")
            cheap = 1.0 if rng.random() < 0.15 else 0.0
            rows.append({"text": text, "outcomes": {"cheap": cheap, "big": 1.0 if rng.random() < 0.9 else 0.0}})
        else:
            country = COUNTRIES[(i // 2) % len(COUNTRIES)]
            q = rng.choice(["What is the capital of", "Which language is spoken in", "What currency is used in"])
            rows.append({"text": f"{q} {country}? (#{i})", "outcomes": {"cheap": 1.0, "big": 1.0}})
    return rows


@pytest.fixture(scope="module")
def quality_bundles(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("quality")
    rng = random.Random(7)
    (d / "routes.yaml").write_text(ROUTES)
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _prompts(rng, 160)))
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _prompts(rng, 40)))
    runner = CliRunner()
    r = runner.invoke(main, ["build-index", str(d / "routes.yaml"), "--out", str(d / "b0"),
                             "--encoder", str(encoder_dir)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["fit-quality", "--index", str(d / "b0"), "--outcomes", str(d / "train.jsonl"),
                             "--out", str(d / "b1"), "--folds", "3"])
    assert r.exit_code == 0, r.output
    assert "160 prompts, 2 models" in r.output
    return {"dir": d, "plain": d / "b0", "fitted": d / "b1"}


def test_bundle_records_and_hashes_the_predictor(quality_bundles: dict[str, Path]) -> None:
    from semroute.bundle import load_bundle
    from semroute.errors import BundleError

    b = load_bundle(quality_bundles["fitted"])
    assert b.manifest["parent"] == load_bundle(quality_bundles["plain"]).version
    assert {"quality/quality.json", "quality/quality.npz"} <= set(b.manifest["files"])
    assert b.manifest["quality"]["models"] == ["big", "cheap"]
    assert b.manifest["quality"]["outcomes"]["prompts"] == 160
    tampered = quality_bundles["dir"] / "tampered"
    import shutil

    shutil.copytree(quality_bundles["fitted"], tampered)
    (tampered / "quality" / "quality.json").write_text("{}")
    with pytest.raises(BundleError, match=r"quality/quality\.json does not match its hash"):
        load_bundle(tampered)


def test_cross_validated_calibration_on_real_embeddings(encoder_dir: Path) -> None:
    from semroute.encoder import OnnxEncoder
    from semroute.quality.fit import fit_predictor

    rows = _prompts(random.Random(3), 200)
    texts = [str(r["text"]) for r in rows]
    y = np.array([[r["outcomes"]["big"], r["outcomes"]["cheap"]] for r in rows])  # type: ignore[index]
    x = OnnxEncoder(encoder_dir, threads=2).encode(texts).vectors
    _, rep = fit_predictor(x, texts, y, ["big", "cheap"], folds=5)
    # out-of-fold (never fitted on their own outcomes) and calibrated: predicted matches observed
    for j in range(2):
        r = reliability(rep.oof[:, j], y[:, j])
        assert r["ece"] < 0.08, r
    # and they separate the two kinds of prompt: every word problem's predicted gain above every fact's
    gain = rep.oof[:, 0] - rep.oof[:, 1]
    assert gain[0::2].min() > gain[1::2].max()
    assert len(rep.table) > 10 and rep.settings in {type(rep.settings)(**{k: v for k, v in t.items() if k != "brier"})
                                                    for t in rep.table}


def test_router_predicts_and_meets_a_quality_target(quality_bundles: dict[str, Path]) -> None:
    from semroute.router import Router

    router = Router.load(quality_bundles["fitted"])
    texts = ["Mia has 40 stickers, buys 6 packs of 12 stickers each, gives a third away and sells the rest for "
             "$3 each. How much does she make?", "What is the capital of Portugal?"]
    plain = router.route_batch(texts)
    assert all(set(d.predicted_quality) == {"big", "cheap"} for d in plain)
    assert plain[0].predicted_quality["cheap"] < 0.5 < plain[1].predicted_quality["cheap"]
    assert all(d.model == "cheap" and d.quality_target is None for d in plain)  # no target: the route's model
    from semroute.policy.types import RequestContext

    ctx = RequestContext(quality_target=0.8)
    chosen = router.route_batch(texts, contexts=[ctx, ctx])
    assert [d.model for d in chosen] == ["big", "cheap"]  # cheapest model predicted to reach 0.8
    assert chosen[0].quality_target == 0.8
    # batch invariance, as the encoder has it (its vectors agree to 1e-5 alone or in a batch): the same choice
    # and the same predictions to that tolerance
    alone = [router.route(t) for t in texts]
    for a, b in zip(alone, plain, strict=True):
        assert a.predicted_quality.keys() == b.predicted_quality.keys()
        assert all(abs(a.predicted_quality[k] - b.predicted_quality[k]) < 1e-5 for k in a.predicted_quality)
    alone_t = [router.route(t, context=ctx).model for t in texts]
    assert alone_t == [d.model for d in chosen]


def test_objectives() -> None:
    q = {"a": 0.6, "b": 0.8, "c": 0.9}
    cost = {"a": 1.0, "b": 2.0, "c": 5.0}
    assert cheapest_meeting(["a", "b", "c"], q, cost, 0.75).model == "b"
    miss = cheapest_meeting(["a", "b", "c"], q, cost, 0.95)
    assert (miss.model, miss.met) == ("c", False)  # nobody reaches it: the best there is
    assert best_within(["a", "b", "c"], q, cost, 2.0).model == "b"
    assert best_within(["a", "b", "c"], q, cost, 0.5).model == "a"  # nothing that cheap: the cheapest
    assert cheapest_meeting(["b", "a"], {"a": 0.9, "b": 0.9}, {"a": 1.0, "b": 1.0}, 0.5).model == "b"  # order


def _naive_apgr(gain_pred: list[float], weak: list[float], strong: list[float]) -> tuple[float, float]:
    """APGR and CPT(50%) the slow way: a random tie-break, averaged; the curve point by point."""
    n = len(gain_pred)
    order = sorted(range(n), key=lambda i: -gain_pred[i])
    assert len(set(gain_pred)) == n  # no ties in this case, so one order is the curve
    q = [sum(weak)]
    for i in order:
        q.append(q[-1] + strong[i] - weak[i])
    wq, sq = sum(weak) / n, sum(strong) / n
    pgr = [(x / n - wq) / (sq - wq) for x in q]
    area = sum((pgr[k] + pgr[k + 1]) / 2 / n for k in range(n))
    k = next(k for k, p in enumerate(pgr) if p >= 0.5)
    cpt50 = (k - 1 + (0.5 - pgr[k - 1]) / (pgr[k] - pgr[k - 1])) / n if k else 0.0
    return area, cpt50


def test_eval_cost_numbers_recomputed_by_hand(quality_bundles: dict[str, Path]) -> None:
    from semroute.router import Router

    d = quality_bundles["dir"]
    r = CliRunner().invoke(main, ["eval-cost", "--index", str(quality_bundles["fitted"]), "--outcomes",
                                  str(d / "test.jsonl"), "--json", "--report", str(d / "report")])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"apgr", "cpt50", "cpt80", "cpt95", "random_apgr", "oracle_apgr", "n", "aiq"} <= set(m)
    assert (m["weak"], m["strong"], m["n"]) == ("cheap", "big", 40)
    rows = [json.loads(line) for line in (d / "test.jsonl").read_text().splitlines()]
    router = Router.load(quality_bundles["fitted"])
    preds = [router.route(row["text"]).predicted_quality for row in rows]
    gain = [p["big"] - p["cheap"] for p in preds]
    weak = [row["outcomes"]["cheap"] for row in rows]
    strong = [row["outcomes"]["big"] for row in rows]
    apgr, cpt50 = _naive_apgr(gain, weak, strong)
    assert m["apgr"] == pytest.approx(apgr, abs=1e-9)
    assert m["cpt50"] == pytest.approx(cpt50, abs=1e-9)
    assert m["random_apgr"] == pytest.approx(0.5)
    assert m["apgr"] > 0.65  # word problems first: well above random (0.5); outcomes are noisy within a kind
    for name in ("report.md", "metrics.json", "cost_quality.png", "reliability.png"):
        assert (d / "report" / name).stat().st_size > 0


def test_bad_outcomes_exit_2_naming_the_line(quality_bundles: dict[str, Path]) -> None:
    d = quality_bundles["dir"]
    bad = d / "bad.jsonl"
    bad.write_text('{"text": "a", "outcomes": {"cheap": 1}}\n{"text": "b", "outcomes": {"gpt-5": 1}}\n')
    r = CliRunner().invoke(main, ["fit-quality", "--index", str(quality_bundles["plain"]), "--outcomes", str(bad),
                                  "--out", str(d / "never")])
    assert r.exit_code == 2
    assert f"{bad}:2: outcomes: unknown model 'gpt-5'" in r.output
    assert not (d / "never").exists()
    r = CliRunner().invoke(main, ["eval-cost", "--index", str(quality_bundles["plain"]), "--outcomes",
                                  str(d / "test.jsonl")])
    assert r.exit_code == 2 and "no quality predictor" in r.output


def test_grpc_quality_target(quality_bundles: dict[str, Path]) -> None:
    cfg = ServeConfig(index=quality_bundles["fitted"], port=0, watch=False)
    with InProcessServer(cfg) as server, grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.RouterStub(ch)
        word = ("Tom has 25 shells, buys 4 bags of 9 shells each, gives a third away and sells the rest for $2 "
                "each. How much money does Tom make?")
        resp = stub.Route(pb.RouteRequest(text=word, options=pb.RouteOptions(quality_target=0.8)))
        d = resp.decision
        assert d.model == "big" and d.HasField("quality_target") and d.quality_target == pytest.approx(0.8)
        assert [q.model for q in d.predicted_quality] == ["big", "cheap"]
        plain = stub.Route(pb.RouteRequest(text="What is the capital of Chile?")).decision
        assert plain.model == "cheap" and not plain.HasField("quality_target") and len(plain.predicted_quality) == 2
        batch = stub.RouteBatch(pb.RouteBatchRequest(
            queries=[pb.Query(text=word), pb.Query(text="What is the capital of Chile?")],
            options=pb.RouteOptions(quality_target=0.8)))
        assert [x.model for x in batch.decisions] == ["big", "cheap"]
        for bad in (1.5, -0.1, float("nan")):
            with pytest.raises(grpc.RpcError) as e:
                stub.Route(pb.RouteRequest(text=word, options=pb.RouteOptions(quality_target=bad)))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "options.quality_target" in (e.value.details() or "")


def test_grpc_quality_target_without_predictor(quality_bundles: dict[str, Path]) -> None:
    cfg = ServeConfig(index=quality_bundles["plain"], port=0, watch=False)
    with InProcessServer(cfg) as server, grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.RouterStub(ch)
        assert len(stub.Route(pb.RouteRequest(text="hello")).decision.predicted_quality) == 0
        with pytest.raises(grpc.RpcError) as e:
            stub.Route(pb.RouteRequest(text="hello", options=pb.RouteOptions(quality_target=0.5)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no quality predictor" in (e.value.details() or "")


POLICY_ROUTES = """
version: 1
fallback: {model: big}
models:
  big: {cost_per_1k_input: 0.01, cost_per_1k_output: 0.03}
  cheap: {cost_per_1k_input: 0.0002, cost_per_1k_output: 0.0002}
routes:
  - name: general
    candidates: [big, cheap]
    utterances: [answer this question, solve this problem, tell me a fact]
policy:
  objective: quality
"""


def test_policy_objective_reads_predicted_quality(quality_bundles: dict[str, Path], encoder_dir: Path) -> None:
    """The policy layer's plug-in: per-query predictions replace declared qualities; quality_target is the
    cheapest candidate predicted to reach it."""
    from semroute.policy.types import RequestContext
    from semroute.quality.predictor import QualityPredictor
    from semroute.quality.store import write_quality_bundle
    from semroute.router import Router

    d = quality_bundles["dir"]
    (d / "policy.yaml").write_text(POLICY_ROUTES)
    r = CliRunner().invoke(main, ["build-index", str(d / "policy.yaml"), "--out", str(d / "p0"),
                                  "--encoder", str(encoder_dir)])
    assert r.exit_code == 0, r.output
    predictor = QualityPredictor.load(quality_bundles["fitted"] / "quality")
    write_quality_bundle(d / "p0", d / "p1", predictor, {"note": "test"})
    router = Router.load(d / "p1")
    word = ("Lee has 30 eggs, buys 5 boxes of 12 eggs each, gives a third away and sells the rest for $2 each. "
            "How much money does Lee make?")
    fact = "What is the capital of Kenya?"
    best = router.route_batch([word, fact])
    assert all(x.objective == "quality" for x in best)
    for x in best:  # the objective picks the highest *predicted* quality (the route declares none)
        assert x.predicted_quality is not None
        assert x.model == max(["big", "cheap"], key=lambda m: x.predicted_quality[m])  # type: ignore[index]
    assert best[0].model == "big"
    assert {c.model: c.quality_source for c in best[1].candidates} == {"big": "predicted", "cheap": "predicted"}
    ctx = RequestContext(quality_target=0.8)
    chosen = router.route_batch([word, fact], contexts=[ctx, ctx])
    assert [x.model for x in chosen] == ["big", "cheap"]
    assert all(x.objective == "cheapest" and x.quality_target == 0.8 for x in chosen)
    cands = {c.model: c.quality for c in chosen[1].candidates}
    assert cands == pytest.approx(best[1].predicted_quality)


def test_cli_route_quality_target(quality_bundles: dict[str, Path]) -> None:
    word = ("Sam has 12 pencils, buys 7 boxes of 10 pencils each, gives a third away and sells the rest for $1 "
            "each. How much money does Sam make?")
    r = CliRunner().invoke(main, ["route", "--index", str(quality_bundles["fitted"]), "--json",
                                  "--quality-target", "0.8", word])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["model"] == "big" and d["quality_target"] == 0.8
    assert set(d["predicted_quality"]) == {"big", "cheap"}
