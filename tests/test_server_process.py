"""`semroute serve` as a process: readiness only after load, SIGHUP reload, SIGTERM drain, bad bundle refusal."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from grpc_health.v1 import health_pb2
from server_harness import health_status, start_subprocess

from semroute.client import AsyncRouterClient, RouterClient


def _free_port() -> int:
    # the port must be known before the server binds it (the test watches it open), so --port 0 will not do
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_not_bound_before_load_then_serving(bundle_dir: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "semroute.cli", "serve", "--index", str(bundle_dir), "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = health_status(f"127.0.0.1:{port}", timeout=0.2)
            seen.append(status)
            if status is not None:
                break
            time.sleep(0.05)
        # never NOT_SERVING or UNKNOWN: the port opens only once the bundle is loaded and warmed
        assert seen[-1] == health_pb2.HealthCheckResponse.SERVING
        assert all(s is None for s in seen[:-1])
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_sigterm_drains_in_flight_requests_and_exits_0(bundle_dir: Path) -> None:
    proc, port = start_subprocess(bundle_dir, "--max-batch-size", "1")
    target = f"127.0.0.1:{port}"

    async def flood() -> list[object]:
        async with AsyncRouterClient(target, timeout=30) as c:
            await c.route("warm the connection")
            tasks = [asyncio.create_task(c.route(f"please summarize report number {i}")) for i in range(40)]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)  # the server is working through them
            proc.send_signal(signal.SIGTERM)
            in_flight.append(sum(not t.done() for t in tasks))
            return await asyncio.gather(*tasks, return_exceptions=True)

    in_flight: list[int] = []

    results = asyncio.run(flood())
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert in_flight[0] > 0, "SIGTERM must arrive while requests are in flight"
    assert all(r.route == "summarization" for r in results)  # type: ignore[attr-defined]


def test_sighup_reloads_and_bad_bundle_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(bundle_dir, live)
    proc, port = start_subprocess(live, "--no-watch", env={"SEMROUTE_LOG_FORMAT": "json"})
    try:
        with RouterClient(f"127.0.0.1:{port}") as c:
            before = c.info().index_version
            # a bundle whose encoder changed after build: refused on SIGHUP, the old one keeps serving
            with (live / "encoder" / "tokenizer.json").open("a") as f:
                f.write(" ")
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.5)
            assert c.info().index_version == before
            assert c.route("how do I get a refund").route == "billing"
            # a good bundle with a new version: taken on SIGHUP
            shutil.rmtree(live)
            shutil.copytree(bundle_dir, live)
            m = json.loads((live / "manifest.json").read_text())
            m["version"] = "v-next"
            (live / "manifest.json").write_text(json.dumps(m))
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while c.info().index_version != "v-next" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert c.info().index_version == "v-next"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    # operators' log collectors get one JSON object per line, with the event named
    events = [json.loads(line) for line in err.splitlines() if line.strip()]
    refused = [e for e in events if e.get("event") == "reload_refused"]
    assert refused and refused[0]["level"] == "ERROR" and refused[0]["serving"] == before
    assert "fingerprint mismatch" in refused[0]["msg"] and refused[0]["trigger"] == "SIGHUP"
    assert any(e.get("event") == "reloaded" and e["serving"] == "v-next" for e in events)


def test_bad_bundle_exits_nonzero_with_message(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "semroute.cli", "serve", "--index", str(tmp_path / "nope"),
                        "--port", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "build-index" in r.stderr and "Traceback" not in r.stderr


def test_cli_route_server_prints_same_json_as_in_process(bundle_dir: Path) -> None:
    proc, port = start_subprocess(bundle_dir, env={"SEMROUTE_MAX_BATCH_SIZE": "8"})
    try:
        texts = ["translate good night into French", "zxqv plm"]

        def run(*args: str) -> list[dict[str, object]]:
            r = subprocess.run([sys.executable, "-m", "semroute.cli", "route", "--json", *args, *texts],
                               capture_output=True, text=True, timeout=120, env=os.environ.copy())
            assert r.returncode == 0, r.stderr
            return [json.loads(line) for line in r.stdout.splitlines()]

        remote, local = run("--server", f"127.0.0.1:{port}"), run("--index", str(bundle_dir))
        for a, b in zip(remote, local, strict=True):
            a.pop("timings_ns"), b.pop("timings_ns")
            assert a.keys() == b.keys()
            assert {k: v for k, v in a.items() if k not in ("score", "margin", "scores", "neighbours")} == \
                   {k: v for k, v in b.items() if k not in ("score", "margin", "scores", "neighbours")}
            assert abs(a["score"] - b["score"]) < 1e-5  # type: ignore[operator]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
