"""Choosing a model by predicted quality: the two objectives a quality predictor feeds.

- ``cheapest_meeting(target)``: the cheapest candidate whose predicted quality reaches the target; if none
  does, the one with the highest predicted quality (a request asking for more than any model can give gets the
  best there is, not an error).
- ``best_within(ceiling)``: the highest predicted quality among candidates costing at most the ceiling; if none
  is that cheap, the cheapest.

Ties break by the candidates' order (the route's or the caller's), so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    model: str
    predicted_quality: float
    met: bool  # the target was reached (cheapest_meeting) or the ceiling respected (best_within)


def cheapest_meeting(
    candidates: Sequence[str], quality: Mapping[str, float], cost: Mapping[str, float], target: float
) -> Choice:
    if not candidates:
        raise ValueError("no candidates")
    meeting = [m for m in candidates if quality[m] >= target]
    if meeting:
        m = min(meeting, key=lambda c: (cost[c], candidates.index(c)))
        return Choice(m, quality[m], True)
    m = max(candidates, key=lambda c: (quality[c], -candidates.index(c)))
    return Choice(m, quality[m], False)


def best_within(
    candidates: Sequence[str], quality: Mapping[str, float], cost: Mapping[str, float], ceiling: float
) -> Choice:
    if not candidates:
        raise ValueError("no candidates")
    within = [m for m in candidates if cost[m] <= ceiling]
    if within:
        m = max(within, key=lambda c: (quality[c], -candidates.index(c)))
        return Choice(m, quality[m], True)
    m = min(candidates, key=lambda c: (cost[c], candidates.index(c)))
    return Choice(m, quality[m], False)
