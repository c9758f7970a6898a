"""Labelled data for eval and calibrate: JSONL, one ``{"text": "...", "route": "billing"}`` per line, with
``"route": null`` for a query that should go to the fallback model (out of scope). A line may carry the request
metadata the policy reads: ``"metadata": {"tenant": "acme", "user_tier": "free", "labels": {"k": "v"}}``.

    >>> examples = load_labelled("val.jsonl", known_routes={"billing", "coding"})
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._jsonl import read_jsonl
from .errors import DataError


@dataclass(frozen=True)
class Example:
    text: str
    route: str | None  # None: should fall back
    metadata: dict[str, Any] | None = None  # tenant, user_tier, labels (what a request's metadata carries)


@dataclass(frozen=True)
class Labelled:
    path: Path
    examples: list[Example]
    sha256: str


def load_labelled(path: str | Path, *, known_routes: Collection[str] | None = None) -> Labelled:
    path = Path(path)
    read = read_jsonl(path, like='{"text": ..., "route": ...}', utf8="replace")
    examples = []
    for line in read.lines:
        where, obj = line.where, line.obj
        extra = set(obj) - {"text", "route", "metadata"}
        if extra:
            raise DataError(f"{where}: unknown key(s) {sorted(extra)}; only 'text', 'route' and 'metadata' are "
                            "allowed")
        md = obj.get("metadata")
        if md is not None:
            _check_metadata(where, md)
        text, route = obj.get("text"), obj.get("route", ...)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: 'text' must be a non-empty string")
        if route is ...:
            raise DataError(f"{where}: 'route' is missing; use null for out-of-scope queries")
        if route is not None and not isinstance(route, str):
            raise DataError(f"{where}: 'route' must be a route name or null, got {type(route).__name__}")
        if route is not None and known_routes is not None and route not in known_routes:
            raise DataError(f"{where}: route '{route}' is not in the bundle; known routes: "
                            f"{', '.join(sorted(known_routes)[:10])}{', ...' if len(known_routes) > 10 else ''}")
        examples.append(Example(text, route, md))
    if not examples:
        raise DataError(f"{path}: no examples (expected JSON lines)")
    return Labelled(path, examples, read.sha256)


def _check_metadata(where: str, md: Any) -> None:
    if not isinstance(md, dict):
        raise DataError(f"{where}: 'metadata' must be an object like {{\"user_tier\": \"free\"}}")
    unknown = set(md) - {"tenant", "user_tier", "labels"}
    if unknown:
        raise DataError(f"{where}: unknown metadata key(s) {sorted(unknown)}; use tenant, user_tier, labels")
    for k in ("tenant", "user_tier"):
        if k in md and not isinstance(md[k], str):
            raise DataError(f"{where}: metadata.{k} must be a string")
    labels = md.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise DataError(f"{where}: metadata.labels must map strings to strings")
