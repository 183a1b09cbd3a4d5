"""Checks of the rendered Kubernetes manifests that schema validation cannot make: every
service has its objects and probes its own health names, every container runs non-root on a
read-only root filesystem, and the drain fits in the termination grace period.

Nothing here names the services: they are the packages under services/ (the same list the
Makefile, the scripts and the e2e kit read), and each one's gRPC service name comes from its
.proto file under proto/<dir>/. A new service is checked without an edit here, and one whose
manifest is missing fails.

Run by `make test` (via `make k8s-test`), against `kubectl kustomize` of each overlay."""
import functools
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.parent.name for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml"))
NAMESPACE = "meshwork"
# The label every service's objects carry, by which the overlays patch them.
SERVICE_LABEL = ("app.kubernetes.io/component", "grpc-service")


def proto_services(proto_dir):
    """Full names (`user.v1.UserService`) of the gRPC services declared below proto_dir."""
    names = []
    for proto in sorted(proto_dir.rglob("*.proto")):
        text = proto.read_text()
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.MULTILINE)
        for service in re.findall(r"^service\s+(\w+)", text, re.MULTILINE):
            names.append(f"{package.group(1)}.{service}" if package else service)
    return names


def service_crates():
    """{binary name: full gRPC service name} for every services/<dir>/Cargo.toml."""
    crates = {}
    for manifest in sorted((ROOT / "services").glob("*/Cargo.toml")):
        binary = tomllib.loads(manifest.read_text())["package"]["name"]
        served = proto_services(ROOT / "proto" / manifest.parent.name)
        assert len(served) == 1, f"{binary}: expected one gRPC service under proto/{manifest.parent.name}/, found {served}"
        crates[binary] = served[0]
    assert crates, "no services/*/Cargo.toml"
    return crates


SERVICES = service_crates()


@functools.cache
def render(overlay):
    text = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


@pytest.fixture(params=OVERLAYS, scope="module")
def objects(request):
    return render(request.param)


