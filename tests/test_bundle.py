"""Bundles through the real encoder and FAISS: atomic writes, reuse of embeddings, checked loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from semroute.bundle import build_bundle, load_bundle
from semroute.encoder import OnnxEncoder
from semroute.errors import BundleError
from semroute.router import Router
from semroute.routes import load_routes

ROUTES = """\
version: 1
fallback: {model: big}
models:
  small: {cost_per_1k_input: 0.1, cost_per_1k_output: 0.2}
  big: {cost_per_1k_input: 1, cost_per_1k_output: 2}
defaults: {threshold: 0.4}
routes:
  - name: billing
    model: small
    utterances: [I was charged twice this month, how do I get a refund, my invoice is wrong,
                 cancel my subscription and refund me]
    negative_utterances: [what is the history of paper money]
  - name: coding
    model: big
    utterances: [write a python function to reverse a list, fix this segfault in my C code,
                 how do I center a div with css, explain this regex]
"""


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    p = tmp_path / "routes.yaml"
    p.write_text(ROUTES)
    return p


@pytest.fixture(scope="module")
def enc(encoder_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(encoder_dir, threads=2)


def test_build_writes_manifest_and_routes(small: Path, enc: OnnxEncoder, encoder_dir: Path, tmp_path: Path) -> None:
    out, _ = build_bundle(load_routes([small]), enc, encoder_dir, tmp_path / "b")
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == 1 and m["semroute_version"]
    assert m["encoder"]["fingerprint"] == enc.fingerprint
    assert m["route_files"] == {str(small): load_routes([small]).sources[str(small)]}
    assert m["counts"] == {"routes": 2, "utterances": 8, "negative_utterances": 1, "fallback_utterances": 0,
                           "vectors": 9, "embedded": 9, "reused": 0}
    assert m["settings"]["index_factory"] == "Flat"
    assert not (out / "encoder" / "model_fp32.onnx").exists()  # only what serving needs
    router = Router.load(out)
    d = router.route("I want my money back, you billed me two times")
    assert d.route == "billing" and d.model == "small" and not d.fallback
    assert d.index_version == m["version"]
    assert d.neighbours and d.neighbours[0].route == "billing"
    assert router.route("what is the history of paper money").reason.value == "negative_match"


def test_rebuild_reuses_unchanged_embeddings(small: Path, enc: OnnxEncoder, encoder_dir: Path,
                                             tmp_path: Path) -> None:
    out = tmp_path / "b"
    build_bundle(load_routes([small]), enc, encoder_dir, out)
    small.write_text(ROUTES.replace("explain this regex", "explain this regular expression to me"))
    _, stats = build_bundle(load_routes([small]), enc, encoder_dir, out)
    assert stats == {**stats, "embedded": 1, "reused": 8}


def test_failed_build_leaves_previous_bundle(small: Path, enc: OnnxEncoder, encoder_dir: Path,
                                             tmp_path: Path) -> None:
    out = tmp_path / "b"
    build_bundle(load_routes([small]), enc, encoder_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(BundleError, match="index factory"):
        build_bundle(load_routes([small]), enc, encoder_dir, out, factory="NotAnIndex99")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "routes.yaml"]  # no temp dirs left behind
    load_bundle(out)


def test_index_factory_override(small: Path, enc: OnnxEncoder, encoder_dir: Path, tmp_path: Path) -> None:
    out, _ = build_bundle(load_routes([small]), enc, encoder_dir, tmp_path / "h", factory="HNSW32,Flat")
    b = load_bundle(out)
    assert b.manifest["settings"]["index_factory"] == "HNSW32,Flat"
    flat = Router(load_bundle(build_bundle(load_routes([small]), enc, encoder_dir, tmp_path / "f")[0]), enc)
    hnsw = Router(b, enc)
    for q in ["fix this segfault in my C code", "refund my money", "what's the weather"]:
        a, h = flat.route(q), hnsw.route(q)
        assert (a.route, a.reason) == (h.route, h.reason) and abs(a.score - h.score) < 1e-5
    assert hnsw.route("fix this segfault in my C code").neighbours[0].similarity > 0.99


@pytest.mark.parametrize("damage", ["tokenizer", "format", "index", "manifest", "routes_missing"])
def test_load_refuses_damaged_bundle(damage: str, small: Path, enc: OnnxEncoder, encoder_dir: Path,
                                     tmp_path: Path) -> None:
    out, _ = build_bundle(load_routes([small]), enc, encoder_dir, tmp_path / "b")
    if damage == "tokenizer":
        with (out / "encoder" / "tokenizer.json").open("a") as f:
            f.write(" ")
        match = "encoder fingerprint mismatch"
    elif damage == "format":
        m = json.loads((out / "manifest.json").read_text())
        m["format"] = 99
        (out / "manifest.json").write_text(json.dumps(m))
        match = "format 99 is not supported"
    elif damage == "index":
        data = (out / "index.faiss").read_bytes()
        (out / "index.faiss").write_bytes(data[: len(data) // 2])
        match = "index.faiss does not match its hash"
    elif damage == "manifest":
        (out / "manifest.json").write_text("{not json")
        match = "corrupt manifest"
    else:
        (out / "routes.json").unlink()
        match = "incomplete"
    with pytest.raises(BundleError, match=match):
        load_bundle(out)


def test_router_refuses_other_encoder(small: Path, enc: OnnxEncoder, encoder_dir: Path, tmp_path: Path) -> None:
    from semroute.testing import FakeEncoder

    out, _ = build_bundle(load_routes([small]), enc, encoder_dir, tmp_path / "b")
    with pytest.raises(BundleError, match="does not match"):
        Router(load_bundle(out), FakeEncoder())


def test_missing_bundle_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="build-index"):
        load_bundle(tmp_path / "nope")
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("scorer", ["knn", "logistic"])
def test_fallback_utterances_veto_and_train_the_head(scorer: str, enc: OnnxEncoder, encoder_dir: Path,
                                                     tmp_path: Path) -> None:
    plain = ROUTES.replace("defaults: {threshold: 0.4}", f"defaults: {{threshold: 0.0, scorer: {scorer}}}")
    text = plain.replace("fallback: {model: big}", "fallback:\n  model: big\n  utterances: "
                         "[what is the weather in Paris tomorrow, tell me a joke about penguins]")
    (tmp_path / "routes.yaml").write_text(text)
    (tmp_path / "plain.yaml").write_text(plain)
    rs = load_routes([tmp_path / "routes.yaml"])
    assert rs.fallback_utterances == ("what is the weather in Paris tomorrow", "tell me a joke about penguins")
    out, _ = build_bundle(rs, enc, encoder_dir, tmp_path / "b")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["fallback_utterances"] == 2 and manifest["counts"]["negative_utterances"] == 1
    router = Router.load(out)
    query = "what will the weather be in Paris tomorrow?"
    d = router.route(query, top_neighbours=1)
    assert d.fallback and d.reason.value == "negative_match" and d.model == "big"
    assert d.neighbours[0].route == "" and d.neighbours[0].negative
    assert router.route("I was charged twice this month, refund me").route == "billing"
    # without the fallback examples, the same routes (threshold 0) would have routed the weather query
    plain_out, _ = build_bundle(load_routes([tmp_path / "plain.yaml"]), enc, encoder_dir, tmp_path / "plain")
    assert Router.load(plain_out).route(query).reason.value == "matched"


def test_head_weight_blends_knn_and_head(enc: OnnxEncoder, encoder_dir: Path, tmp_path: Path) -> None:
    query = "I think my card was charged twice, can I get a refund"
    scores = {}
    for name, defaults in [("knn", "{threshold: 0.0, scorer: knn}"),
                           ("w0", "{threshold: 0.0, head_weight: 0}"),
                           ("w1", "{threshold: 0.0, head_weight: 1, head_l2: 0.001}"),
                           ("half", "{threshold: 0.0}")]:
        (tmp_path / f"{name}.yaml").write_text(ROUTES.replace("defaults: {threshold: 0.4}", f"defaults: {defaults}"))
        out, _ = build_bundle(load_routes([tmp_path / f"{name}.yaml"]), enc, encoder_dir, tmp_path / name)
        router = Router.load(out)
        scores[name] = {s.route: s.score for s in router.route(query).scores}
        if name == "w1":
            settings = json.loads((out / "manifest.json").read_text())["settings"]
            assert settings["head_weight"] == 1.0 and settings["head_l2"] == 0.001  # recorded in the bundle
            probs = router.bundle.head.probabilities(enc.encode([query]).vectors)[0]  # type: ignore[union-attr]
    # weight 0: the kNN scores exactly; weight 1: the head's probabilities; the default: their mean
    assert scores["w0"] == pytest.approx(scores["knn"])
    assert scores["w1"] == pytest.approx({"billing": float(probs[0]), "coding": float(probs[1])})
    assert scores["w1"]["billing"] + scores["w1"]["coding"] <= 1.0 + 1e-6
    assert scores["half"]["billing"] > scores["half"]["coding"]
