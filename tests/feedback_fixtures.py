"""A bundle of the bundled routes plus a ``feedback:`` section, for the runtime feedback tests."""

from __future__ import annotations

import shutil
from pathlib import Path

FEEDBACK_YAML = """\
version: 1
feedback:
  breaker: {failures: 5, window_s: 60, cooldown_s: 2, probes: 1}
  escalation: {threshold: 0.5}  # the ladder: every model by price
  budgets:
    default: {escalations_per_minute: 100, escalations_per_day: 3}
    tenants: {big: {escalations_per_minute: null, escalations_per_day: null}}
  cache: {enabled: true, size: 1000, ttl_s: 60}
  conversations: {ttl_s: 600}
  endpoints: {frontier-large: [us-east, eu-west]}
"""

CODING = "write a python function to reverse a linked list"
SMALLTALK = "hi there, how are you doing today?"
MATH = "what is the derivative of x^2 ln x"
SUMMARY = "summarize this article in three bullet points"
LEGAL = "can my landlord keep my deposit for normal wear and tear"


def build_feedback_bundle(routes: Path, encoder_dir: Path, out_root: Path) -> Path:
    from semroute.bundle import build_bundle
    from semroute.encoder import OnnxEncoder
    from semroute.routes import load_routes

    src = out_root / "routes"
    shutil.copytree(routes, src)
    (src / "zz_feedback.yaml").write_text(FEEDBACK_YAML)
    out = out_root / "bundle"
    build_bundle(load_routes([src]), OnnxEncoder(encoder_dir, threads=1), encoder_dir, out)
    return out
