"""Suite 4: process start -> SERVING, and resident memory, for the bundled routes and 15,000 utterances."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from semroute.client import RouterClient

from ._common import REPO, Mode, build, clinc_routes_file, dir_size_mb
from .grpc_e2e import ServerProcess


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    sets = {"bundled": REPO / "routes"}
    if not mode.quick:
        sets["clinc15k"] = clinc_routes_file(workdir / "clinc_routes" / "routes.yaml").parent
    out: dict[str, Any] = {}
    for name, routes in sets.items():
        bundle = workdir / f"start-{name}"
        build_s = build(routes, bundle)
        rebuild_s = build(routes, bundle)  # nothing changed: no utterance is embedded again
        starts, rss = [], []
        for _ in range(mode.n(2, 5)):
            with ServerProcess(bundle) as s, RouterClient(s.target) as c:
                starts.append(s.started_s)
                for _ in range(50):
                    c.route("how do I get a refund for a double charge")
                rss.append(s.rss_mb())
        out[name] = {"build_index_s": build_s, "rebuild_unchanged_s": rebuild_s, "bundle_mb": dir_size_mb(bundle),
                     "start_to_serving_s": statistics.median(starts), "rss_mb": statistics.median(rss),
                     "runs": len(starts)}
    return out


def table(res: dict[str, Any]) -> str:
    lines = ["| route set | build-index s | rebuild (unchanged) s | bundle MB | start -> SERVING s | RSS MB |",
             "|---|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['build_index_s']:.1f} | {r['rebuild_unchanged_s']:.1f} | {r['bundle_mb']:.0f} | "
                     f"{r['start_to_serving_s']:.2f} | {r['rss_mb']:.0f} |")
    return "\n".join(lines)
