"""Small, deterministic numpy fits used by the quality predictor: L2-regularised logistic regression (Newton's
method; the problems here have a few hundred features, so the exact Hessian is cheap) with soft targets in
[0, 1], and Platt scaling (the same fit on one or two features)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
_EPS = 1e-6


# minimum/maximum rather than np.clip: the same values without clip's dispatch overhead, a few microseconds a
# call that the serving path (two or three calls per query) notices
def sigmoid(z: F64) -> F64:
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(z, -40.0), 40.0)))


def logit(p: F64) -> F64:
    q = np.minimum(np.maximum(p, _EPS), 1 - _EPS)
    return np.log(q / (1 - q))  # type: ignore[no-any-return]


class LogisticFitter:
    """Fits many L2-regularised logistic regressions on one design matrix (several models' outcomes, several
    penalties) by bound optimisation: the log-loss Hessian is bounded by X'X/4, so one factorisation per penalty
    serves every target and every iteration, and an iteration costs two matrix-vector products (the exact Newton
    step would rebuild a (d x d) Hessian from all n rows each time: ~30x slower here, measured on 13k x 387).

    Minimises mean log-loss + l2/2 * |w|^2 (the bias, last weight, is not penalised). Targets may be soft (any
    value in [0, 1]: a grade rather than correct/incorrect)."""

    def __init__(self, x: F64) -> None:
        self.n = len(x)
        self.a = np.c_[x, np.ones(self.n)]
        self.gram = self.a.T @ self.a / self.n
        self._chol: dict[float, F64] = {}

    def _factor(self, l2: float) -> F64:
        if l2 not in self._chol:
            reg = np.full(self.gram.shape[0], l2)
            reg[-1] = 1e-6
            # the inverse, once: every step is then one matrix-vector product (numpy has no triangular solver,
            # and scipy is not a dependency)
            self._chol[l2] = np.linalg.inv(self.gram / 4 + np.diag(reg))
        return self._chol[l2]

    def fit(self, y: F64, *, l2: float, iterations: int = 200, tol: float = 1e-5) -> F64:
        inv = self._factor(l2)
        reg = np.full(self.a.shape[1], l2)
        reg[-1] = 0.0
        w = np.zeros(self.a.shape[1])
        mean = float(np.clip(y.mean(), _EPS, 1 - _EPS))
        w[-1] = np.log(mean / (1 - mean))
        for _ in range(iterations):
            grad = self.a.T @ (sigmoid(self.a @ w) - y) / self.n + reg * w
            step = inv @ grad
            w -= step
            if float(np.abs(step).max()) < tol:
                break
        return w


def fit_logistic(x: F64, y: F64, *, l2: float) -> F64:
    """Weights (features + 1 bias, last) of one L2-regularised logistic regression (see LogisticFitter)."""
    return LogisticFitter(x).fit(y, l2=l2)


def predict_logistic(w: F64, x: F64) -> F64:
    return sigmoid(x @ w[:-1] + w[-1])
