"""The committed stubs are what the pinned grpcio-tools generates from proto/ (regenerate: scripts/gen_proto.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen_proto.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    committed = REPO / "src" / "semroute" / "_proto"
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.py*")}
    assert fresh, "generation produced nothing"
    for rel, text in fresh.items():
        assert (committed / rel).read_text() == text, f"{rel} is stale: run python scripts/gen_proto.py"


def test_enums_are_prefixed_with_unspecified_zero() -> None:
    from semroute._proto.semroute.v1 import router_pb2 as pb

    assert pb.Reason.Name(0) == "REASON_UNSPECIFIED"
    assert all(n.startswith("REASON_") for n in pb.Reason.keys())  # noqa: SIM118 (an enum wrapper, not a dict)
    assert pb.DESCRIPTOR.package == "semroute.v1"
