"""Read a sentence-transformers model directory with numpy alone: its configuration and its safetensors weights.

Why: the default encoder export needs the model's configuration and weights, not its code. Reading them from the
files lets ``pip install 'semroute[build]'`` (onnx, safetensors) export all-MiniLM-L6-v2 without torch,
transformers or sentence-transformers (~750 MB); those stay in the ``export`` extra for the traced graph, which
needs the model's own forward pass.

What is read, and how sentence-transformers would read it:
- ``modules.json``: the pipeline (Transformer, then Pooling, then Normalize). A module semroute's graph does not
  compute (a Dense projection, another pooling) is refused, not silently dropped.
- ``config.json``: the transformers configuration (architecture, sizes, activation, LayerNorm epsilon).
- ``sentence_bert_config.json``: ``max_seq_length``, the truncation length.
- ``model.safetensors``: the weights, as ``transformers``' ``BertModel.state_dict()`` names them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EncoderError

WEIGHTS_FILE = "model.safetensors"

# sentence-transformers' Pooling config: one flag per mode (older files) or one "pooling_mode" key (newer)
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_COMPUTED = ("Transformer", "Pooling", "Normalize")  # what the exported graph computes (mean + L2 in the graph)


@dataclass(frozen=True)
class ModelFiles:
    """What the exporter needs from a sentence-transformers model directory, read without its library."""

    path: Path
    config: dict[str, Any]  # config.json
    max_tokens: int
    dim: int

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE


def read_model_dir(path: Path) -> ModelFiles:
    """Read and check ``path``'s configuration (not the weights: see ``load_weights``)."""
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise EncoderError(f"{path} is not a sentence-transformers model directory (no modules.json)")
    modules = _read_json(path / "modules.json") if (path / "modules.json").is_file() else []
    _check_modules(path, modules)
    config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
    st_cfg = path / "sentence_bert_config.json"
    max_len = _read_json(st_cfg).get("max_seq_length") if st_cfg.is_file() else None
    if max_len is None:  # as sentence-transformers: the position table's and the tokenizer's limit
        tok_cfg = path / "tokenizer_config.json"
        limits = [config.get("max_position_embeddings"), _read_json(tok_cfg).get("model_max_length") if
                  tok_cfg.is_file() else None]
        known = [int(x) for x in limits if isinstance(x, int | float) and x < 1e6]
        max_len = min(known) if known else 256
    return ModelFiles(path=path, config=config, max_tokens=int(max_len), dim=int(config.get("hidden_size", 0)))


def load_weights(files: ModelFiles) -> dict[str, np.ndarray] | None:
    """The weights as float32 numpy arrays named as ``BertModel.state_dict()`` names them, or None when the model
    has no safetensors file or stores a dtype numpy lacks (bfloat16): the traced export reads those through torch."""
    if not files.weights_file.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        raw = load_file(str(files.weights_file))
    except (SafetensorError, KeyError, TypeError, ValueError):
        return None
    out = {}
    for name, value in raw.items():
        # a checkpoint saved from BertFor* prefixes the encoder's weights with "bert."
        key = name.removeprefix("bert.")
        out[key] = value.astype(np.float32) if value.dtype.kind == "f" else value
    return out


def pooling_modes(path: Path) -> list[str]:
    """The pooling modes of ``path``'s Pooling modules (["mean"] for all-MiniLM-L6-v2)."""
    modules = _read_json(path / "modules.json") if (path / "modules.json").is_file() else []
    modes = []
    for m in modules:
        if str(m.get("type", "")).rsplit(".", 1)[-1] != "Pooling":
            continue
        cfg_file = path / str(m.get("path", "")) / "config.json"
        cfg = _read_json(cfg_file) if cfg_file.is_file() else {}
        mode = cfg.get("pooling_mode")
        if mode is None:
            flags = [_POOLING_FLAGS.get(k, k) for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
            mode = "+".join(flags) or "unknown"
        modes.append(str(mode))
    return modes


def _check_modules(path: Path, modules: list[dict[str, Any]]) -> None:
    """The exported graph mean-pools and L2-normalises: refuse a model that does something else, rather than export
    an encoder whose vectors silently differ from the model's own."""
    others = [str(m.get("type")) for m in modules if str(m.get("type", "")).rsplit(".", 1)[-1] not in _COMPUTED]
    if others:
        raise EncoderError(
            f"{path / 'modules.json'}: has {', '.join(others)}; semroute's encoder graph computes only a transformer, "
            "mean pooling and L2 normalisation. Use a model without extra modules"
        )
    modes = pooling_modes(path)
    if modes and modes != ["mean"]:
        raise EncoderError(
            f"{path}: pools with {', '.join(modes)}; semroute's encoder graph does mean pooling only. "
            "Use a mean-pooling sentence-transformers model (most are), or edit its 1_Pooling/config.json "
            "knowing its vectors will change"
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise EncoderError(f"{path}: unreadable ({e}); is the model directory complete?") from e
