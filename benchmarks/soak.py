"""Soak: mixed bad requests and bundle reloads under load against a real ``semroute serve`` process.

    python -m benchmarks.soak [--bad 100000] [--reloads 50] [--max-seconds 3600] [--out benchmarks/results]

Sends ``--bad`` malformed requests (random bytes, invalid UTF-8, contentless or oversized text, bad metadata and
options, empty and oversized batches) while good requests run alongside and ``--reloads`` reload events happen
(a new version swapped in, SIGHUP, a corrupted manifest, its repair), then stops the server with SIGTERM.
Pass criteria (the "pass" field): no INTERNAL or UNKNOWN answer, no failed good request, the server's RSS at the
end within 1.2x its RSS after the first 10,000 bad requests, every reload event seen by the server, exit code 0.
Writes DIR/soak.json and DIR/soak.md. Also a suite of ``python -m benchmarks`` (quick: 20,000 bad, 10 reloads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from semroute._proto.semroute.v1 import router_pb2 as pb

from ._common import REPO, Mode, build, machine, write_results

GOOD = [("my card was charged twice this month", "billing"), ("write a python function that parses a CSV file",
        "coding"), ("translate good night into French", "translation")]
RSS_STEP = 10_000
MAX_TEXT = 2_000  # the server's --max-text-chars here, so "too long" texts stay cheap to send


def _bad_requests(rng: random.Random) -> list[tuple[str, str, Callable[[], bytes]]]:
    """(category, method, payload maker)."""
    def q(text: str, **md: str) -> pb.Query:
        return pb.Query(text=text, metadata=pb.RequestMetadata(**md))

    def route(text: str, **kw: Any) -> Callable[[], bytes]:
        return lambda: pb.RouteRequest(text=text, **kw).SerializeToString()

    return [
        ("random_bytes", "Route", lambda: rng.randbytes(rng.randrange(1, 300))),
        ("random_bytes", "RouteBatch", lambda: rng.randbytes(rng.randrange(1, 300))),
        ("random_bytes", "Info", lambda: rng.randbytes(rng.randrange(1, 50))),
        ("invalid_utf8", "Route", lambda: b"\x0a\x06ab\xff\xfe\xc3(" + rng.randbytes(4)),
        ("invalid_utf8", "RouteBatch", lambda: b"\x0a\x06\x0a\x04a\xff\xfeb"),
        ("empty_text", "Route", route("")),
        ("whitespace", "Route", route(" \t\n  ")),
        ("contentless", "Route", route("\u200b\u200d\ufeff")),
        ("contentless", "Route", route("\x00\x01\x02")),
        ("too_long", "Route", route("x" * (MAX_TEXT + 1))),
        ("bad_tenant", "Route", route("hello", metadata=pb.RequestMetadata(tenant="acme\n"))),
        ("bad_request_id", "Route", route("hello", metadata=pb.RequestMetadata(request_id="a\nb"))),
        ("bad_options", "Route", route("hello", options=pb.RouteOptions(top_scores=1000))),
        ("empty_batch", "RouteBatch", lambda: pb.RouteBatchRequest().SerializeToString()),
        ("batch_too_big", "RouteBatch", lambda: pb.RouteBatchRequest(queries=[q("hi")] * 257).SerializeToString()),
        ("batch_contentless", "RouteBatch",
         lambda: pb.RouteBatchRequest(queries=[q("hello"), q("\u2060")]).SerializeToString()),
        ("wrong_message", "Route", lambda: pb.InfoResponse(index_version="x" * 40).SerializeToString()),
    ]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("semroute_reloads_total{"):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _swap(live: Path, staged: Path) -> None:
    old = live.with_name(live.name + ".old")
    live.rename(old)
    staged.rename(live)
    shutil.rmtree(old)


class _Reloader:
    """Reload events in turn: a new version swapped in (watcher), SIGHUP, a corrupted manifest (refused), its
    repair (watcher). Each waits until the server's reload counters show it."""

    KINDS = ("new_version", "sighup", "corrupt_manifest", "repair")

    def __init__(self, live: Path, proc: subprocess.Popen[bytes], mport: int) -> None:
        self.live, self.proc, self.mport = live, proc, mport
        self.done: list[dict[str, Any]] = []
        self.busy = False  # an event is under way (the server may hold two bundles for a moment)
        self._n = 0

    def event(self) -> None:
        self.busy = True
        try:
            self._event()
        finally:
            self.busy = False

    def _event(self) -> None:
        kind = self.KINDS[len(self.done) % len(self.KINDS)]
        before = _metrics(self.mport)
        t = time.perf_counter()
        manifest = self.live / "manifest.json"
        if kind == "new_version":
            self._n += 1
            staged = self.live.with_name("staged")
            shutil.copytree(self.live, staged, copy_function=os.link)
            doc = json.loads(manifest.read_text())
            doc["version"] = f"soak-{self._n}"
            (staged / "manifest.json").unlink()
            (staged / "manifest.json").write_text(json.dumps(doc, indent=2))
            _swap(self.live, staged)
        elif kind == "sighup":
            self.proc.send_signal(signal.SIGHUP)
        elif kind == "corrupt_manifest":
            self._good = manifest.read_bytes()
            tmp = manifest.with_name("m.tmp")
            tmp.write_bytes(bytes([self._good[0] ^ 0xFF]) + self._good[1:])
            tmp.replace(manifest)
        else:  # the repair: a good manifest again, as a new version (the old one would not need a reload)
            self._n += 1
            doc = json.loads(self._good)
            doc["version"] = f"soak-{self._n}"
            tmp = manifest.with_name("m.tmp")
            tmp.write_text(json.dumps(doc, indent=2))
            tmp.replace(manifest)
        want = "refused" if kind == "corrupt_manifest" else "ok"
        seen = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _metrics(self.mport).get(want, 0) > before.get(want, 0):
                seen = True
                break
            time.sleep(0.2)
        self.done.append({"kind": kind, "seen": seen, "s": round(time.perf_counter() - t, 2)})


