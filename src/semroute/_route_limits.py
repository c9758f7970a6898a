"""The stated limits of a route set, checked at load so 'validate' refuses what 'build-index' could not build.

The limits and why each is where it is are in docs/operations.md ("Limits").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .routes import Defaults, Route

# Routes: Info lists every route and scoring keeps per-route arrays; 1,000 is ~7x CLINC150's 150 intents.
MAX_ROUTES = 1_000
# Examples per route (positive + negative): past a few hundred a route gains little, and the index and the head
# fit grow with every example.
MAX_UTTERANCES_PER_ROUTE = 10_000
# All vectors in one bundle: the largest index size benchmarked (benchmarks/index_scale.py).
MAX_VECTORS = 1_000_000
# One example's length: the encoder reads at most 256 tokens (~1,000 characters of English), so the rest of a
# longer example would never be embedded.
MAX_UTTERANCE_CHARS = 2_000
# The learned head's fit holds a few (vectors x classes) float32 matrices and runs 300 full passes over them:
# 20M cells is ~250 MB and minutes of fitting (CLINC150 is 2.3M). 20,000 routes would ask for 3+ GiB per matrix.
MAX_HEAD_CELLS = 20_000_000


def check_route_count(n_route: int, file: Path, line: int | None, field: str) -> None:
    """Called with each route's 0-based position across all files: the one past the limit is refused."""
    if n_route == MAX_ROUTES:
        raise ConfigError(
            f"more than {MAX_ROUTES} routes (the stated limit)", file=file, line=line, field=field,
            hint="merge related routes; see 'Limits' in docs/operations.md",
        )


def check_route_examples(name: str, n_examples: int, file: Path, line: int | None, field: str) -> None:
    if n_examples > MAX_UTTERANCES_PER_ROUTE:
        raise ConfigError(
            f"route '{name}' has {n_examples} utterances and negative utterances; the limit is "
            f"{MAX_UTTERANCES_PER_ROUTE}", file=file, line=line, field=field,
            hint="keep the most representative examples",
        )


def check_length(text: str, file: Path, line: int | None, field: str) -> None:
    if len(text) > MAX_UTTERANCE_CHARS:
        raise ConfigError(
            f"utterance is {len(text)} characters; the limit is {MAX_UTTERANCE_CHARS}", file=file, line=line,
            field=field, hint="the encoder reads only the first 256 tokens; keep examples to what a user types",
        )


def check_totals(
    routes: Sequence[Route], fallback_examples: Sequence[str], defaults: Defaults, first: Path,
    defaults_at: Path | None,
) -> None:
    """The whole set: vectors in one bundle, and the size of the logistic head's fit."""
    n = sum(len(r.utterances) + len(r.negative_utterances) for r in routes) + len(fallback_examples)
    if n > MAX_VECTORS:
        raise ConfigError(f"{n} utterances in all; the limit is {MAX_VECTORS}", file=first, field="routes",
                          hint="split the routes into several bundles, or keep fewer examples per route")
    if defaults.scorer == "logistic":
        has_none = bool(fallback_examples) or any(r.negative_utterances for r in routes)
        cells = head_cells(n, len(routes), has_none)
        if cells > MAX_HEAD_CELLS:
            raise ConfigError(
                f"the logistic head would be fitted over {n} utterances x {len(routes) + has_none} classes "
                f"= {cells:,} cells (limit {MAX_HEAD_CELLS:,}: about 250 MB and minutes of fitting)",
                file=defaults_at or first, field="defaults.scorer",
                hint="set 'defaults: {scorer: knn}', or use fewer routes or utterances",
            )


def head_cells(n_vectors: int, n_routes: int, has_none: bool) -> int:
    """The size of each (vectors x classes) matrix the logistic head's fit holds."""
    return n_vectors * (n_routes + (1 if has_none else 0))
