"""Checks of the rendered Kubernetes manifests that schema validation cannot make: every
service probes its own health name, every container runs non-root on a read-only root
filesystem, and the drain fits in the termination grace period.

Run by `make test` (via `make k8s-test`), against `kubectl kustomize` of each overlay."""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "prod"]
SERVICES = {
    "hello-service": "hello.v1.HelloService",
    "user-service": "user.v1.UserService",
    "order-service": "order.v1.OrderService",
}


def render(overlay):
    text = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(params=OVERLAYS, scope="module")
def objects(request):
    return render(request.param)


def workloads(objects):
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def seconds(duration):
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"expected a duration in seconds, got {duration!r}"
    return int(match.group(1))


def test_every_service_probes_its_own_health_name(objects):
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for name, health_name in SERVICES.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": grpc_port, "service": health_name}, (name, probe)


def test_every_container_runs_non_root_on_a_read_only_root(objects):
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            where = f'{workload["metadata"]["name"]}/{container["name"]}'
            context = container.get("securityContext", {})
            non_root = context.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot"))
            assert non_root is True, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert "limits" in container.get("resources", {}), where


def test_the_drain_fits_in_the_grace_period(objects):
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "meshwork-telemetry")
    shutdown_grace = seconds(config["data"]["SHUTDOWN_GRACE"])
    for deployment in (o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] in SERVICES):
        pod = deployment["spec"]["template"]["spec"]
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop + shutdown_grace < pod["terminationGracePeriodSeconds"], deployment["metadata"]["name"]


def test_grpc_ports_are_named_and_declared_grpc(objects):
    for service in (o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] in SERVICES):
        grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert grpc["appProtocol"] == "grpc", service["metadata"]["name"]


def test_order_finds_user_through_the_headless_service(objects):
    order = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "order-service")
    env = {e["name"]: e.get("value") for e in order["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["USER_SERVICE_URL"].startswith("dns:///user-headless.")
    headless = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "user-headless")
    assert headless["spec"]["clusterIP"] == "None"


def test_images_come_from_the_one_kustomize_image_entry(objects):
    images = {c["image"] for w in workloads(objects) for c in w["spec"]["template"]["spec"]["containers"]
              if w["metadata"]["name"] in SERVICES}
    assert len(images) == 1 and next(iter(images)).startswith("ghcr.io/meshwork/meshwork:"), images
