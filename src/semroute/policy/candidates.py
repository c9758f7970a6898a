"""The candidate models of a route and of the fallback, checked against the declared models (file:line errors).

A route names one ``model`` or an ordered list of ``candidates`` the policy chooses among; the fallback names its
``model`` and may list candidates too, its model first. ``routes.load_routes`` calls these once every file is read.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._yaml_lines import LineOf, field_path
from ..errors import ConfigError
from .types import Candidate

if TYPE_CHECKING:
    from ..routes import CandidateSpec, Fallback


def candidates_of(
    model: str | None, listed: Sequence[str | CandidateSpec] | None, models: Collection[str],
    file: Path, line_of: LineOf, base: list[str | int], what: str, *, both_ok: bool = False,
) -> tuple[Candidate, ...]:
    """A route's (or the fallback's) candidates, checked: declared models, no repeats, not empty.

    ``what`` names the owner in messages ("route 'billing'"); ``both_ok`` allows 'model' beside 'candidates'."""
    where = field_path(base)
    if model is not None and listed is not None and not both_ok:
        raise ConfigError(
            f"{what} gives both 'model' and 'candidates'", file=file, line=line_of([*base, "candidates"]),
            field=f"{where}.candidates", hint="give one model, or an ordered list of candidates, not both",
        )
    if model is None and listed is None:
        raise ConfigError(
            f"{what} names no model", file=file, line=line_of(base), field=f"{where}.model",
            hint="add 'model: NAME' or 'candidates: [NAME, ...]'",
        )
    if listed is not None and not listed:
        raise ConfigError(
            f"{what} has an empty candidate list", file=file, line=line_of([*base, "candidates"]),
            field=f"{where}.candidates", hint="list at least one model, or use 'model: NAME'",
        )
    items: list[tuple[Candidate, list[str | int]]] = (
        [(Candidate(c) if isinstance(c, str) else Candidate(c.model, c.quality), [*base, "candidates", j])
         for j, c in enumerate(listed)]
        if listed is not None else [(Candidate(model or ""), [*base, "model"])]
    )
    seen: set[str] = set()
    for cand, at in items:
        if cand.model not in models:
            raise ConfigError(
                f"{what} names model '{cand.model}', which is not declared", file=file, line=line_of(at),
                field=field_path(at), hint=f"declare it under 'models' or use one of: {', '.join(sorted(models))}",
            )
        if cand.model in seen:
            raise ConfigError(
                f"{what} lists model '{cand.model}' twice", file=file, line=line_of(at), field=field_path(at),
                hint="list each candidate once",
            )
        seen.add(cand.model)
    return tuple(c for c, _ in items)


def fallback_candidates(
    fallback: Fallback, models: Collection[str], file: Path, line_of: LineOf
) -> tuple[Candidate, ...]:
    """The fallback's candidates: its model alone, or its list, which must start with its model."""
    found = candidates_of(fallback.model, fallback.candidates, models, file, line_of, ["fallback"], "the fallback",
                          both_ok=True)
    if found[0].model != fallback.model:
        raise ConfigError(
            f"fallback model '{fallback.model}' is not the first of its candidates", file=file,
            line=line_of(["fallback", "candidates"]), field="fallback.candidates",
            hint="list the fallback model first; the candidates after it are its alternatives",
        )
    return found
