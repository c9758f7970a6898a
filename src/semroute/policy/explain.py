"""A decision's trace for a person to read (``semroute explain``)."""

from __future__ import annotations

from typing import Any


def render(text: str, d: dict[str, Any]) -> str:
    """``d`` is ``Decision.to_dict()``."""
    cost = d.get("estimated_cost")
    lines = [
        f"{text[:200]!r}{' ...' if len(text) > 200 else ''}",
        f"  model {d['model']}  route {d['route'] or '(fallback)'}  reason {d['reason']}"
        + (f"  rule {d['rule']}" if d.get("rule") else ""),
        f"  tier {d.get('tier') or '-'}  objective {d.get('objective') or '-'}  "
        f"estimated cost {cost:.6g}" if cost is not None else "  (no policy ran)",
        f"  PII kinds: {', '.join(d.get('pii_kinds') or []) or 'none'}   policy {d.get('policy_version') or '-'}",
        "  trace:",
    ]
    for i, step in enumerate(d.get("trace") or [], start=1):
        subject = f" {step['subject']}" if step["subject"] else ""
        detail = f": {step['detail']}" if step["detail"] else ""
        lines.append(f"   {i:2d}. [{step['stage']}] {step['kind']}{subject}{detail}")
    return "\n".join(lines)
