"""A learned scorer fitted at build time from the route utterances: a softmax (multinomial logistic) head over
the embeddings. Negative utterances train an extra "none of these routes" class, so they pull probability away
from the routes they resemble.

The decision score for route r combines the head's confidence with the nearest-neighbour score:
    score_r = (1 - head_weight) * knn_r + head_weight * p_r
so out-of-scope queries need both a close example and a confident head to clear a threshold. ``head_weight`` and
the head's L2 penalty ``head_l2`` are route-file defaults (routes.Defaults). Fitting is plain numpy (full-batch
gradient descent with Adam), deterministic, and takes seconds for 15,000 utterances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._route_limits import MAX_HEAD_CELLS
from .errors import ConfigError

_EPOCHS = 300
_LR = 0.05
_SCALE = 20.0  # logits on unit vectors need a temperature; learned weights start from scaled centroids


@dataclass(frozen=True)
class LogisticHead:
    weights: npt.NDArray[np.float32]  # (dim, n_routes [+1 for "none"])
    bias: npt.NDArray[np.float32]
    n_routes: int

    def probabilities(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, n_routes) probabilities of each route (the "none" class's share is left out)."""
        z = vectors @ self.weights + self.bias
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(1, keepdims=True)
        return p[:, : self.n_routes].astype(np.float32)  # type: ignore[no-any-return]

    def save(self, path: str) -> None:
        np.savez(path, weights=self.weights, bias=self.bias, n_routes=np.array(self.n_routes))

    @classmethod
    def load(cls, path: str) -> LogisticHead:
        # our own handle: np.load leaks the one it opens when the file is not a valid zip
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            return cls(f["weights"], f["bias"], int(f["n_routes"]))


def fit_head(
    vectors: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], n_routes: int, *, l2: float = 1e-6
) -> LogisticHead:
    """labels: route index per row, or -1 for a negative utterance (the "none" class). ``l2``: the weight penalty
    (on the mean class-balanced log-loss)."""
    has_none = bool((labels < 0).any())
    k = n_routes + (1 if has_none else 0)
    if len(labels) * k > MAX_HEAD_CELLS:  # route files are checked at load; this guards other callers
        raise ConfigError(f"the logistic head would be fitted over {len(labels)} utterances x {k} classes "
                          f"(limit {MAX_HEAD_CELLS:,} cells)", hint="use 'scorer: knn' or fewer routes/utterances")
    y = np.where(labels < 0, n_routes, labels)
    x = vectors.astype(np.float32)
    n = x.shape[0]
    onehot = np.zeros((n, k), np.float32)
    onehot[np.arange(n), y] = 1
    # start from scaled class centroids: already a good nearest-centroid classifier
    counts = np.maximum(onehot.sum(0), 1)
    w = (_SCALE * (x.T @ onehot) / counts).astype(np.float32)
    b = np.zeros(k, np.float32)
    # balance classes so routes with many utterances do not dominate
    cw = (n / (k * counts)).astype(np.float32)[y][:, None]
    mw, vw, mb, vb = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    b1, b2 = 0.9, 0.999
    for step in range(1, _EPOCHS + 1):
        z = x @ w + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        # in place (same arithmetic as (p - onehot) * cw / n): each temporary would be another (n, k) matrix
        g = p
        g -= onehot
        g *= cw
        g /= n
        gw = x.T @ g + l2 * w
        gb = g.sum(0)
        mw = b1 * mw + (1 - b1) * gw
        vw = b2 * vw + (1 - b2) * gw * gw
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb * gb
        corr = np.sqrt(1 - b2**step) / (1 - b1**step)
        w -= _LR * corr * mw / (np.sqrt(vw) + 1e-8)
        b -= _LR * corr * mb / (np.sqrt(vb) + 1e-8)
    return LogisticHead(w.astype(np.float32), b.astype(np.float32), n_routes)
