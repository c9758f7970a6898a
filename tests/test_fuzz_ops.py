"""A bounded fuzz (the 100,000-request run is benchmarks/ops.py fuzz): random and mutated requests against a
real server with auth, rate limits and audit on get no INTERNAL/UNKNOWN, and the audit chain still verifies."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server_harness import InProcessServer

from benchmarks.ops import _keys, fuzz_target
from semroute.audit.verify import verify_logs
from semroute.ops import OpsConfig
from semroute.server import ServeConfig


def test_bounded_fuzz_with_auth_limits_and_audit(bundle_dir: Path, tmp_path: Path) -> None:
    keys, token, others = _keys(tmp_path, n_extra=3)
    log = tmp_path / "audit" / "audit.log"
    config = ServeConfig(index=bundle_dir, port=0, watch=False, max_text_chars=2000, ops=OpsConfig(
        keys_file=keys, rate_limit="100000/s", audit_log=log, audit_max_bytes=64 * 1024))
    with InProcessServer(config) as s:
        codes = asyncio.run(fuzz_target(s.target, 400, token, others, seed=7, concurrency=4))
    c = codes["messages"]
    assert c["INTERNAL"] == 0 and c["UNKNOWN"] == 0, c
    assert c["OK"] > 20 and c["UNAUTHENTICATED"] > 20 and c["INVALID_ARGUMENT"] > 0, c  # every path was reached
    files = [p for p in log.parent.iterdir() if not p.name.endswith(".key")]
    assert len(files) > 1  # rotated while fuzzed
    assert verify_logs(files).records > c["OK"]
