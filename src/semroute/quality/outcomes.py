"""Outcome data: how well each model answered each prompt. JSON lines, one prompt per line:

    {"text": "What is 2+2?", "outcomes": {"small-chat": 1.0, "frontier": 1.0}}
    {"text": "Prove ...", "outcomes": {"small-chat": 0.0, "frontier": 1.0}, "route": "math",
     "metadata": {"dataset": "gsm8k"}}

A score is in [0, 1]: correctness, a judge's grade, a preference. ``true``/``false`` are read as 1 and 0.

- A model missing from a line is *unknown* for that prompt, not wrong: it is left out of that model's estimates
  (its kNN average and its learned head), and the line still teaches the models it does name. A line must name
  at least one model.
- The same text twice (after stripping surrounding whitespace) with the same outcomes is kept once; with
  different outcomes it is an error naming both lines (average them yourself if both are right).
- ``route`` (a route name or null) and ``metadata`` (an object of strings) are kept for reports and splits.

Every problem is ``file:line: what is wrong (how to fix)``, a DataError (exit code 2).

    >>> data = load_outcomes("outcomes.jsonl", known_models={"small-chat", "frontier"})
    >>> data.models, data.scores.shape
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._jsonl import read_jsonl
from ..errors import DataError

_KEYS = {"text", "outcomes", "route", "metadata"}


@dataclass(frozen=True)
class OutcomeSet:
    """Prompts and their per-model scores. ``scores[i, j]`` is model ``models[j]``'s score on ``texts[i]``; NaN
    where the line did not name that model."""

    path: Path
    texts: list[str]
    models: list[str]
    scores: npt.NDArray[np.float64]
    routes: list[str | None]
    metadata: list[dict[str, str]]
    lines: list[int]  # the source line of each prompt
    sha256: str
    duplicates: int = 0  # repeated lines with identical outcomes, dropped
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def column(self, model: str) -> npt.NDArray[np.float64]:
        return self.scores[:, self.models.index(model)]


def _score(value: Any, where: str, model: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"{where}: outcomes.{model}: score must be a number in [0, 1] (or true/false), got "
                        f"{json.dumps(value)}")
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: outcomes.{model}: score {value} is outside [0, 1]; rescale grades to [0, 1]")
    return float(value)


def load_outcomes(path: str | Path, *, known_models: Collection[str] | None = None) -> OutcomeSet:
    """Read and check an outcome file. ``known_models``: the models the bundle declares; any other name is an
    error (a typo would silently train a model nobody routes to)."""
    path = Path(path)
    # lines end at "\n" only: a prompt may hold U+2028 raw (see semroute._jsonl)
    read = read_jsonl(path, like='{"text": ..., "outcomes": {"model": 1.0}}')
    known = set(known_models) if known_models is not None else None
    texts: list[str] = []
    rows: list[dict[str, float]] = []
    routes: list[str | None] = []
    metas: list[dict[str, str]] = []
    line_of: list[int] = []
    seen: dict[str, int] = {}  # stripped text -> index into texts
    duplicates = 0
    for line in read.lines:
        n, where, obj = line.number, line.where, line.obj
        extra = set(obj) - _KEYS
        if extra:
            raise DataError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(_KEYS))}")
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: text: must be a non-empty string")
        outcomes = obj.get("outcomes")
        if not isinstance(outcomes, dict) or not outcomes:
            raise DataError(f'{where}: outcomes: must be a non-empty object of model scores, e.g. '
                            f'{{"small-chat": 1.0, "frontier": 0.0}}')
        row = {}
        for model, value in outcomes.items():
            if known is not None and model not in known:
                names = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
                raise DataError(f"{where}: outcomes: unknown model '{model}'; the bundle declares: {names} "
                                "(declare it under 'models:' in a route file, or fix the name)")
            row[model] = _score(value, where, model)
        route = obj.get("route")
        if route is not None and not isinstance(route, str):
            raise DataError(f"{where}: route: must be a route name or null, got {type(route).__name__}")
        meta = obj.get("metadata", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise DataError(f"{where}: metadata: must be an object of string values")
        key = text.strip()
        if key in seen:
            i = seen[key]
            if rows[i] != row:
                raise DataError(f"{where}: this text repeats line {line_of[i]} with different outcomes "
                                f"({json.dumps(rows[i])} there, {json.dumps(row)} here); keep one line "
                                "(or average the scores into one)")
            duplicates += 1
            continue
        seen[key] = len(texts)
        texts.append(text)
        rows.append(row)
        routes.append(route)
        metas.append(meta)
        line_of.append(n)
    if not texts:
        raise DataError(f"{path}: no outcome lines (expected JSON lines like "
                        f'{{"text": ..., "outcomes": {{"model": 1.0}}}})')
    models = sorted({m for r in rows for m in r})
    scores = np.full((len(texts), len(models)), np.nan)
    col = {m: j for j, m in enumerate(models)}
    for i, r in enumerate(rows):
        for m, v in r.items():
            scores[i, col[m]] = v
    notes = []
    missing = int(np.isnan(scores).sum())
    if missing:
        notes.append(f"{missing} (prompt, model) outcomes are missing: each is left out of that model's estimate")
    return OutcomeSet(path, texts, models, scores, routes, metas, line_of, read.sha256,
                      duplicates, notes)
