"""The Kubernetes Deployment's container, approximated without a cluster: the image's root filesystem mounted
read-only (readOnlyRootFilesystem), a 64 MB tmpfs at /tmp (the emptyDir), uid 10001 (runAsUser), the manifest's
command, arguments and environment (only the host and ports changed to free loopback ones, and options another
branch has not landed yet dropped), in a private mount namespace. The server must start, answer health, a Route and
/metrics, and exit on SIGTERM.

Opt-in like tests/test_image.py: SEMROUTE_IMAGE_TEST=1, root, buildah, and an image built by that test or
scripts/build_image.sh (SEMROUTE_IMAGE, default localhost/semroute:test).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from server_harness import health_status
from test_deploy_kubernetes import _container, _one

from semroute.client import RouterClient

TAG = os.environ.get("SEMROUTE_IMAGE", "localhost/semroute:test")
pytestmark = pytest.mark.skipif(os.environ.get("SEMROUTE_IMAGE_TEST") != "1",
                                reason="runs the container image: set SEMROUTE_IMAGE_TEST=1 (needs buildah, root)")

# Mount the image read-only with the pod's writable /tmp, then become the pod's user and run the pod's command.
_RUN = """set -eu
ro=$1; shift
mount --bind "$ROOTFS" "$ro"
mount -o remount,bind,ro "$ro"
mount -t proc proc "$ro/proc"
mount --rbind /dev "$ro/dev"
mount -t tmpfs -o size=64m,mode=1777 tmpfs "$ro/tmp"
exec chroot --userspec="$RUN_AS" "$ro" /usr/bin/env -i "$@"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _buildah(*args: str) -> str:
    r = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"buildah {' '.join(args)}: {r.stderr[-2000:]}"
    return r.stdout.strip()


def test_the_deployment_command_serves_from_a_read_only_root(tmp_path: Path) -> None:
    assert shutil.which("buildah") and shutil.which("unshare"), "needs buildah and unshare (util-linux)"
    deployment = _one("Deployment", "semroute")
    pod = deployment["spec"]["template"]["spec"]
    c = _container(deployment, "semroute")
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    port, metrics_port = _free_port(), _free_port()
    replace = {"--host": "127.0.0.1", "--port": str(port), "--metrics-port": str(metrics_port)}
    args = []
    for a in c["args"]:
        name = a.split("=", 1)[0]
        if name == "--state":
            continue  # the cluster's Redis is not here: this test checks the image serves, with in-process state
        args.append(f"{name}={replace[name]}" if name in replace else a)
    env = [f"{e['name']}={e['value']}" for e in c["env"]]
    ctr = _buildah("from", "--pull=false", TAG).splitlines()[-1]
    proc = None
    log = (tmp_path / "serve.log").open("w")
    try:
        rootfs = _buildah("mount", ctr)
        user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        home = "/home/semroute"  # what a runtime sets from the image's /etc/passwd
        ro = tmp_path / "rootfs"
        ro.mkdir()
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", _RUN, "run", str(ro),
             "PATH=/opt/semroute/bin:/usr/local/bin:/usr/bin:/bin", f"HOME={home}", *env, *c["command"], *args],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "ROOTFS": rootfs, "RUN_AS": user},
        )
        deadline = time.monotonic() + 180
        while health_status(f"127.0.0.1:{port}") != 1:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        uid = next(ln.split()[1] for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                   if ln.startswith("Uid:"))
        assert uid == str(pod["securityContext"]["runAsUser"])
        with RouterClient(f"127.0.0.1:{port}") as client:
            assert client.route("how do I get a refund for a double charge").model
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert b"semroute_decisions_total" in r.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        text = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in text and "telemetry" not in text, text
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
        subprocess.run(["buildah", "umount", ctr], capture_output=True, timeout=120)
        subprocess.run(["buildah", "rm", ctr], capture_output=True, timeout=120)
