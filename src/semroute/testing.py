"""A deterministic fake encoder for unit tests of routing logic (no model, no onnxruntime).

Words are hashed into a fixed number of dimensions (a bag of words), so texts sharing words are similar, and the
same text always gives the same unit vector whatever it is batched with.

    >>> enc = FakeEncoder()
    >>> float(enc.encode(["refund my order"]).vectors[0] @ enc.encode(["refund order"]).vectors[0]) > 0.5
    True
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .encoder import Encoded

_WORD = re.compile(r"[a-z0-9]+")


class FakeEncoder:
    def __init__(self, dim: int = 64, max_tokens: int = 32) -> None:
        self._dim = dim
        self._max_tokens = max_tokens

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def fingerprint(self) -> str:
        return f"fake-bow-{self._dim}-{self._max_tokens}"

    @property
    def info(self) -> dict[str, Any]:
        return {"name": "fake-bag-of-words", "dim": self._dim, "max_tokens": self._max_tokens}

    def encode(self, texts: Sequence[str]) -> Encoded:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        n_tokens, truncated = [], []
        for i, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            truncated.append(len(words) > self._max_tokens)
            words = words[: self._max_tokens]
            n_tokens.append(len(words))
            for w in words:
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i, h % self._dim] += 1.0 if (h >> 32) & 1 else -1.0
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm > 0 else out[i]
        return Encoded(out, n_tokens, truncated, 0, 0)
