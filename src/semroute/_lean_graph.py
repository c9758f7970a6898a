"""A lean ONNX graph for BERT sentence encoders, written node by node from the weights (export time only).

Why: at batch 1 a 14-token query spends about as long in the graph's bookkeeping as in its matrix products. Tracing
``transformers``' ``BertModel`` gives ~530 nodes (~300 after onnxruntime's own fusions): ~80 build the attention mask
through the library's generic masking code, every ``view``/``reshape`` recomputes its target from ``Shape`` ops,
and each attention is ~15 small nodes. onnxruntime cannot fold those (batch and sequence sizes are dynamic), and
each costs a kernel launch on every call, in the fp32 and the int8 graph alike. Here each layer is eight nodes:
three projections, onnxruntime's fused ``MultiHeadAttention`` (biases and padding mask inside), the output
projection, ``SkipLayerNormalization`` (bias + residual + LayerNorm), the feed-forward pair with ``BiasGelu``.
The contrib ops are onnxruntime's own (domain ``com.microsoft``), which is the only runtime semroute serves with.

SmoothQuant (see ``export.py``) needs a per-channel divide before each quantized projection. Where the activation
comes from a linear step, the divide is folded into it instead of costing a node: the output projection's input is
the attention over V, so its scale goes into V's weights and bias.

It reads the model's ``config.json`` and its weights as numpy arrays (``_model_files``), so it needs no torch. A
model whose configuration it does not describe exactly (not BERT, relative positions, another activation) uses the
generic trace instead. That it reproduces the model's own forward pass (to 1e-5, through sentence-transformers and
torch) is checked by the test suite (tests/test_lean_graph.py), which has torch; the export itself does not need it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MS = "com.microsoft"


Weights = dict[str, np.ndarray]  # float32 arrays named as transformers' ``BertModel.state_dict()`` names them


def supports(config: dict[str, Any]) -> bool:
    """Whether ``config`` (a transformers ``config.json``) is a plain BERT encoder that this graph reproduces."""
    return (
        config.get("model_type") == "bert"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and not config.get("is_decoder", False)
        and not config.get("add_cross_attention", False)
        and config.get("hidden_act") == "gelu"
    )


def has_weights(config: dict[str, Any], sd: Weights) -> bool:
    """Whether ``sd`` holds every tensor ``build`` reads (a checkpoint of another layout is traced instead)."""
    return all(k in sd for k in _needed(config))


def smoothing_points(config: dict[str, Any]) -> list[str]:
    """The activations that feed quantized projections, in the graph this module builds (probe these)."""
    names = []
    for i in range(int(config["num_hidden_layers"])):
        names += [f"l{i}.in", f"l{i}.ctx", f"l{i}.mid", f"l{i}.act"]
    return names


def build(config: dict[str, Any], sd: Weights, smooth: dict[str, np.ndarray] | None = None) -> tuple[Any, list[str]]:
    """The fp32 ONNX graph: (input_ids, attention_mask, token_type_ids) -> L2-normalised mean-pooled embedding.

    ``config`` is the model's ``config.json``, ``sd`` its weights. ``smooth`` maps an activation name
    (``smoothing_points``) to SmoothQuant's per-channel scale s: the graph then computes the same function with that
    activation divided by s and the consuming weight rows multiplied by s. Returns the model and the names of the
    projection MatMuls (the ones to quantize).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    smooth = smooth or {}
    eps = float(config.get("layer_norm_eps", 1e-12))
    heads = int(config["num_attention_heads"])
    nodes: list[Any] = []
    inits: list[Any] = []
    projections: list[str] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    declared: list[Any] = []

    def node(
        op: str, inputs: list[str], output: str, domain: str = "", dtype: int = TensorProto.FLOAT, **attrs: Any
    ) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        # declared, because ONNX's shape inference cannot see through com.microsoft ops and the quantizer
        # skips any tensor whose type it does not know
        declared.append(helper.make_tensor_value_info(output, dtype, None))
        return output

    def add_norm(x: str, residual: str, gamma: np.ndarray, beta: np.ndarray, bias: np.ndarray, out: str) -> str:
        # bias, residual, LayerNorm as three plain nodes: onnxruntime's SkipLayerNormalization kernel measured
        # ~30 us per call at 14 tokens on one thread against ~12 us for these three
        y = node("Add", [node("Add", [x, init(f"{out}.bias", bias)], f"{out}.biased"), residual], f"{out}.sum")
        return node(
            "LayerNormalization", [y, init(f"{out}.g", gamma), init(f"{out}.b", beta)], out, axis=-1, epsilon=eps
        )

    def scaled_input(x: str, point: str) -> str:
        # an activation SmoothQuant divides by s, as its own Mul (it feeds a residual too, so it cannot be folded)
        if point not in smooth:
            return x
        return node("Mul", [x, init(f"{point}.inv_s", (1.0 / smooth[point]).astype(np.float32))], f"{point}.smoothed")

    def proj(x: str, weight: np.ndarray, point: str, name: str) -> str:
        # torch Linear stores [out, in]; MatMul wants [in, out]; SmoothQuant scales the input rows by s
        w = weight.T.copy()
        if point in smooth:
            w *= smooth[point][:, None]
        projections.append(name)
        return node("MatMul", [x, init(f"{name}.w", w.astype(np.float32))], name)

    e = "embeddings."
    i32_mask = node("Cast", ["attention_mask"], "mask_i32", dtype=TensorProto.INT32, to=TensorProto.INT32)
    seq = node("Shape", ["input_ids"], "seq_len", dtype=TensorProto.INT64, start=1, end=2)
    pos = node(
        "Slice",
        [init("pos_table", sd[e + "position_embeddings.weight"]), init("zero", np.array([0], np.int64)), seq],
        "pos_emb",
    )
    words = node("Gather", [init("word_table", sd[e + "word_embeddings.weight"]), "input_ids"], "word_emb")
    types = node("Gather", [init("type_table", sd[e + "token_type_embeddings.weight"]), "token_type_ids"], "type_emb")
    summed = node("Add", [node("Add", [words, types], "wt_emb"), pos], "emb_sum")
    h = node(
        "LayerNormalization",
        [summed, init("emb_ln.g", sd[e + "LayerNorm.weight"]), init("emb_ln.b", sd[e + "LayerNorm.bias"])],
        "l0.in",
        axis=-1,
        epsilon=eps,
    )
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        a = p + "attention."
        x = scaled_input(h, f"l{i}.in")
        q = proj(x, sd[a + "self.query.weight"], f"l{i}.in", f"l{i}.q")
        k = proj(x, sd[a + "self.key.weight"], f"l{i}.in", f"l{i}.k")
        # the output projection's SmoothQuant divide folds into V: attention is linear in V per channel
        ctx_s = smooth.get(f"l{i}.ctx", np.ones(sd[a + "self.value.bias"].shape, np.float32))
        wv = sd[a + "self.value.weight"] / ctx_s[:, None]
        v = proj(x, wv, f"l{i}.in", f"l{i}.v")
        bias = np.concatenate([sd[a + "self.query.bias"], sd[a + "self.key.bias"], sd[a + "self.value.bias"] / ctx_s])
        ctx = node(
            "MultiHeadAttention",
            [q, k, v, init(f"l{i}.qkv_b", bias.astype(np.float32)), i32_mask],
            f"l{i}.ctx",
            domain=MS,
            num_heads=heads,
        )
        o = proj(ctx, sd[a + "output.dense.weight"], f"l{i}.ctx", f"l{i}.o")
        h1 = add_norm(
            o, h, sd[a + "output.LayerNorm.weight"], sd[a + "output.LayerNorm.bias"], sd[a + "output.dense.bias"],
            f"l{i}.mid",
        )
        f1 = proj(scaled_input(h1, f"l{i}.mid"), sd[p + "intermediate.dense.weight"], f"l{i}.mid", f"l{i}.ff1")
        act = node("BiasGelu", [f1, init(f"l{i}.ff1.b", sd[p + "intermediate.dense.bias"])], f"l{i}.act", domain=MS)
        f2 = proj(scaled_input(act, f"l{i}.act"), sd[p + "output.dense.weight"], f"l{i}.act", f"l{i}.ff2")
        h = add_norm(
            f2, h1, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], sd[p + "output.dense.bias"],
            f"l{i + 1}.in",
        )
    # mean pooling over real tokens, then L2 normalisation (as sentence-transformers' Pooling + Normalize)
    m = node(
        "Unsqueeze",
        [node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT), init("last", np.array([-1], np.int64))],
        "mask_3d",
    )
    one = init("axis1", np.array([1], np.int64))
    total = node("ReduceSum", [node("Mul", [h, m], "masked"), one], "tok_sum", keepdims=0)
    count = node(
        "Clip",
        [node("ReduceSum", [m, one], "tok_count", keepdims=0), init("min_count", np.array(1e-9, np.float32))],
        "tok_count_c",
    )
    pooled = node("Div", [total, count], "pooled")
    norm = node(
        "Clip",
        [node("ReduceL2", [pooled], "l2", axes=[-1], keepdims=1),  # opset 17: axes is still an attribute here
         init("min_norm", np.array(1e-12, np.float32))],
        "l2_c",
    )
    node("Div", [pooled, norm], "embedding")

    ids = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", int(config["hidden_size"])])
    graph = helper.make_graph(
        nodes, "semroute_bert", ids, [out], inits, value_info=[t for t in declared if t.name != "embedding"]
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)], producer_name="semroute"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, projections


