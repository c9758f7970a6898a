"""The container image, built and run for real with buildah (chroot isolation: no daemon, no registry).

Opt-in, because a build exports the encoder and takes minutes: SEMROUTE_IMAGE_TEST=1 (needs root,
buildah, and mmdebstrap the first time; SEMROUTE_IMAGE=TAG tests an image the script built before instead). The
test builds the image with scripts/build_image.sh (cached layers make a rebuild quick), checks the runtime image
holds no torch, runs its ENTRYPOINT with its ENV and USER, calls it over gRPC, and stops it with SIGTERM. With
chroot isolation the container shares the host's network, so the test sets the two ports to free ones (the image's
ENV would bind 50051 and 9090 on the host)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import health_status
from test_container import free_port

from semroute.client import RouterClient

REPO = Path(__file__).resolve().parents[1]
TAG = "localhost/semroute:test"
ENV = {**os.environ, "STORAGE_DRIVER": os.environ.get("STORAGE_DRIVER", "vfs"),
       "BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot")}

pytestmark = pytest.mark.skipif(os.environ.get("SEMROUTE_IMAGE_TEST") != "1",
                                reason="builds a container image: set SEMROUTE_IMAGE_TEST=1 (needs buildah, root)")


def buildah(*args: str, timeout: float = 600) -> str:
    r = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    assert r.returncode == 0, f"buildah {' '.join(args)}: {r.stderr[-2000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The image scripts/build_image.sh builds, or SEMROUTE_IMAGE: one built already (by the script) to test as is."""
    assert shutil.which("buildah"), "SEMROUTE_IMAGE_TEST=1 but buildah is not installed (apt-get install -y buildah)"
    if given := os.environ.get("SEMROUTE_IMAGE"):
        return given
    r = subprocess.run(["bash", str(REPO / "scripts" / "build_image.sh"), TAG], capture_output=True, text=True,
                       timeout=3600, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    print(r.stdout.strip())  # the tag and the image size
    return TAG


@pytest.fixture()
def container(image: str) -> Iterator[str]:
    ctr = buildah("from", "--pull=false", image).strip()
    try:
        yield ctr
    finally:
        buildah("rm", ctr)


def test_runtime_image_holds_no_torch(container: str) -> None:
    out = buildah("run", container, "--", "python", "-c",
                  "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
                  "('torch', 'sentence_transformers', 'semroute', 'onnxruntime', 'faiss')}))")
    assert json.loads(out) == {"torch": False, "sentence_transformers": False, "semroute": True,
                               "onnxruntime": True, "faiss": True}


def _descendant(pid: int, name: str) -> int:
    """The process under ``pid`` whose command line contains ``name`` (the server inside the container)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        todo, seen = [pid], []
        while todo:
            p = todo.pop()
            seen.append(p)
            # every thread's children: buildah is Go, and may start a child from any of its threads
            for task in Path(f"/proc/{p}/task").glob("*"):
                with contextlib.suppress(OSError):  # the thread or process ended meanwhile
                    todo += [int(c) for c in (task / "children").read_text().split()]
        for p in seen[1:]:
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                if name in cmd and not cmd.startswith("buildah"):  # the process itself, not buildah's wrapper
                    return p
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"no {name!r} process under {pid}")


def test_image_serves_is_called_and_stops_on_sigterm(image: str, container: str) -> None:
    config = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
    assert config["Entrypoint"] == ["semroute", "serve"] and config["User"] == "10001"
    port, metrics_port = free_port(), free_port()
    buildah("config", "--env", f"SEMROUTE_PORT={port}", "--env", f"SEMROUTE_METRICS_PORT={metrics_port}", container)
    # buildah run runs a command in the container with its ENV and USER; the ENTRYPOINT is passed as the command
    proc = subprocess.Popen(["buildah", "run", container, "--", *config["Entrypoint"]], env=ENV,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        before = []  # what the server says before it serves: nothing, unless something is wrong in the image
        for line in proc.stderr:
            if "serving bundle" in line:
                break
            before.append(line)
        assert f"on 0.0.0.0:{port}" in line, before
        assert not before, before
        server = _descendant(proc.pid, "semroute serve")
        uid = next(ln.split()[1] for ln in Path(f"/proc/{server}/status").read_text().splitlines()
                   if ln.startswith("Uid:"))
        assert uid == "10001"  # the image's non-root USER
        assert health_status(f"127.0.0.1:{port}", timeout=5) == 1
        with RouterClient(f"127.0.0.1:{port}") as c:
            d = c.route("how do I get a refund")
            assert d.route == "billing" and d.model == "small-chat"
            assert c.info().index_version  # the bundle built in the builder stage
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert b"semroute_decisions_total" in r.read()
        os.kill(server, signal.SIGTERM)  # what a container runtime sends to the entrypoint on stop
        proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert health_status(f"127.0.0.1:{port}", timeout=1) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
