"""Checks of the rendered Kubernetes manifests that schema validation cannot make: every
service has its objects and probes its own health names, every container runs non-root on a
read-only root filesystem, the drain fits in the termination grace period, and the events
broker (NATS with JetStream) keeps its store on a volume and is reached by user and order only.

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


# Events (CONTRACT *Events*): the services that read EVENTS_URL, and the broker they relay to.
EVENT_SERVICES = {"user-service", "order-service"}
NATS = "nats"
NATS_CLIENT_PORT = 4222


def pod_templates(objects):
    """{workload name: pod template} for every Deployment and StatefulSet."""
    return {w["metadata"]["name"]: w["spec"]["template"] for w in workloads(objects)}


def selects(selector, labels):
    """Whether a label selector (matchLabels and matchExpressions) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if not {"In": key in labels and labels[key] in values,
                "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels,
                "DoesNotExist": key not in labels}[op]:
            return False
    return True


def container_ports(pod):
    """{port name: number} over every container of a pod template."""
    return {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", []) if "name" in p}


def covers(rule_ports, port, named_ports):
    """Whether a NetworkPolicy rule's `ports` include TCP `port` of a pod whose containers
    name their ports `named_ports` ({name: number}); no `ports` means every port."""
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in p:
            return True
        number = named_ports.get(p["port"]) if isinstance(p["port"], str) else p["port"]
        if number is not None and number <= port <= p.get("endPort", number):
            return True
    return False


def peers(objects, rule_peers):
    """Whom a rule's `from` or `to` names: workloads of this namespace by name, anything else
    by a description (other namespaces, an address block, or anyone when the list is empty)."""
    if not rule_peers:
        return {"anyone"}
    found = set()
    for peer in rule_peers:
        if "ipBlock" in peer:
            found.add(f'ipBlock {peer["ipBlock"]["cidr"]}')
        elif "namespaceSelector" in peer:
            found.add(f'namespaces {peer["namespaceSelector"]}')
        else:
            found |= {name for name, pod in pod_templates(objects).items()
                      if selects(peer["podSelector"], pod["metadata"].get("labels", {}))}
    return found


def admitted(objects, target, port):
    """Whom the NetworkPolicies let reach TCP `port` of workload `target`'s pods."""
    pod = pod_templates(objects)[target]
    labels, named_ports = pod["metadata"].get("labels", {}), container_ports(pod)
    found = set()
    for policy in named(objects, "NetworkPolicy").values():
        spec = policy["spec"]
        if "Ingress" in spec.get("policyTypes", ["Ingress"]) and selects(spec["podSelector"], labels):
            for rule in spec.get("ingress", []):
                if covers(rule.get("ports"), port, named_ports):
                    found |= peers(objects, rule.get("from"))
    return found


def egress_allowed(objects, source, target, port):
    """Whether the NetworkPolicies let workload `source`'s pods open TCP `port` on `target`'s."""
    source_labels = pod_templates(objects)[source]["metadata"].get("labels", {})
    named_ports = container_ports(pod_templates(objects)[target])
    for policy in named(objects, "NetworkPolicy").values():
        spec = policy["spec"]
        if "Egress" in spec.get("policyTypes", []) and selects(spec["podSelector"], source_labels):
            for rule in spec.get("egress", []):
                if covers(rule.get("ports"), port, named_ports) and {"anyone", target} & peers(objects, rule.get("to")):
                    return True
    return False


def nats_config(objects):
    """NATS's container and the text of the configuration file it is started with."""
    pod = named(objects, "StatefulSet")[NATS]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container.get("command", []) + container.get("args", [])
    path = args[args.index("--config") + 1]
    volume = mounted_from(pod, container, path)
    data = named(objects, "ConfigMap")[volume["configMap"]["name"]]["data"]
    return container, data[path.rsplit("/", 1)[1]]


def config_setting(config, key):
    match = re.search(rf"^\s*{key}\s*[:=]\s*\"?([^\"\s]+)", config, re.MULTILINE)
    return match and match.group(1)


def test_nats_runs_jetstream_with_its_store_on_a_claimed_volume(objects):
    nats = named(objects, "StatefulSet")[NATS]
    pod = nats["spec"]["template"]["spec"]
    container, config = nats_config(objects)
    image = container["image"]
    assert image.startswith("nats:") and re.search(r":\d+\.\d+\.\d+", image), f"an official NATS image, pinned: {image}"
    args = container.get("command", []) + container.get("args", [])
    assert {"-js", "--jetstream"} & set(args), f"JetStream is off: {args}"
    # The store directory (a flag wins over the file) is on a volume of the claim template,
    # so the stream and its de-duplication window outlive the pod.
    flag = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-sd", "--store_dir")), None)
    store_dir = flag or config_setting(config, "store_dir")
    assert store_dir, "no JetStream store_dir: it would default to a temporary directory"
    mount = next((m for m in container["volumeMounts"]
                  if (store_dir.rstrip("/") + "/").startswith(m["mountPath"].rstrip("/") + "/")), None)
    assert mount, f"the JetStream store {store_dir} is on no volume"
    claims = {t["metadata"]["name"] for t in nats["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims and mount["name"] not in {v["name"] for v in pod.get("volumes", [])}, mount
    assert not mount.get("readOnly"), mount
    # The probes ask the monitoring port's /healthz; liveness only that JetStream is on.
    monitor = int(config_setting(config, "http_port"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert ports.get(get["port"], get["port"]) == monitor and get["path"].startswith("/healthz"), (probe, get)
    assert "js-enabled-only=true" in container["livenessProbe"]["httpGet"]["path"]
    headless = named(objects, "Service")[nats["spec"]["serviceName"]]
    assert headless["spec"].get("clusterIP") == "None", "a StatefulSet's governing Service is headless"


def test_user_and_order_find_nats_through_its_service(objects):
    deployments = named(objects, "Deployment")
    container, config = nats_config(objects)
    assert int(config_setting(config, "port")) == NATS_CLIENT_PORT
    nats_labels = named(objects, "StatefulSet")[NATS]["spec"]["template"]["metadata"]["labels"]
    for name in sorted(EVENT_SERVICES):
        url = env_of(deployments[name]["spec"]["template"]["spec"]["containers"][0]).get("EVENTS_URL")
        assert url, f"{name} has no EVENTS_URL: its events would stay in its outbox"
        match = re.fullmatch(r"nats://([a-z0-9-]+)((?:\.[a-z0-9-]+)*):(\d+)", url)
        assert match, f"{name}: EVENTS_URL is not nats://host:port: {url!r}"
        service_name, domain, port = match.group(1), match.group(2), int(match.group(3))
        assert domain in ("", f".{NAMESPACE}", f".{NAMESPACE}.svc", f".{NAMESPACE}.svc.cluster.local"), \
            f"{name}: {url} is not a Service of namespace {NAMESPACE}"
        service = named(objects, "Service").get(service_name)
        assert service, f"{name}: EVENTS_URL names no Service: {url}"
        assert selects({"matchLabels": service["spec"]["selector"]}, nats_labels), f"Service {service_name} does not select NATS"
        service_port = next((p for p in service["spec"]["ports"] if p["port"] == port), None)
        assert service_port, f"{name}: Service {service_name} has no port {port}"
        target = service_port.get("targetPort", port)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports.get(target, target) == NATS_CLIENT_PORT, f"{service_name}:{port} does not reach NATS's client port"


def test_only_user_and_order_reach_nats(objects):
    # Default deny in and out, or the allow rules below would not be the only way in.
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress")
               for p in named(objects, "NetworkPolicy").values()), "no default-deny NetworkPolicy"
    assert admitted(objects, NATS, NATS_CLIENT_PORT) == EVENT_SERVICES
    for name in sorted(EVENT_SERVICES):
        assert egress_allowed(objects, name, NATS, NATS_CLIENT_PORT), f"{name} may not open a connection to NATS"
    for name in sorted(set(pod_templates(objects)) - EVENT_SERVICES - {NATS}):
        assert not egress_allowed(objects, name, NATS, NATS_CLIENT_PORT), f"{name} may connect to NATS"
    # NATS's other ports (monitoring) are for scrapers in other namespaces, no pod of this one.
    container, _ = nats_config(objects)
    for port in container["ports"]:
        if port["containerPort"] != NATS_CLIENT_PORT:
            whom = admitted(objects, NATS, port["containerPort"])
            assert all(w.startswith("namespaces ") for w in whom), (port["name"], whom)
