"""What every section of a route file shares: the strict pydantic base, the name pattern, and ints read as floats.

One definition, so ``routes``, ``policy.schema`` and ``policy.compile`` cannot drift apart on what a name may be.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

# Names of routes, models, tiers, rules and model attribute values.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
NAME_HINT = "use 1-64 characters: lowercase letters, digits, '_', '-', '.', starting with a letter or digit"


class Strict(BaseModel):
    """Unknown keys are refused, types are not coerced, and a loaded section cannot be changed."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def int_is_float(v: Any) -> Any:
    """A ``mode="before"`` field validator: strict mode refuses ints for floats, but ``cost: 0`` is a perfectly
    good price and ``quality: 1`` a perfectly good number."""
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v
