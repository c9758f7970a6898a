#!/usr/bin/env python3
"""Generate the Python gRPC stubs from proto/ into src/semroute/_proto/ (or --out DIR).

The stubs are committed so that installing semroute needs no grpcio-tools; tests/test_proto.py regenerates them
into a temporary directory and fails if the committed copy is stale. Run after editing the .proto:

    python scripts/gen_proto.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "proto"
PROTOS = ["semroute/v1/router.proto"]
PACKAGE = "semroute._proto"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # dev-time only

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        if protoc.main([*args, *PROTOS]) != 0:
            raise SystemExit("protoc failed")
        written = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            text = src.read_text()
            # protoc writes absolute imports from the proto root; make them point inside our package
            text = text.replace("from semroute.v1 import", f"from {PACKAGE}.semroute.v1 import")
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            written.append(dest)
    for d in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "src" / "semroute" / "_proto")
    ns = ap.parse_args()
    for p in generate(ns.out):
        print(p.relative_to(ns.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
