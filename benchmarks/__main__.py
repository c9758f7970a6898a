"""python -m benchmarks [--quick|--full] [--suites encoder,grpc,index,startup,peer] [--out DIR]

Writes DIR/<mode>.json (summaries + machine facts) and DIR/<mode>.md (tables).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import encoder, grpc_e2e, index_scale, peer, startup
from ._common import REPO, Mode, machine

SUITES = {
    "encoder": ("Encoder (ms per call, interleaved in one process)", encoder),
    "grpc": ("End to end over gRPC (127.0.0.1)", grpc_e2e),
    "index": ("Index scale (synthetic unit vectors, 384-d, one thread)", index_scale),
    "startup": ("Start-up and footprint", startup),
    "peer": ("Side by side with aurelio semantic-router (batch 1, one thread)", peer),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes (the default)")
    g.add_argument("--full", action="store_true", help="every size and level")
    ap.add_argument("--suites", default=",".join(SUITES), help="comma-separated: " + ",".join(SUITES))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ns = ap.parse_args(argv)
    mode = Mode(quick=not ns.full)
    names = [s.strip() for s in ns.suites.split(",") if s.strip()]
    unknown = set(names) - set(SUITES)
    if unknown:
        ap.error(f"unknown suites: {', '.join(sorted(unknown))}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    label = "quick" if mode.quick else "full"
    result: dict[str, Any] = {"mode": label, "machine": machine(), "suites": {}}
    md = [f"# semroute benchmarks ({label})", "", f"{result['machine']['date']}, {result['machine']['cpu']}, "
          f"{result['machine']['cores']} cores, Python {result['machine']['python']}, "
          f"load average at start {result['machine']['loadavg_at_start']}", ""]
    with tempfile.TemporaryDirectory(prefix="semroute-bench-") as tmp:
        for name in names:
            title, mod = SUITES[name]
            t = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            res = mod.run(mode) if name in ("encoder", "index") else mod.run(mode, Path(tmp))
            result["suites"][name] = res
            result.setdefault("elapsed_s", {})[name] = round(time.perf_counter() - t, 1)
            md += [f"## {title}", "", mod.table(res), ""]
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / f"{label}.json").write_text(json.dumps(result, indent=1) + "\n")
    (ns.out / f"{label}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
