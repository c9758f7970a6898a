"""Where does a server's memory go? RSS of a ``semroute serve`` process after each SIGHUP reload, or after every
1,000 bad requests sent one at a time (docs/operations.md, memory).

    python -m benchmarks.memory_probe reload [--n 10] [--no-trim]   # --no-trim: without malloc_trim after reloads
    python -m benchmarks.memory_probe bad [--n 6000]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from ._common import REPO, build
from .soak import MAX_TEXT, _bad_requests, _free_port, _metrics, _rss_mb

_NO_TRIM = "import semroute.server.reload as r; r._LIBC = None; from semroute.cli import main; main()"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["reload", "bad"])
    ap.add_argument("--n", type=int)
    ap.add_argument("--no-trim", action="store_true")
    ns = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="semroute-mem-") as tmp:
        live = Path(tmp) / "live"
        build(REPO / "routes", live)
        mport, log = _free_port(), Path(tmp) / "log"
        cmd = [sys.executable, *(["-c", _NO_TRIM] if ns.no_trim else ["-m", "semroute.cli"])]
        with log.open("w") as f:
            proc = subprocess.Popen([*cmd, "serve", "--index", str(live), "--port", "0", "--metrics-port", str(mport),
                                     "--no-watch", "--max-text-chars", str(MAX_TEXT)], stderr=f)
        while not (m := re.search(r"on 127\.0\.0\.1:(\d+)", log.read_text())):
            if proc.poll() is not None:
                raise RuntimeError(log.read_text())
            time.sleep(0.2)
        print("start", round(_rss_mb(proc.pid)), flush=True)
        if ns.mode == "reload":
            for i in range(ns.n or 10):
                before = _metrics(mport).get("ok", 0)
                proc.send_signal(signal.SIGHUP)
                while _metrics(mport).get("ok", 0) <= before:
                    time.sleep(0.2)
                time.sleep(0.5)
                print("reload", i + 1, round(_rss_mb(proc.pid)), flush=True)
        else:
            kinds = _bad_requests(random.Random(1))
            with grpc.insecure_channel(f"127.0.0.1:{m.group(1)}") as ch:
                calls = {k: ch.unary_unary(f"/semroute.v1.Router/{k}") for k in ("Route", "RouteBatch", "Info")}
                for i in range(ns.n or 6000):
                    _, method, make = kinds[i % len(kinds)]
                    with contextlib.suppress(grpc.RpcError):
                        calls[method](make(), timeout=30)
                    if i % 1000 == 999:
                        print("bad", i + 1, round(_rss_mb(proc.pid)), flush=True)
        proc.send_signal(signal.SIGTERM)
        print("exit code", proc.wait(60))
        shutil.rmtree(live, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
