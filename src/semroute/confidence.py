"""A confidence model fitted by ``semroute calibrate``: the probability that routing a query to its best route is
right, from several signals at once instead of one raw score.

Why: a raw route score (kNN similarity, or its blend with the head's probability) is one view of "how sure". An
out-of-scope query can sit close to one example yet leave the head unsure, or be classified confidently while no
example is near; a small margin to the runner-up says the query falls between routes. A logistic model over these
signals (and their squares, so a signal may matter only at its extremes), fitted on labelled validation data with
out-of-scope queries, separates "route it" from "send it to the fallback model" better than any threshold on one
score. Measured on CLINC150 (fitted on val, reported on test; README): see the table there.

With a confidence model in the bundle, a decision's ``score`` is that probability and thresholds apply to it; the
per-route ``scores`` list keeps the raw route scores.

    >>> model = fit_confidence(signals, correct, weights)
    >>> model.confidence(signals[:3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# The signals, in order; Router computes them for every query (see Router.route_batch).
SIGNALS = (
    "score",  # the best route's score (kNN, or kNN blended with the head)
    "margin",  # best score minus the runner-up's
    "knn",  # the best route's kNN score alone
    "head",  # the head's probability of the best route (the kNN score when the bundle has no head)
    "nearest",  # similarity of the nearest utterance of any route
    "none",  # the head's "none of these routes" probability (0 without negative utterances)
)
_EPOCHS = 3000
_LR = 0.1
_L2 = 1e-3
MIN_EXAMPLES = 40  # fewer labelled queries (or fewer than MIN_CLASS of either outcome): no model, thresholds only
MIN_CLASS = 8

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ConfidenceModel:
    mean: Array
    scale: Array
    weights: Array  # over [z, z**2], z the standardised signals
    bias: float

    def confidence(self, signals: npt.ArrayLike) -> Array:
        """(n, len(SIGNALS)) signals -> (n,) probabilities that the best route is the right answer."""
        x = np.atleast_2d(np.asarray(signals, dtype=np.float64))
        return 1.0 / (1.0 + np.exp(-(_expand(x, self.mean, self.scale) @ self.weights + self.bias)))

    def to_dict(self) -> dict[str, Any]:
        return {"signals": list(SIGNALS), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfidenceModel:
        if list(d.get("signals", [])) != list(SIGNALS):
            raise ValueError(f"confidence model signals {d.get('signals')} != {list(SIGNALS)}")
        m = cls(np.array(d["mean"], float), np.array(d["scale"], float), np.array(d["weights"], float),
                float(d["bias"]))
        if m.mean.shape != (len(SIGNALS),) or m.scale.shape != m.mean.shape or m.weights.shape != (2 * len(SIGNALS),):
            raise ValueError("confidence model arrays have the wrong shape")
        return m


def _expand(x: Array, mean: Array, scale: Array) -> Array:
    z = (x - mean) / scale
    return np.concatenate([z, z * z], axis=1)


def fit_confidence(
    signals: npt.ArrayLike, correct: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> ConfidenceModel:
    """Weighted logistic regression of ``correct`` (routing to the best route is right) on the signals.

    ``weights`` let calibration state the expected out-of-scope share. Deterministic (full-batch gradient descent).
    """
    x = np.asarray(signals, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mean = (x * w[:, None]).sum(0)
    # a constant signal (e.g. "none" without negative utterances) gets scale 1 and so contributes nothing
    scale = np.sqrt((((x - mean) ** 2) * w[:, None]).sum(0))
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = _expand(x, mean, scale)
    theta = np.zeros(z.shape[1])
    prior = float(np.clip((y * w).sum(), 1e-6, 1 - 1e-6))
    b = float(np.log(prior / (1 - prior)))
    for _ in range(_EPOCHS):
        p = 1.0 / (1.0 + np.exp(-(z @ theta + b)))
        g = (p - y) * w
        theta -= _LR * (z.T @ g + _L2 * theta)
        b -= _LR * float(g.sum())
    return ConfidenceModel(mean, scale, theta, b)
