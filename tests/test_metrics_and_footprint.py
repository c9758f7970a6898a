"""What operators and deployers rely on beyond the RPCs: the Prometheus endpoint of a real server, and a serving
path that never imports torch."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_harness import InProcessServer

from semroute._proto.semroute.v1 import router_pb2 as pb
from semroute._proto.semroute.v1 import router_pb2_grpc as pb_grpc
from semroute.server import ServeConfig

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_counts_decisions_errors_and_stages(bundle_dir: Path) -> None:
    port = _free_port()
    config = ServeConfig(index=bundle_dir, port=0, watch=False, metrics_port=port)
    with InProcessServer(config) as server, grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.RouterStub(ch)
        for _ in range(3):
            stub.Route(pb.RouteRequest(text="write a python function that parses a CSV file"), timeout=10)
        with pytest.raises(grpc.RpcError):
            stub.Route(pb.RouteRequest(text="   "), timeout=10)
        version = stub.Info(pb.InfoRequest(), timeout=10).index_version
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("semroute_decisions_total", (("reason", "REASON_MATCHED"), ("route", "coding")))] == 3
    assert samples[("semroute_requests_total", (("code", "INVALID_ARGUMENT"), ("method", "Route")))] == 1
    assert samples[("semroute_requests_total", (("code", "OK"), ("method", "Route")))] == 3
    assert samples[("semroute_stage_seconds_count", (("stage", "encode"),))] >= 3
    assert samples[("semroute_bundle_info", (("version", version),))] == 1


def test_serving_path_never_imports_torch(bundle_dir: Path) -> None:
    code = (
        "import sys; from semroute.router import Router; import semroute.server, semroute.client; "
        f"d = Router.load({str(bundle_dir)!r}).route('translate good night into French'); "
        "assert d.model, d; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'sentence_transformers', 'transformers')); print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_serving_install_does_not_depend_on_torch() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in deps}
    assert not names & {"torch", "sentence-transformers", "transformers", "onnx"}
    assert {"onnxruntime", "tokenizers", "faiss-cpu", "grpcio"} <= names