def workloads(objects):
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def named(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def seconds(duration):
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"expected a duration in seconds, got {duration!r}"
    return int(match.group(1))


def test_overlays_exist():
    assert {"dev", "prod"} <= set(OVERLAYS), OVERLAYS


def test_every_service_has_a_labelled_deployment_and_service(objects):
    key, value = SERVICE_LABEL
    labelled = {o["metadata"]["name"] for o in objects
                if o["kind"] == "Deployment" and o["metadata"].get("labels", {}).get(key) == value}
    missing, unknown = set(SERVICES) - labelled, labelled - set(SERVICES)
    assert not missing, f"no Deployment labelled {key}={value} for {sorted(missing)} (docs/adding-a-service.md)"
    assert not unknown, f"Deployments labelled {key}={value} without a package under services/: {sorted(unknown)}"
    services = named(objects, "Service")
    for name in SERVICES:
        assert name in services, f"{name} has no Service"
        container = named(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == [f"/usr/local/bin/{name}"], name


def test_every_object_is_in_the_namespace(objects):
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, (o["kind"], o["metadata"]["name"])


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_every_service_probes_its_own_health_name(objects):
    # Readiness (and startup) follow the database: the full service name. Liveness does not:
    # `liveness`, so a database outage takes pods out of rotation without restarting them.
    # With TLS on the gRPC port, kubelet (which cannot speak TLS) probes the plaintext
    # health-only port, HEALTH_ADDR.
    deployments = named(objects, "Deployment")
    for name, health_name in SERVICES.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = env_of(container)
        probe_port = ports["grpc"]
        if "TLS_CERT" in env:
            assert "HEALTH_ADDR" in env, f"{name}: TLS on the gRPC port, and no plaintext health port for probes"
            probe_port = int(env["HEALTH_ADDR"].rsplit(":", 1)[1])
            assert ports.get("health") == probe_port, name
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": probe_port, "service": health_name}, (name, probe)
        assert container["livenessProbe"]["grpc"] == {"port": probe_port, "service": "liveness"}, name


def mounted_from(pod, container, path):
    """The volume of `pod` that `container` mounts at the directory holding `path`."""
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


def test_prod_switches_tls_mutual_tls_and_authentication_on_and_dev_leaves_them_off():
    prod = render("prod")
    configs = named(prod, "ConfigMap")
    for name in SERVICES:
        pod = named(prod, "Deployment")[name]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = env_of(container)
        for setting in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA"):
            volume = mounted_from(pod, container, env[setting])
            assert volume["secret"]["secretName"] == f"{name}-tls", (name, setting)
        jwks = mounted_from(pod, container, env["AUTH_JWKS_FILE"])
        assert jwks["configMap"]["name"] in configs, name
        from_config = {k for ref in container.get("envFrom", []) if "configMapRef" in ref
                       for k in configs[ref["configMapRef"]["name"]]["data"]}
        assert {"AUTH_ISSUER", "AUTH_AUDIENCE"} <= from_config | set(env), f"{name}: issuer and audience are required"
    certificates = {o["spec"]["secretName"]: o for o in prod if o["kind"] == "Certificate"}
    for name in SERVICES:
        assert "client auth" in certificates[f"{name}-tls"]["spec"]["usages"], f"{name} presents its certificate as a client"
    order = env_of(named(prod, "Deployment")["order-service"]["spec"]["template"]["spec"]["containers"][0])
    headless_host = order["USER_SERVICE_URL"].removeprefix("dns:///").rsplit(":", 1)[0]
    assert "USER_SERVICE_CA" in order, "order calls user over TLS"
    assert headless_host in certificates["user-service-tls"]["spec"]["dnsNames"], "user's certificate names what order dials"

    for name in SERVICES:
        env = env_of(named(render("dev"), "Deployment")[name]["spec"]["template"]["spec"]["containers"][0])
        assert not {"TLS_CERT", "AUTH_JWKS_FILE", "AUTH_JWT_SECRET_FILE"} & set(env), f"dev {name} stays plaintext and open"


def test_prod_autoscales_every_service_and_dev_runs_one_replica():
    prod = render("prod")
    autoscalers, budgets = named(prod, "HorizontalPodAutoscaler"), named(prod, "PodDisruptionBudget")
    for name in SERVICES:
        assert autoscalers[name]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert autoscalers[name]["spec"]["minReplicas"] >= 2, name
        assert budgets[name]["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        # The autoscaler owns the count: one in the Deployment would reset it on every apply.
        assert "replicas" not in named(prod, "Deployment")[name]["spec"], name
    dev = render("dev")
    assert not named(dev, "HorizontalPodAutoscaler") and not named(dev, "PodDisruptionBudget")
    for name in SERVICES:
        assert named(dev, "Deployment")[name]["spec"]["replicas"] == 1, name


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
    config = named(objects, "ConfigMap")["meshwork-telemetry"]
    shutdown_grace = seconds(config["data"]["SHUTDOWN_GRACE"])
    deployments = named(objects, "Deployment")
    for name in SERVICES:
        pod = deployments[name]["spec"]["template"]["spec"]
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop + shutdown_grace < pod["terminationGracePeriodSeconds"], name


def test_grpc_ports_are_named_and_declared_grpc(objects):
    services = named(objects, "Service")
    for name in SERVICES:
        grpc = next(p for p in services[name]["spec"]["ports"] if p["name"] == "grpc")
        assert grpc["appProtocol"] == "grpc", name


def test_order_finds_user_through_the_headless_service(objects):
    order = named(objects, "Deployment")["order-service"]
    env = {e["name"]: e.get("value") for e in order["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["USER_SERVICE_URL"].startswith("dns:///user-headless.")
    headless = named(objects, "Service")["user-headless"]
    assert headless["spec"]["clusterIP"] == "None"


def test_images_come_from_the_one_kustomize_image_entry(objects):
    images = {c["image"] for w in workloads(objects) for c in w["spec"]["template"]["spec"]["containers"]
              if w["metadata"]["name"] in SERVICES}
    assert len(images) == 1 and next(iter(images)).startswith("ghcr.io/meshwork/meshwork:"), images
