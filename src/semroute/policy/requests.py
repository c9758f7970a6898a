"""Checks of what a request may tell the policy: labels, and the options that tighten its tier.

Shared by the gRPC service and the CLI so both refuse the same things with the same field names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ..errors import RequestError
from .schema import Objective

MAX_LABELS = 16
MAX_LABEL_VALUE = 256
_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
OBJECTIVES: tuple[Objective, ...] = ("quality", "cheapest", "blend")


def check_labels(field: str, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise RequestError(field, f"has {len(labels)} labels; at most {MAX_LABELS}")
    for k, v in labels.items():
        if not _KEY.fullmatch(k):
            raise RequestError(f"{field}[{k[:70]!r}]", "label keys are 1-64 letters, digits, '_', '.', ':', '-'")
        if len(v) > MAX_LABEL_VALUE or not v.isprintable():
            raise RequestError(f"{field}[{k}]", f"label values are at most {MAX_LABEL_VALUE} printable characters")


def check_policy_options(prefix: str, max_cost: float | None, quality_floor: float | None,
                         objective: str | None) -> None:
    if max_cost is not None and (not math.isfinite(max_cost) or max_cost < 0):
        raise RequestError(f"{prefix}.max_cost", "must be a finite number >= 0 (the most one request may cost)")
    if quality_floor is not None and not 0.0 <= quality_floor <= 1.0:
        raise RequestError(f"{prefix}.quality_floor", "must be between 0 and 1")
    if objective is not None and objective not in OBJECTIVES:
        raise RequestError(f"{prefix}.objective", f"unknown objective '{objective[:40]}'; use one of: "
                                                  f"{', '.join(OBJECTIVES)}")


def parse_label(text: str) -> tuple[str, str]:
    """``k=v`` from the command line."""
    key, sep, value = text.partition("=")
    if not sep:
        raise RequestError("--label", f"'{text}' is not KEY=VALUE")
    return key, value