async def _soak(target: str, n_bad: int, reloader: _Reloader, n_reloads: int, pid: int, max_s: float,
                seed: int = 16) -> dict[str, Any]:
    rng = random.Random(seed)
    kinds = _bad_requests(rng)
    codes: dict[str, Counter[str]] = {}
    good = {"sent": 0, "failed": 0, "errors": Counter[str]()}
    rss = [{"bad_requests": 0, "rss_mb": round(_rss_mb(pid), 1), "reloading": False}]
    sent = answered = 0
    stop = asyncio.Event()
    deadline = time.monotonic() + max_s
    async with grpc.aio.insecure_channel(target) as ch:
        calls = {m: ch.unary_unary(f"/semroute.v1.Router/{m}") for m in ("Route", "RouteBatch", "Info")}
        route = ch.unary_unary("/semroute.v1.Router/Route", request_serializer=pb.RouteRequest.SerializeToString,
                               response_deserializer=pb.RouteResponse.FromString)

        async def bad_worker() -> None:
            nonlocal sent, answered
            while sent < n_bad and time.monotonic() < deadline:
                i = sent
                sent += 1
                category, method, make = kinds[i % len(kinds)]
                try:
                    await calls[method](make(), timeout=60)
                    code = "OK"
                except grpc.aio.AioRpcError as e:
                    code = e.code().name
                codes.setdefault(f"{method}:{category}", Counter())[code] += 1
                answered += 1
                if answered % RSS_STEP == 0:
                    rss.append({"bad_requests": answered, "rss_mb": round(_rss_mb(pid), 1),
                                "reloading": reloader.busy})
            stop.set()

        async def good_worker() -> None:
            i = 0
            while not stop.is_set():
                text, want = GOOD[i % len(GOOD)]
                i += 1
                good["sent"] += 1
                try:
                    resp = await route(pb.RouteRequest(text=text), timeout=60)
                    if resp.decision.route != want:
                        good["failed"] += 1
                        good["errors"][f"route {resp.decision.route} for {want}"] += 1
                except grpc.aio.AioRpcError as e:
                    good["failed"] += 1
                    good["errors"][e.code().name] += 1
                await asyncio.sleep(0.005)

        async def reload_worker() -> None:
            for j in range(n_reloads):  # spread over the run by bad-request progress
                while sent < (j + 1) * n_bad / (n_reloads + 1) and not stop.is_set():
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(reloader.event)

        t = time.perf_counter()
        await asyncio.gather(*[bad_worker() for _ in range(8)], *[good_worker() for _ in range(2)],
                             reload_worker())
        elapsed = time.perf_counter() - t
    await asyncio.sleep(1.0)  # the last reload's old bundle released
    rss.append({"bad_requests": answered, "rss_mb": round(_rss_mb(pid), 1), "reloading": False, "end": True})
    return {"bad_sent": sent, "codes": {k: dict(v) for k, v in sorted(codes.items())}, "rss": rss,
            "good": {**good, "errors": dict(good["errors"])}, "elapsed_s": round(elapsed, 1),
            "bad_rps": round(sent / elapsed, 1), "timed_out": sent < n_bad}


