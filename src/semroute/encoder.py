"""Encoders: the ``Encoder`` protocol and the ONNX runtime encoder used on the serving path.

The serving path needs only onnxruntime and tokenizers (no torch). ``semroute.export`` builds the int8 model.

An encoder directory holds ``model.onnx`` (pooling and L2 normalisation inside the graph), ``tokenizer.json`` and
``encoder.json`` (dimension, max tokens, provenance). Its fingerprint hashes the model and tokenizer bytes, so a
bundle built with one encoder is refused by another.

    >>> enc = OnnxEncoder("bundle/encoder")
    >>> out = enc.encode(["how do I get a refund"])
    >>> out.vectors.shape
    (1, 384)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .errors import EncoderError

# onnxruntime 1.32 starts a telemetry client (an HTTP uploader with a collector URL) and writes a device id under
# $HOME unless told not to. Nothing on the serving path may reach the network or need a writable home, so it is off
# unless the operator set the variable explicitly. Set before onnxruntime is first imported (it reads it then).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

MODEL_FILE = "model.onnx"
FP32_MODEL_FILE = "model_fp32.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "encoder.json"

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Encoded:
    """Unit-length embeddings for a batch, with what the decision needs to report."""

    vectors: Vectors  # (n, dim) float32, L2-normalised
    n_tokens: list[int]
    truncated: list[bool]
    tokenize_ns: int
    encode_ns: int


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into unit-length vectors. Must be batch-invariant: a text's vector does not depend on what
    else is in the batch (the router's decisions must not depend on concurrent traffic)."""

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def info(self) -> dict[str, Any]: ...

    def encode(self, texts: Sequence[str]) -> Encoded: ...


def _int(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], not {value!r}")
    return value


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint_dir(directory: Path, model_file: str = MODEL_FILE) -> str:
    """sha256 over the model and tokenizer bytes: what makes two encoders produce the same vectors."""
    h = hashlib.sha256()
    for name in (model_file, TOKENIZER_FILE):
        h.update(name.encode())
        h.update(file_sha256(directory / name).encode())
    return h.hexdigest()


# onnxruntime 1.32 fuses bias + residual + LayerNorm into SkipLayerNormalization, whose CPU kernel measured ~27 us
# per call at 14 tokens on one thread against ~12 us for the three plain nodes (and 12.4 vs 15.0 ms for a whole
# 128-token int8 query): 15% of a short query. Same for the fp32 and int8 graphs, so comparisons stay fair.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


class OnnxEncoder:
    """The int8 ONNX sentence encoder. One session; ``threads`` intra-op threads (1 is fastest for single queries
    on small machines, and leaves the other core to the server)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        threads: int = 1,
        model_file: str = MODEL_FILE,
        disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        ort.disable_telemetry_events()  # and its events off, should onnxruntime have been imported before us

        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        for need in (model_file, TOKENIZER_FILE, META_FILE):
            if not (self.directory / need).is_file():
                raise EncoderError(
                    f"encoder directory {self.directory} has no {need}; export one with "
                    "'semroute export-encoder --out DIR' (needs: pip install 'semroute[build]')"
                )
        try:
            self._meta: dict[str, Any] = json.loads(meta_path.read_bytes())
            self._dim = _int(self._meta["dim"], "dim", 1, 65_536)
            self._max_tokens = _int(self._meta["max_tokens"], "max_tokens", 1, 1 << 20)
            pad_id = _int(self._meta.get("pad_id", 0), "pad_id", 0, 1 << 31)
            pad_token = self._meta.get("pad_token", "[PAD]")
            if not isinstance(pad_token, str):
                raise TypeError("pad_token must be a string")
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # AttributeError: not a JSON object
            raise EncoderError(f"{meta_path}: unreadable encoder metadata ({type(e).__name__}: {e})") from None
        self._fingerprint = fingerprint_dir(self.directory, model_file)
        try:
            tok = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise EncoderError(f"{self.directory / TOKENIZER_FILE}: cannot load tokenizer ({e})") from e
        # The shipped tokenizer pads everything to 128 tokens; pad to the longest in the batch instead, and
        # truncate at the model's limit so long inputs are cut, not rejected.
        tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
        tok.enable_truncation(max_length=self._max_tokens)
        self._tokenizer = tok
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.directory / model_file),
                opts,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=list(disabled_optimizers),
            )
        except Exception as e:
            raise EncoderError(f"{self.directory / model_file}: onnxruntime cannot load it ({e})") from e
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.threads = threads
        self.model_file = model_file

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def info(self) -> dict[str, Any]:
        return {**self._meta, "fingerprint": self._fingerprint, "threads": self.threads}

    def encode(self, texts: Sequence[str]) -> Encoded:
        if not texts:
            return Encoded(np.zeros((0, self._dim), np.float32), [], [], 0, 0)
        t0 = time.perf_counter_ns()
        encs = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        t1 = time.perf_counter_ns()
        (vectors,) = self._session.run(None, feeds)
        t2 = time.perf_counter_ns()
        return Encoded(
            vectors=np.ascontiguousarray(vectors, dtype=np.float32),
            n_tokens=[int(m.sum()) for m in mask],
            truncated=[bool(e.overflowing) for e in encs],
            tokenize_ns=t1 - t0,
            encode_ns=t2 - t1,
        )