def smoothing_scales(
    config: dict[str, Any], sd: Weights, amax: dict[str, np.ndarray], alpha: float
) -> dict[str, np.ndarray]:
    """SmoothQuant's s_j = max|X_j|^alpha / max|W_j|^(1-alpha) per input channel j of each quantized projection.

    Where one activation feeds Q, K and V, W is the key's weight. That is what the traced export computed (it took
    the first consumer in its graph's order, which was K), kept so that the lean graph changes speed, not numerics:
    the evaluation and calibration figures were measured on it. The alternative was measured on CLINC150 val: the
    maximum over Q, K and V brings int8 closer to fp32 (98.5% vs 98.2% of decisions agree) but routes worse (94.8%
    vs 95.0% val accuracy with the learned scorer). With K, the lean and the traced int8 graphs share every
    quantization parameter and differ by rounding only (embeddings at cosine 0.9985: rounding flips grow through
    the layers).
    """
    out = {}
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        a = p + "attention."
        consumers = {
            f"l{i}.in": [a + "self.key.weight"],
            f"l{i}.ctx": [a + "output.dense.weight"],
            f"l{i}.mid": [p + "intermediate.dense.weight"],
            f"l{i}.act": [p + "output.dense.weight"],
        }
        for point, weights in consumers.items():
            # torch Linear weights are [out, in]: the maximum over the output axis, per input channel
            wmax = np.max([np.abs(sd[w]).max(0) for w in weights], axis=0)
            s = np.maximum(amax[point], 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)
            out[point] = s.astype(np.float32)
    return out


