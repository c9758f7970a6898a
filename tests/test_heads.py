"""The learned scorer's head (heads.py) on the deterministic fake encoder: what its L2 penalty does."""

from __future__ import annotations

import numpy as np

from semroute.heads import fit_head
from semroute.routes import Defaults
from semroute.testing import FakeEncoder

# three routes whose utterances share words, so a route is told apart by a few words each
ROUTES = {
    "refund": ["refund my order", "i want my money back for the order", "refund the charge on my card",
               "give me a refund for my card payment", "money back for this order please"],
    "card": ["my card was declined", "the card payment failed", "block my card it was stolen",
             "my card does not work for payment", "order a new card"],
    "order": ["where is my order", "track the order i placed", "my order has not arrived",
              "cancel the order i placed", "when does my order arrive"],
}


def _fit(l2: float) -> tuple[float, float]:
    """(mean weight norm, mean probability of the right route on the utterances) for a head fitted with ``l2``."""
    enc = FakeEncoder()
    names = sorted(ROUTES)
    texts = [u for n in names for u in ROUTES[n]]
    labels = np.array([i for i, n in enumerate(names) for _ in ROUTES[n]], dtype=np.int64)
    vectors = enc.encode(texts).vectors
    head = fit_head(vectors, labels, len(names), l2=l2)
    p = head.probabilities(vectors)
    assert (p.argmax(1) == labels).all()
    return float(np.linalg.norm(head.weights, axis=0).mean()), float(np.mean(p[np.arange(len(labels)), labels]))


def test_default_settings() -> None:
    # chosen by cross-validation on CLINC150 train (routes.Defaults says how)
    assert Defaults().head_l2 == 1e-6 and Defaults().head_weight == 0.5


def test_the_penalty_shrinks_weights_and_flattens_probabilities() -> None:
    fits = [_fit(l2) for l2 in (Defaults().head_l2, 1e-4, 1e-3, 1e-2)]
    norms, probs = [f[0] for f in fits], [f[1] for f in fits]
    assert norms == sorted(norms, reverse=True) and probs == sorted(probs, reverse=True)
    # the default keeps the head decisive; a strong penalty makes every route look alike
    assert probs[0] > 0.99 and probs[-1] < 0.8
