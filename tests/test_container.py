"""The Dockerfile's runtime ENV + ENTRYPOINT (and its HEALTHCHECK), run as a process the way a container runs them:
it serves on the host and port the ENV names, with metrics on, and stops cleanly on SIGTERM. (The image itself is
built and run by tests/test_image.py where buildah is installed.)"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from server_harness import health_status

from semroute.client import RouterClient

REPO = Path(__file__).resolve().parents[1]


def runtime_stage() -> dict[str, object]:
    """ENV, ENTRYPOINT, HEALTHCHECK and USER of the Dockerfile's last stage (continuation lines joined)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    stage = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    env: dict[str, str] = {}
    out: dict[str, object] = {"env": env}
    for ln in stage:
        word, _, rest = ln.partition(" ")
        if word == "ENV":
            parts = shlex.split(rest)
            pairs = [p.split("=", 1) for p in parts] if "=" in parts[0] else [[parts[0], " ".join(parts[1:])]]
            env.update({k: v for k, v in pairs})
        elif word == "ENTRYPOINT":
            out["entrypoint"] = json.loads(rest)
        elif word == "HEALTHCHECK":
            out["healthcheck"] = json.loads(rest[rest.index("CMD ") + 4:])
        elif word == "USER":
            out["user"] = rest
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net shows them) with a listening TCP socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            addr, hexport = cols[1].split(":")
            if cols[3] == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def as_local(argv: list[str]) -> list[str]:
    """The image's commands with this checkout's interpreter (``semroute`` is its console script)."""
    head = {"semroute": [sys.executable, "-m", "semroute.cli"], "python": [sys.executable]}
    return [*head.get(argv[0], [argv[0]]), *argv[1:]]


def test_dockerfile_env_and_entrypoint_serve_as_a_container_would(bundle_dir: Path) -> None:
    stage = runtime_stage()
    env: dict[str, str] = stage["env"]  # type: ignore[assignment]
    assert stage["entrypoint"] == ["semroute", "serve"]
    assert {"SEMROUTE_INDEX", "SEMROUTE_HOST", "SEMROUTE_PORT", "SEMROUTE_METRICS_PORT"} <= env.keys()
    assert env["SEMROUTE_HOST"] == "0.0.0.0" and int(env["SEMROUTE_METRICS_PORT"]) > 0
    # What only a machine shared with other tests changes: the bundle (the image's /bundle is built in its builder
    # stage) and the two port numbers (50051 and 9090 may be taken here). Host and everything else as written.
    port, metrics_port = free_port(), free_port()
    overrides = {"SEMROUTE_INDEX": str(bundle_dir), "SEMROUTE_PORT": str(port),
                 "SEMROUTE_METRICS_PORT": str(metrics_port)}
    run_env = {**os.environ, **{k: v for k, v in env.items() if k != "PATH"}, **overrides}
    proc = subprocess.Popen(as_local(stage["entrypoint"]), env=run_env,  # type: ignore[arg-type]
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"on 0.0.0.0:{port}" in line, line
        # bound on every address, as a container's published port needs (not 127.0.0.1 only)
        assert listening_addresses(port) & {"00000000", "00000000000000000000000000000000"}, \
            listening_addresses(port)
        assert health_status(f"127.0.0.1:{port}") == 1
        with RouterClient(f"127.0.0.1:{port}") as c:
            assert c.route("how do I get a refund").route == "billing"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert b'semroute_decisions_total{reason="REASON_MATCHED",route="billing"} 1.0' in r.read()
        # the image's HEALTHCHECK command, in the same environment
        hc = subprocess.run(as_local(stage["healthcheck"]), env=run_env, timeout=30)  # type: ignore[arg-type]
        assert hc.returncode == 0
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends (STOPSIGNAL SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