def _needed(config: dict[str, Any]) -> list[str]:
    e = "embeddings."
    names = [e + t + ".weight" for t in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    names += [e + "LayerNorm.weight", e + "LayerNorm.bias"]
    for i in range(int(config.get("num_hidden_layers", 0))):
        p = f"encoder.layer.{i}."
        for lin in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                    "intermediate.dense", "output.dense"):
            names += [p + lin + ".weight", p + lin + ".bias"]
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            names += [p + ln + ".weight", p + ln + ".bias"]
    return names


def compress_word_table(model: Any) -> Any:
    """Store the word-embedding table as int8 with one float scale per row: gather, then dequantize.

    Why: the table is 30522 x 384 floats, 47 of the int8 model's 59 MB, and a query reads ~14 of its rows. Each row is
    scaled by its own max |value| / 127, so a rare token with small values keeps its resolution. Gathering int8 rows
    and their scales, then multiplying, gives exactly the dequantized table's rows (the products are the same float32
    operations). The projections' quantization parameters are untouched: this runs on the quantized model, and the
    fp32 reference graph keeps the float table.
    """
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    (table_init,) = [i for i in g.initializer if i.name == "word_table"]
    (k, gather) = next((k, n) for k, n in enumerate(g.node) if n.op_type == "Gather" and n.input[0] == "word_table")
    table = numpy_helper.to_array(table_init).astype(np.float32)
    scale = np.abs(table).max(1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    g.initializer.remove(table_init)
    g.initializer.extend([numpy_helper.from_array(q, "word_table_q"),
                          numpy_helper.from_array(scale.astype(np.float32), "word_table_scale")])
    ids, out = gather.input[1], gather.output[0]
    new = [
        helper.make_node("Gather", ["word_table_q", ids], ["word_emb_q"], name="word_emb_q"),
        helper.make_node("Cast", ["word_emb_q"], ["word_emb_f"], name="word_emb_f", to=TensorProto.FLOAT),
        helper.make_node("Gather", ["word_table_scale", ids], ["word_emb_s"], name="word_emb_s"),
        helper.make_node("Mul", ["word_emb_f", "word_emb_s"], [out], name=out),
    ]
    g.node.remove(gather)
    for j, node in enumerate(new):
        g.node.insert(k + j, node)
    g.value_info.extend([helper.make_tensor_value_info("word_emb_q", TensorProto.INT8, None),
                         helper.make_tensor_value_info("word_emb_f", TensorProto.FLOAT, None),
                         helper.make_tensor_value_info("word_emb_s", TensorProto.FLOAT, None)])
    return model