def soak(n_bad: int, n_reloads: int, workdir: Path, max_s: float = 3600) -> dict[str, Any]:
    bundle = workdir / "soak-bundle"
    build(REPO / "routes", bundle)
    live = workdir / "live"
    shutil.copytree(bundle, live)
    mport = _free_port()
    log_path = workdir / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "semroute.cli", "--log-format", "json", "serve", "--index", str(live), "--port",
             "0", "--metrics-port", str(mport), "--watch-interval", "0.5", "--max-text-chars", str(MAX_TEXT)],
            stderr=log, stdout=subprocess.DEVNULL,
        )
    port = None
    t0 = time.monotonic()
    while port is None and time.monotonic() - t0 < 300 and proc.poll() is None:
        m = re.search(r"on 127\.0\.0\.1:(\d+)", log_path.read_text())
        port = int(m.group(1)) if m else None
        time.sleep(0.2)
    if port is None:
        proc.kill()
        raise RuntimeError(f"server did not start: {log_path.read_text()[-2000:]}")
    reloader = _Reloader(live, proc, mport)
    try:
        res = asyncio.run(_soak(f"127.0.0.1:{port}", n_bad, reloader, n_reloads, proc.pid, max_s))
        reloads = _metrics(mport)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            exit_code = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = proc.wait(30)
    lines = log_path.read_text().splitlines()
    events = Counter()
    for line in lines:
        try:
            events[json.loads(line).get("event", "(none)")] += 1
        except ValueError:
            events["(not json)"] += 1
    codes_total: Counter[str] = Counter()
    for c in res["codes"].values():
        codes_total.update(c)
    rss = res["rss"]
    after_10k = next((r["rss_mb"] for r in rss if r["bad_requests"] >= RSS_STEP), None)
    ratio = rss[-1]["rss_mb"] / after_10k if after_10k else None
    seen = sum(e["seen"] for e in reloader.done)
    ok = (codes_total["INTERNAL"] == 0 and codes_total["UNKNOWN"] == 0 and res["good"]["failed"] == 0
          and ratio is not None and ratio <= 1.2 and seen == n_reloads and exit_code == 0 and not res["timed_out"])
    return {
        **res, "codes_total": dict(codes_total), "reload_events": reloader.done, "reloads_seen": seen,
        "reloads_requested": n_reloads, "server_reload_counters": reloads, "rss_end_over_10k": ratio,
        "exit_code": exit_code, "log_lines": len(lines), "log_events": dict(events),
        "tracebacks_in_log": sum("Traceback" in line for line in lines), "pass": ok,
    }


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    return soak(mode.n(20_000, 100_000), mode.n(10, 50), workdir)


def table(res: dict[str, Any]) -> str:
    t = res["codes_total"]
    lines = [
        f"{res['bad_sent']:,} bad requests in {res['elapsed_s']:.0f} s ({res['bad_rps']:.0f}/s) with "
        f"{res['good']['sent']:,} good requests alongside ({res['good']['failed']} failed) and "
        f"{res['reloads_seen']}/{res['reloads_requested']} reload events seen; server exit code {res['exit_code']}; "
        f"{res['log_lines']} log lines, {res['tracebacks_in_log']} tracebacks. Pass: {res['pass']}.", "",
        "| status | count |", "|---|---|", *[f"| {k} | {v:,} |" for k, v in sorted(t.items())], "",
        "| bad requests sent | server RSS MB |", "|---|---|",
        *[f"| {r['bad_requests']:,}{' (end, all reloads done)' if r.get('end') else ''} | {r['rss_mb']:.0f}"
          f"{' (a reload under way)' if r.get('reloading') else ''} |" for r in res["rss"]], "",
        f"RSS at the end / after the first {RSS_STEP:,}: "
        + (f"{res['rss_end_over_10k']:.3f}" if res["rss_end_over_10k"] else "n/a") + " (limit 1.2)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bad", type=int, default=100_000)
    ap.add_argument("--reloads", type=int, default=50)
    ap.add_argument("--max-seconds", type=float, default=3600, help="stop sending bad requests after this long")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ns = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="semroute-soak-") as tmp:
        res = soak(ns.bad, ns.reloads, Path(tmp), ns.max_seconds)
    res["machine"] = machine()
    res["ran"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg(),
                  "command": " ".join(["python -m benchmarks.soak", *(argv if argv is not None else sys.argv[1:])])}
    write_results(ns.out, "soak", res, lambda: f"# semroute soak\n\n_Ran {res['ran']['date']}, load average "
                  f"{res['ran']['loadavg'][0]:.2f}; command: `{res['ran']['command']}`._\n\n{table(res)}\n")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
