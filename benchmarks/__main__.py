"""python -m benchmarks [--quick|--full] [--suites encoder,graph,...] [--index-sizes 1000000] [--out DIR]

Suites: encoder, graph, grpc, floor, index, startup, peer, soak, replicas, policy, pii, feedback, ops. soak, policy,
pii, feedback and ops are also scripts of their own (python -m benchmarks.soak, ...) writing their own result files.

Writes DIR/<mode>.json (summaries + machine facts) and DIR/<mode>.md (tables). Running a subset of suites keeps
the other suites' results already in DIR/<mode>.json (each suite records when it ran and the load average then),
so a long suite can be rerun alone without rerunning the rest.
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

from semroute._fs import atomic_write_bytes

from . import (
    encoder,
    feedback,
    graph,
    grpc_e2e,
    grpc_floor,
    index_scale,
    ops,
    peer,
    pii,
    policy,
    replicas,
    soak,
    startup,
)
from ._common import REPO, Mode, machine

SUITES = {
    "encoder": ("Encoder (ms per call, alternating blocks in one process)", encoder),
    "graph": ("Encoder graph: lean (from the weights) vs traced (batch 1, one thread, ms per call)", graph),
    "grpc": ("End to end over gRPC (127.0.0.1)", grpc_e2e),
    "floor": ("Where Route's time goes at concurrency 1: bare servers against semroute serve (127.0.0.1)", grpc_floor),
    "index": ("Index scale (synthetic unit vectors, 384-d, one thread)", index_scale),
    "startup": ("Start-up and footprint", startup),
    "peer": ("Side by side with aurelio semantic-router (batch 1, one thread)", peer),
    "soak": ("Soak: bad requests and reloads under load (python -m benchmarks.soak)", soak),
    "replicas": ("Three replicas behind Envoy (deploy/envoy/envoy.yaml, 127.0.0.1)", replicas),
    "policy": ("Policy overhead (python -m benchmarks.policy)", policy),
    "pii": ("PII detection: precision and recall per kind (python -m benchmarks.pii)", pii),
    "feedback": ("Runtime feedback: decision cache, ReportOutcome, Redis state (python -m benchmarks.feedback)",
                 feedback),
    "ops": ("Auth + rate limit + audit: overhead and fuzz (python -m benchmarks.ops)", ops),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes (the default)")
    g.add_argument("--full", action="store_true", help="every size and level")
    ap.add_argument("--suites", default=",".join(SUITES), help="comma-separated: " + ",".join(SUITES))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--index-sizes", default="", help="comma-separated vector counts: rerun only these sizes of the "
                    "index suite, keeping the previous run's rows for the others")
    ns = ap.parse_args(argv)
    try:
        index_sizes = tuple(int(s) for s in ns.index_sizes.split(",") if s.strip())
    except ValueError:
        ap.error(f"--index-sizes: '{ns.index_sizes}' is not a comma-separated list of vector counts")
    mode = Mode(quick=not ns.full, index_sizes=index_sizes)
    names = [s.strip() for s in ns.suites.split(",") if s.strip()]
    unknown = set(names) - set(SUITES)
    if unknown:
        ap.error(f"unknown suites: {', '.join(sorted(unknown))}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    label = "quick" if mode.quick else "full"
    path = ns.out / f"{label}.json"
    result: dict[str, Any] = {"mode": label, "machine": machine(), "suites": {}, "ran": {}}
    if path.is_file() and set(names) != set(SUITES):
        old = json.loads(path.read_text())
        for key in ("suites", "ran"):
            result[key] = {k: v for k, v in old.get(key, {}).items() if k in SUITES}
    with tempfile.TemporaryDirectory(prefix="semroute-bench-") as tmp:
        for name in names:
            _, mod = SUITES[name]
            t = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            res = mod.run(mode) if name in ("encoder", "index") else mod.run(mode, Path(tmp))
            if name == "index" and index_sizes:
                res = index_scale.merge(result["suites"].get("index"), res)
            result["ran"][name] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                   "loadavg": os.getloadavg(), "elapsed_s": round(time.perf_counter() - t, 1)}
            if name == "index" and index_sizes:
                result["ran"][name]["sizes"] = list(index_sizes)
            result["suites"][name] = res
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    ns.out.mkdir(parents=True, exist_ok=True)
    # the measurements first: a table that fails to render must not lose an hour of them
    atomic_write_bytes(path, (json.dumps(result, indent=1) + "\n").encode())
    m = result["machine"]
    md = [f"# semroute benchmarks ({label})", "", f"{m['cpu']}, {m['cores']} cores, Python {m['python']}; "
          f"command: `python -m benchmarks --{label}`", ""]
    for name, (title, mod) in SUITES.items():
        res = result["suites"].get(name)
        if res is None:
            continue
        ran = result["ran"].get(name)
        when = f"_Ran {ran['date']}, load average {ran['loadavg'][0]:.2f}._" if ran else ""
        if ran and ran.get("sizes"):
            when = when[:-2] + f" (sizes {', '.join(f'{n:,}' for n in ran['sizes'])}; the others from an earlier run)._"
        try:
            body = mod.table(res)
        except (KeyError, TypeError) as e:  # kept from an older run whose format this version no longer reads
            body = f"(results from an older format ({e!r}); rerun: python -m benchmarks --{label} --suites {name})"
        md += [f"## {title}", "", when, "", body, ""]
    atomic_write_bytes(ns.out / f"{label}.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
