"""Operations benchmarks: the cost of auth + rate limit + audit on Route at concurrency 1, and a bounded fuzz.

    python -m benchmarks.ops overhead [--calls 2000]     # bare server vs auth+limit+audit, alternating blocks
    python -m benchmarks.ops fuzz [--requests 100000]    # random and mutated requests, auth+limit+audit on

Both write benchmarks/results/ops-<name>.json (measurements, written first) and ops-<name>.md (a table).
Both together are also the ``ops`` suite of ``python -m benchmarks``, on a bundle of the bundled routes built for
the run (--quick: 400 calls each and 2,000 fuzz requests; --full: 2,000 and 100,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from semroute._fs import atomic_write_bytes
from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc

from ._common import REPO, Mode, build, machine, summary
from .grpc_e2e import ServerProcess

RESULTS = REPO / "benchmarks" / "results"
TEXTS = ["my card was charged twice this month", "write a python function to reverse a list",
         "translate good night into French", "I have a fever and a sore throat", "what is the capital of Peru",
         "solve 2x + 3 = 11", "summarize this meeting transcript for me", "hello there!"]


_BUNDLE: list[Path] = [REPO / "bundle"]


def _bundle() -> Path:
    return _BUNDLE[0]


def _write(name: str, result: dict[str, Any], table: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(RESULTS / f"ops-{name}.json", (json.dumps(result, indent=1) + "\n").encode())
    atomic_write_bytes(RESULTS / f"ops-{name}.md", ("\n".join(table) + "\n").encode())
    print("\n".join(table))


def _keys(tmp: Path, n_extra: int = 0) -> tuple[Path, str, list[str]]:
    from semroute.ops.keys import add_key, revoke_key

    path = tmp / "keys.jsonl"
    token, _ = add_key(path, tenant="bench", tier="standard")
    others = []
    for i in range(n_extra):
        t, k = add_key(path, tenant=f"t{i}", tier="standard", rate="50/s" if i == 0 else None)
        if i == 1:
            revoke_key(path, k.id)
        others.append(t)
    return path, token, others


# --- overhead --------------------------------------------------------------------------------------------------

def overhead(calls: int, block: int = 100) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="semroute-ops-") as tmp_s:
        tmp = Path(tmp_s)
        keys, token, _ = _keys(tmp)
        bundle = _bundle()
        ops_args = ("--keys", str(keys), "--rate-limit", "100000/s", "--audit-log", str(tmp / "audit" / "audit.log"))
        with ServerProcess(bundle) as bare, ServerProcess(bundle, *ops_args) as ops:
            chans = {"bare": grpc.insecure_channel(bare.target), "ops": grpc.insecure_channel(ops.target)}
            stubs = {k: pb_grpc.RouterStub(c) for k, c in chans.items()}
            md = {"bare": (), "ops": (("authorization", f"Bearer {token}"),)}
            samples: dict[str, list[float]] = {"bare": [], "ops": []}
            reqs = [pb.RouteRequest(text=t, metadata=pb.RequestMetadata(request_id=f"r{i}"))
                    for i, t in enumerate(TEXTS)]
            for name in samples:  # warm both (connections, caches)
                for r in reqs * 5:
                    stubs[name].Route(r, timeout=10, metadata=md[name])
            i = 0
            while len(samples["ops"]) < calls:
                for name in ("bare", "ops") if (i // block) % 2 == 0 else ("ops", "bare"):
                    for j in range(block):
                        r = reqs[(i + j) % len(reqs)]
                        t = time.perf_counter()
                        stubs[name].Route(r, timeout=10, metadata=md[name])
                        samples[name].append(time.perf_counter() - t)
                i += block
            for c in chans.values():
                c.close()
        from semroute.audit.verify import verify_logs

        audited = verify_logs([tmp / "audit" / "audit.log"]).records
    s = {k: summary(v) for k, v in samples.items()}
    ratio = s["ops"]["median_ms"] / s["bare"]["median_ms"]
    return {"calls_each": calls, "block": block, "bare": s["bare"], "ops": s["ops"], "p50_ratio": ratio,
            "audit_records": audited, "loadavg": os.getloadavg(),
            "command": f"python -m benchmarks.ops overhead --calls {calls} --bundle BUNDLE"}


# --- fuzz ------------------------------------------------------------------------------------------------------

def _rand_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        t = rng.choice(TEXTS)
        pos = rng.randrange(len(t))
        return t[:pos] + rng.choice(["", "\x00", "\u202e", "🙂", "\ud7ff", " " * 5, "é", "\n"]) + t[pos:]
    if kind < 0.6:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF),
                                       rng.randrange(0xE000, 0x10FFFF), rng.randrange(0, 32)]))
                       for _ in range(rng.randrange(0, 60)))
    if kind < 0.7:
        return rng.choice(["", " ", "\t\n", "\x00"])
    if kind < 0.75:
        return "long " * rng.randrange(400, 700)  # past --max-text-chars 2000 half the time
    return " ".join(rng.choice(TEXTS).split()[: rng.randrange(1, 8)])


def _rand_label(rng: random.Random) -> str:
    x = rng.random()
    if x < 0.9:
        return ""
    if x < 0.95:
        return rng.choice(["bench", "standard", "acme", "gold"])
    return "".join(chr(rng.randrange(0, 0x2FF)) for _ in range(rng.randrange(0, 80)))


def _rand_md(rng: random.Random) -> pb.RequestMetadata:
    rid = "".join(chr(rng.randrange(0, 0x3FF)) for _ in range(rng.randrange(0, 140))) if rng.random() < 0.2 \
        else f"f{rng.randrange(10**9)}"
    return pb.RequestMetadata(tenant=_rand_label(rng), user_tier=_rand_label(rng), request_id=rid)


def _rand_options(rng: random.Random) -> pb.RouteOptions:
    o = pb.RouteOptions()
    if rng.random() < 0.5:
        o.top_scores = rng.choice([0, 1, 5, 100, 101, 2**32 - 1])
    if rng.random() < 0.5:
        o.top_neighbours = rng.choice([0, 3, 100, 101, 2**32 - 1])
    return o


def _auth(rng: random.Random, token: str, others: list[str]) -> tuple[tuple[str, str], ...]:
    x = rng.random()
    if x < 0.6:
        return (("authorization", f"Bearer {token}"),)
    if x < 0.7:
        return (("authorization", f"Bearer {rng.choice(others)}"),)  # rate-limited, revoked, other tenants
    if x < 0.8:
        return ()
    if x < 0.9:  # the right id, a mutated secret
        i = rng.randrange(len(token))
        return (("authorization", f"Bearer {token[:i]}{rng.choice('AZaz09-_')}{token[i + 1:]}"),)
    return (("authorization", rng.choice(["Bearer", "bearer  x", "Basic abc", f"Bearer {token} extra",
                                          "Bearer sr_" + "0" * 12 + "_" + "A" * 43])),)


def make_request(rng: random.Random, token: str, others: list[str]) -> tuple[str, Any, tuple[tuple[str, str], ...]]:
    kind = rng.random()
    auth = _auth(rng, token, others)
    if kind < 0.6:
        return "Route", pb.RouteRequest(text=_rand_text(rng), metadata=_rand_md(rng),
                                        options=_rand_options(rng)), auth
    if kind < 0.85:
        n = rng.choice([0, 1, 2, 3, 5, 8, 17, 257])
        qs = [pb.Query(text=_rand_text(rng) if n < 20 else "hi", metadata=_rand_md(rng)) for _ in range(n)]
        return "RouteBatch", pb.RouteBatchRequest(queries=qs, options=_rand_options(rng)), auth
    return "Info", pb.InfoRequest(), auth


async def fuzz_target(target: str, n: int, token: str, others: list[str], *, seed: int = 0,
                      concurrency: int = 8, raw_share: float = 0.0) -> dict[str, Counter[str]]:
    """Send ``n`` random requests (``raw_share`` of them as mutated raw bytes); count status codes by kind."""
    rng = random.Random(seed)
    codes: dict[str, Counter[str]] = {"messages": Counter(), "raw_bytes": Counter()}
    async with grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.RouterStub(ch)
        raw = ch.unary_unary("/semroute.v1.Router/Route", request_serializer=None, response_deserializer=None)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency * 4)

        async def worker() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                kind, call, req, md = item
                try:
                    await call(req, timeout=30, metadata=md)
                    codes[kind]["OK"] += 1
                except grpc.aio.AioRpcError as e:
                    codes[kind][e.code().name] += 1

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        for _ in range(n):
            if rng.random() < raw_share:
                data = bytearray(pb.RouteRequest(text=rng.choice(TEXTS), metadata=_rand_md(rng)).SerializeToString())
                for _ in range(rng.randrange(1, 6)):
                    if data and rng.random() < 0.7:
                        data[rng.randrange(len(data))] = rng.randrange(256)
                    else:
                        data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
                await queue.put(("raw_bytes", raw, bytes(data), (("authorization", f"Bearer {token}"),)))
            else:
                rpc, req, md = make_request(rng, token, others)
                await queue.put(("messages", getattr(stub, rpc), req, md))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return codes


def fuzz(requests: int, raw_share: float) -> dict[str, Any]:
    from semroute.audit.verify import verify_logs

    with tempfile.TemporaryDirectory(prefix="semroute-fuzz-") as tmp_s:
        tmp = Path(tmp_s)
        keys, token, others = _keys(tmp, n_extra=3)
        log = tmp / "audit" / "audit.log"
        t = time.perf_counter()
        with ServerProcess(_bundle(), "--keys", str(keys), "--rate-limit", "100000/s", "--audit-log", str(log),
                           "--audit-max-bytes", str(8 * 1024 * 1024), "--max-text-chars", "2000") as srv:
            assert srv.proc.stderr is not None
            drained: list[str] = []  # a full stderr pipe would block the server's logging, and with it the server
            reader = threading.Thread(target=lambda: drained.extend(srv.proc.stderr), daemon=True)  # type: ignore[arg-type]
            reader.start()
            codes = asyncio.run(fuzz_target(srv.target, requests, token, others, raw_share=raw_share))
            alive = srv.proc.poll() is None
            srv.proc.send_signal(signal.SIGTERM)
            try:
                rc = srv.proc.wait(60)
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                rc = None
            reader.join(30)
            stderr = "".join(drained)
        elapsed = time.perf_counter() - t
        files = sorted(log.parent.glob("audit.log*"))
        files = [f for f in files if not f.name.endswith(".key")]
        s = verify_logs(files)
    bad = {k: sum(c[x] for x in ("INTERNAL", "UNKNOWN")) for k, c in codes.items()}
    return {"requests": requests, "raw_share": raw_share, "codes": {k: dict(v) for k, v in codes.items()},
            "internal_or_unknown": bad, "server_alive_after": alive, "exit_code": rc,
            "tracebacks_in_log": stderr.count("Traceback"), "audit": {"records": s.records, "files": s.files,
                                                                      "gaps": s.gaps, "lost": s.lost},
            "elapsed_s": round(elapsed, 1), "loadavg": os.getloadavg(),
            "command": f"python -m benchmarks.ops fuzz --requests {requests} --raw-share {raw_share} --bundle BUNDLE",
            "bundle_has_policy": "policy" in json.loads((_bundle() / "routes.json").read_text())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ops", description=__doc__)
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--calls", type=int, default=2000)
    f = sub.add_parser("fuzz")
    f.add_argument("--requests", type=int, default=100_000)
    f.add_argument("--raw-share", type=float, default=0.05, help="share sent as mutated raw bytes")
    for p in (o, f):
        p.add_argument("--bundle", type=Path, default=REPO / "bundle",
                       help="bundle to serve (build it with: semroute build-index routes --out DIR)")
    ns = ap.parse_args(argv)
    _BUNDLE[0] = ns.bundle
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    m = machine()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if ns.what == "overhead":
        r = overhead(ns.calls)
        r.update(machine=m, date=date)
        _write("overhead", r, [f"# Ops overhead on Route at concurrency 1 ({date})", "",
                               f"`{r['command']}`; {m['cpu']}, {m['cores']} cores; " + overhead_table(r)])
    else:
        r = fuzz(ns.requests, ns.raw_share)
        r.update(machine=m, date=date)
        _write("fuzz", r, [f"# Ops fuzz ({date})", "", f"`{r['command']}`; " + fuzz_table(r)])
    return 0


def overhead_table(r: dict[str, Any]) -> str:
    lines = [f"load average {r['loadavg'][0]:.2f}; two servers, alternating blocks of {r['block']} calls", "",
             "| server | p50 ms | p90 ms | p99 ms | n |", "|---|---|---|---|---|"]
    for k, label in (("bare", "bare"), ("ops", "auth + rate limit + audit")):
        x = r[k]
        lines.append(f"| {label} | {x['median_ms']:.3f} | {x['p90_ms']:.3f} | {x['p99_ms']:.3f} | {x['n']} |")
    lines += ["", f"p50 ratio (ops / bare): **{r['p50_ratio']:.3f}** (target <= 1.10); audit records written: "
              f"{r['audit_records']}"]
    return "\n".join(lines)


def fuzz_table(r: dict[str, Any]) -> str:
    lines = [f"{r['elapsed_s']} s; load average {r['loadavg'][0]:.2f}", "",
             "| kind | status codes | INTERNAL+UNKNOWN |", "|---|---|---|"]
    for k, c in r["codes"].items():
        lines.append(f"| {k} | {', '.join(f'{n} {v}' for n, v in sorted(c.items()))} | "
                     f"{r['internal_or_unknown'][k]} |")
    lines += ["", f"server alive after: {r['server_alive_after']}, exit code on SIGTERM: {r['exit_code']}, "
              f"tracebacks in its log: {r['tracebacks_in_log']}; audit chain verifies: {r['audit']}"]
    return "\n".join(lines)


def run(mode: Mode, workdir: Path) -> dict[str, Any]:
    """The ``ops`` suite of ``python -m benchmarks``: both measurements on a bundle of the bundled routes."""
    bundle = workdir / "ops-bundle"
    build(REPO / "routes", bundle)
    _BUNDLE[0] = bundle
    try:
        return {"overhead": overhead(mode.n(400, 2000)), "fuzz": fuzz(mode.n(2000, 100_000), 0.05)}
    finally:
        _BUNDLE[0] = REPO / "bundle"


def table(res: dict[str, Any]) -> str:
    return "\n".join(["Route at concurrency 1, bare server vs auth + rate limit + audit: "
                      + overhead_table(res["overhead"]), "",
                      f"Fuzz, {res['fuzz']['requests']:,} random and mutated requests, auth + rate limit + audit on: "
                      + fuzz_table(res["fuzz"])])


if __name__ == "__main__":
    sys.exit(main())
