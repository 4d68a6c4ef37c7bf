"""deploy/k8s: every manifest validated offline, and the wiring checked.

Each kustomize root is rendered by deploy_helpers.render (base resources plus
patches, namespace and image transforms) and every resource of every rendering
is validated with kubernetes-validate in strict mode (unknown fields are
errors) for the oldest and the newest Kubernetes version we support. Strimzi's
KafkaTopic is not in those schemas: it is validated against
schemas/strimzi-kafkatopic-v1beta2.schema.json.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from .deploy_helpers import (
    CONSUMER_GROUPS,
    DEPLOY,
    K8S,
    K8S_ROOTS,
    PORTAL,
    PORTAL_PORT,
    REPO,
    SCHEMAS,
    SERVICE_PORTS,
    SERVICES,
    WEB_APPS,
    WEB_PORTS,
    KustomizeError,
    connection_allowed,
    containers_of,
    external_endpoint,
    labels_match,
    pod_endpoint,
    pod_spec,
    quantity,
    render,
    strategic_merge,
    topic_table,
)

OLDEST_SUPPORTED_KUBERNETES = "1.30"
KUBERNETES_VERSIONS = (OLDEST_SUPPORTED_KUBERNETES, latest_version())
CUSTOM_KINDS = {"KafkaTopic", "KafkaUser"}  # Strimzi: validated against their own schemas
PRODUCTION = "overlays/production"
PRODUCTION_IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9./-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$")


@pytest.fixture(scope="module")
def renderings():
    return {root: render(K8S / root) for root in K8S_ROOTS}


@pytest.fixture(scope="module")
def production(renderings):
    return renderings[PRODUCTION]


def _pods(rendering, component=None):
    """(Deployment, labels) of hecht's Deployments, optionally one component."""
    for deployment in rendering.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if component is None or labels.get("app.kubernetes.io/component") == component:
            yield deployment, labels


# ---------------------------------------------------------------------------
# rendering and schema validation


def test_every_k8s_yaml_file_is_part_of_a_rendering(renderings):
    read = set().union(*(r.files for r in renderings.values()))
    on_disk = {p.resolve() for p in K8S.rglob("*.y*ml")}
    assert on_disk - read == set(), "files no kustomization uses (so nothing validates them)"
    assert len(on_disk) >= 15


def test_no_yaml_anchors_in_k8s_manifests():
    """kustomize's YAML library has had trouble with anchors and merge keys."""
    for path in K8S.rglob("*.y*ml"):
        for token in yaml.scan(path.read_text(encoding="utf-8")):
            assert not isinstance(token, (yaml.AnchorToken, yaml.AliasToken)), f"{path}: anchor or alias"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("root", K8S_ROOTS)
def test_resources_validate_against_kubernetes_schemas(renderings, root, version):
    checked = 0
    for resource in renderings[root].resources:
        if resource["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{root}: {resource['kind']}/{resource['metadata']['name']} "
                        f"(Kubernetes {version}): {error.message} at {list(error.path)}")
        checked += 1
    assert checked > 0 or root == "topics"


def test_kafka_topics_validate_against_strimzi_schema(renderings):
    schema = json.loads((SCHEMAS / "strimzi-kafkatopic-v1beta2.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    topics = renderings["topics"].of_kind("KafkaTopic")
    assert len(topics) == len(topic_table())
    for topic in topics:
        errors = sorted(validator.iter_errors(topic), key=lambda e: list(e.path))
        assert not errors, f"KafkaTopic/{topic['metadata']['name']}: {[e.message for e in errors]}"


def test_strimzi_schema_rejects_what_strimzi_would_not_take():
    schema = json.loads((SCHEMAS / "strimzi-kafkatopic-v1beta2.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic",
            "metadata": {"name": "hecht.x", "labels": {"strimzi.io/cluster": "c"}},
            "spec": {"partitions": 1, "replicas": 1, "config": {}}}
    assert validator.is_valid(good)
    for broken in (
        {**good, "metadata": {"name": "hecht.x"}},                                  # no cluster label
        {**good, "spec": {"partitions": 0, "replicas": 1, "config": {}}},           # no partitions
        {**good, "spec": {"partitions": 1, "replicas": 1, "config": {}, "replica": 3}},  # typo
        {**good, "metadata": {"name": "Hecht_X", "labels": {"strimzi.io/cluster": "c"}}},
    ):
        assert not validator.is_valid(broken)


def test_kubernetes_validation_catches_a_misspelt_field(production):
    deployment = json.loads(json.dumps(production.find("Deployment", "members-web")))
    pod_spec(deployment)["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_SUPPORTED_KUBERNETES, strict=True)


def test_renderer_rejects_unknown_fields_and_stray_patches(tmp_path):
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [cm.yaml]\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        render(tmp_path)
    (tmp_path / "patch.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {k: w}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [cm.yaml]\n"
        "patches: [{path: patch.yaml}]\n")
    with pytest.raises(KustomizeError, match="matches 0 resources"):
        render(tmp_path)


def test_strategic_merge_merges_containers_by_name():
    base = {"containers": [{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}}}, {"name": "b"}]}
    patch = {"containers": [{"name": "a", "resources": {"limits": {"memory": "1Gi"}}}]}
    merged = strategic_merge(base, patch)
    assert merged["containers"][0] == {"name": "a", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    assert merged["containers"][1] == {"name": "b"}


# ---------------------------------------------------------------------------
# the production overlay: what it must contain


def test_overlay_patches_took_effect(production):
    for name in WEB_APPS:
        assert production.find("HorizontalPodAutoscaler", f"{name}-web")["spec"]["minReplicas"] == 3
    worker = pod_spec(production.find("Deployment", "notify-worker"))["containers"][0]
    assert worker["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
    assert worker["command"] == ["hecht", "worker", "notify"]  # merged, not replaced


def test_everything_namespaced_is_in_the_hecht_namespace(production):
    namespace = production.find("Namespace", "hecht")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for resource in production.resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "hecht", resource["metadata"]["name"]


def test_web_and_worker_deployments_per_service(production):
    for name in SERVICES:
        web = pod_spec(production.find("Deployment", f"{name}-web"))["containers"]
        worker = pod_spec(production.find("Deployment", f"{name}-worker"))["containers"]
        assert [c["name"] for c in web] == ["web"] and [c["name"] for c in worker] == ["worker"]
        assert web[0]["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", f"services.{name}.app:create_app()"]
        assert worker[0]["command"] == ["hecht", "worker", name]
        assert {p["name"]: p["containerPort"] for p in web[0]["ports"]} == {"http": 8000}
        assert {p["name"]: p["containerPort"] for p in worker[0]["ports"]} == {"metrics": 9100}
        env = {e["name"]: e.get("value") for e in worker[0]["env"]}
        assert env["HECHT_METRICS_PORT"] == "9100"
        web_env = {e["name"]: e.get("value") for e in web[0]["env"]}
        assert web_env["HECHT_BIND"] == "0.0.0.0:8000"
        # one /metrics for all gunicorn workers; the directory is on the writable /tmp
        assert web_env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_portal_is_one_web_deployment_from_the_same_image(production):
    (web,) = pod_spec(production.find("Deployment", "portal-web"))["containers"]
    assert web["name"] == "web"
    assert web["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", "services.portal.app:create_app()"]
    assert {p["name"]: p["containerPort"] for p in web["ports"]} == {"http": PORTAL_PORT}
    env = {e["name"]: e.get("value") for e in web["env"]}
    assert env["HECHT_BIND"] == f"0.0.0.0:{PORTAL_PORT}"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    members = pod_spec(production.find("Deployment", "members-web"))["containers"][0]
    assert web["image"] == members["image"]
    # mirrors members-web: rollout, termination, spread, lifecycle, volumes, security
    portal_deployment, members_deployment = production.find("Deployment", "portal-web"), production.find("Deployment", "members-web")
    assert portal_deployment["spec"]["strategy"] == members_deployment["spec"]["strategy"]
    portal_pod, members_pod = pod_spec(portal_deployment), pod_spec(members_deployment)
    for key in ("terminationGracePeriodSeconds", "securityContext", "volumes", "serviceAccountName"):
        assert portal_pod[key] == members_pod[key], key
    assert [c["topologyKey"] for c in portal_pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    for constraint in portal_pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"] == portal_deployment["spec"]["selector"]
    for key in ("securityContext", "lifecycle", "volumeMounts", "startupProbe", "livenessProbe",
                "readinessProbe"):
        assert web[key] == members[key], key
    # a web process only: no worker, no worker metrics Service
    assert [d["metadata"]["name"] for d, labels in _pods(production)
            if labels["app.kubernetes.io/name"] == PORTAL] == ["portal-web"]


def test_probes(production):
    for deployment, labels in _pods(production, "web"):
        container = pod_spec(deployment)["containers"][0]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for deployment, labels in _pods(production, "worker"):
        container = pod_spec(deployment)["containers"][0]
        assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_images_are_the_released_image(renderings):
    images = {
        root: {c["image"] for r in renderings[root].resources for c in containers_of(r)}
        for root in (PRODUCTION, "overlays/production-migrate")
    }
    assert images[PRODUCTION] == images["overlays/production-migrate"]
    (image,) = images[PRODUCTION]
    assert PRODUCTION_IMAGE.match(image), image
    assert not image.endswith((":latest", ":dev"))


def test_resources_requests_and_limits(renderings):
    for root in (PRODUCTION, "overlays/production-migrate"):
        for resource in renderings[root].resources:
            for container in containers_of(resource):
                where = f"{resource['metadata']['name']}/{container['name']}"
                requests, limits = container["resources"]["requests"], container["resources"]["limits"]
                for key in ("cpu", "memory"):
                    assert quantity(requests[key]) <= quantity(limits[key]), where
                assert set(requests) == set(limits) == {"cpu", "memory"}, where


def test_pods_meet_the_restricted_pod_security_standard(renderings):
    for root in (PRODUCTION, "overlays/production-migrate"):
        for resource in renderings[root].resources:
            spec = pod_spec(resource)
            if spec is None:
                continue
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert spec["automountServiceAccountToken"] is False
            assert not spec.get("hostNetwork") and not spec.get("hostPID")
            for container in containers_of(resource):
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False
                assert context["readOnlyRootFilesystem"] is True
                assert context["capabilities"] == {"drop": ["ALL"]}
                assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_selectors_match_their_pods(production):
    for deployment, labels in _pods(production):
        assert labels_match(deployment["spec"]["selector"], labels)
        assert labels["app.kubernetes.io/part-of"] == "hecht"
        others = [d for d, l in _pods(production) if d is not deployment and labels_match(deployment["spec"]["selector"], l)]
        assert not others, f"{deployment['metadata']['name']}'s selector also matches other Deployments"


def test_services_expose_the_documented_ports(production):
    for name, port in WEB_PORTS.items():
        service = production.find("Service", name)
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(port, "http")]
        web_labels = production.find("Deployment", f"{name}-web")["spec"]["template"]["metadata"]["labels"]
        assert labels_match({"matchLabels": service["spec"]["selector"]}, web_labels)
    for service in production.of_kind("Service"):
        matched = [d for d, labels in _pods(production) if labels_match({"matchLabels": service["spec"]["selector"]}, labels)]
        assert len(matched) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in containers_of(matched[0]) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_horizontal_pod_autoscalers(production):
    topics = topic_table()
    event_partitions = min(t["partitions"] for n, t in topics.items() if not n.endswith(".dlq"))
    targets = {}
    for hpa in production.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        deployment = production.find(ref["kind"], ref["name"])
        assert "replicas" not in deployment["spec"], f"{ref['name']}: the HPA owns the replica count"
        assert hpa["spec"]["minReplicas"] >= 2
        targets[ref["name"]] = hpa["spec"]
    for name in WEB_APPS:
        (metric,) = targets[f"{name}-web"]["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"]["type"] == "Utilization"
    for group in CONSUMER_GROUPS:
        spec = targets[f"{group}-worker"]
        (metric,) = spec["metrics"]
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] == "hecht_consumer_lag"
        assert metric["external"]["metric"]["selector"] == {"matchLabels": {"group": group}}
        # replicas beyond the partition count would only sit idle in the group
        assert spec["maxReplicas"] <= event_partitions
        assert f"hecht.{group}.dlq" in topics
    # members has no consumer group: a fixed number of relay replicas
    assert "members-worker" not in targets
    assert production.find("Deployment", "members-worker")["spec"]["replicas"] >= 2
    assert set(targets) == {f"{n}-web" for n in WEB_APPS} | {f"{g}-worker" for g in CONSUMER_GROUPS}


def test_every_deployment_has_a_pod_disruption_budget(production):
    budgets = production.of_kind("PodDisruptionBudget")
    for deployment, labels in _pods(production):
        covering = [b for b in budgets if labels_match(b["spec"]["selector"], labels)]
        assert len(covering) == 1, deployment["metadata"]["name"]
        assert covering[0]["spec"].get("maxUnavailable") == 1


def test_config_and_secret_references(renderings):
    production = renderings[PRODUCTION]
    config_maps = {c["metadata"]["name"]: c["data"] for c in production.of_kind("ConfigMap")}
    assert production.of_kind("Secret") == [], "Secrets are created in the cluster, never committed"
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    secret_refs = set()
    for root in (PRODUCTION, "overlays/production-migrate"):
        for resource in renderings[root].resources:
            for container in containers_of(resource):
                for source in container.get("envFrom", []):
                    assert source["configMapRef"]["name"] in config_maps
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        secret_refs.add((ref["name"], ref["key"]))
    assert secret_refs == {
        ("members-secrets", "MONGO_URI"),
        ("agreements-secrets", "MONGO_URI"),
        ("notify-secrets", "MONGO_URI"),
        ("notify-secrets", "HECHT_WEBHOOK_ENCRYPTION_KEY"),
        ("notify-secrets", "HECHT_SMTP_URL"),
        ("portal-secrets", "MONGO_URI"),
        ("portal-secrets", "HECHT_PORTAL_SECRET_KEY"),
        ("portal-secrets", "HECHT_SMTP_URL"),
        ("hecht-jwt", "HECHT_JWT_SECRET"),
    }
    assert _secrets_documented(readme) == secret_refs, "deploy/README.md's `kubectl create secret` commands"


def _secrets_documented(readme: str) -> set[tuple[str, str]]:
    """(secret, key) pairs created by the README's `kubectl create secret generic` commands."""
    documented = set()
    for command in re.findall(r"create secret generic (\S+)((?:[^\n]*\\\n)*[^\n]*)", readme):
        name, rest = command
        for key in re.findall(r"--from-(?:literal|file)=([A-Za-z_][A-Za-z0-9_]*)=", rest):
            documented.add((name, key))
    return documented


def test_secret_documentation_parser():
    text = "kubectl -n hecht create secret generic a-secrets \\\n  --from-literal=K1='x' \\\n  --from-file=K2=./f\nother --from-literal=K3=y\n"
    assert _secrets_documented(text) == {("a-secrets", "K1"), ("a-secrets", "K2")}


def _environment(production, deployment) -> dict[str, str]:
    """A Deployment's one container's environment: ConfigMaps, then env (Secrets as <secret>)."""
    config_maps = {c["metadata"]["name"]: c["data"] for c in production.of_kind("ConfigMap")}
    (container,) = pod_spec(deployment)["containers"]
    values = {}
    for source in container.get("envFrom", []):
        values.update(config_maps[source["configMapRef"]["name"]])
    values.update({e["name"]: e.get("value", "<secret>") for e in container["env"]})
    return values


def test_environment_of_each_container(production):
    common = {"MONGO_URI", "KAFKA_BOOTSTRAP_SERVERS", "HECHT_TOPIC_PREFIX", "HECHT_LOG_LEVEL",
              "HECHT_JWT_ALGORITHMS", "HECHT_JWKS_URL", "HECHT_JWT_ISSUER", "HECHT_JWT_AUDIENCE",
              "HECHT_PORTAL_URL"}
    notify_only = {"HECHT_WEBHOOK_ENCRYPTION_KEY", "HECHT_WEBHOOKS_ALLOW_PRIVATE"}
    mail = {"HECHT_SMTP_URL", "HECHT_SMTP_FROM"}  # notify's messages, the portal's sign-in links
    portal_only = {"HECHT_MEMBERS_URL", "HECHT_AGREEMENTS_URL", "HECHT_NOTIFY_URL", "HECHT_PORTAL_SECRET_KEY",
                   "HECHT_ENV", "HECHT_PORTAL_SESSION_HOURS"}
    for deployment, labels in _pods(production):
        values = _environment(production, deployment)
        name, component = labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"]
        where = deployment["metadata"]["name"]
        assert common <= set(values), where
        if name == "notify":
            assert notify_only <= set(values)
            assert values["HECHT_WEBHOOKS_ALLOW_PRIVATE"] == "0"
        else:
            assert not (notify_only & set(values)), f"{where} gets notify's settings"
        assert (mail <= set(values)) == (name in ("notify", PORTAL)), where
        if name not in ("notify", PORTAL):
            assert not (mail & set(values)), f"{where} gets the SMTP settings"
        if name == PORTAL:
            assert portal_only <= set(values)
        else:
            assert not (portal_only & set(values)), f"{where} gets the portal's settings"
        assert values["HECHT_TOPIC_PREFIX"] == ""
        # people's and integrators' tokens: the OIDC provider's, verified with its JWKS
        # (RS256) and the portal's (HS256, shared secret, its own issuer: hecht/auth.py)
        assert values["HECHT_JWT_ALGORITHMS"] == "RS256,HS256"
        assert values["HECHT_JWKS_URL"].startswith("https://")
        # the portal signs its short-lived tokens with the shared secret and the APIs'
        # web pods verify them; never a value in a manifest, and not for the workers
        assert ("HECHT_JWT_SECRET" in values) == (component == "web"), where
        if "HECHT_JWT_SECRET" in values:
            assert values["HECHT_JWT_SECRET"] == "<secret>"
        # e-mails link to the portal's public, TLS address
        assert urlsplit(values["HECHT_PORTAL_URL"]).scheme == "https"


def test_every_web_pod_has_what_production_needs_to_start(production):
    """HECHT_ENV unset is production: a web process refuses to start without its own JWT secret,
    and the APIs without an issuer and an audience (hecht/config.py require_safe)."""
    from hecht.config import Settings, production_problems
    pods = list(_pods(production, "web"))
    assert {labels["app.kubernetes.io/name"] for _, labels in pods} == set(SERVICES) | {PORTAL}
    for deployment, labels in pods:
        values = _environment(production, deployment)
        name = labels["app.kubernetes.io/name"]
        assert values.get("HECHT_ENV", "production").lower() not in ("development", "dev", "test"), name
        secret = "s" * 48 if values.get("HECHT_JWT_SECRET") == "<secret>" else values.get("HECHT_JWT_SECRET", "")
        settings = Settings(service=name, mongo_uri="mongodb://x/y", kafka_bootstrap_servers="x",
                            jwt_secret=secret, jwt_issuer=values.get("HECHT_JWT_ISSUER") or None,
                            jwt_audience=values.get("HECHT_JWT_AUDIENCE") or None, development=False)
        assert production_problems(settings, verifies_tokens=name != PORTAL) == [], name


def test_portal_settings(production):
    values = _environment(production, production.find("Deployment", "portal-web"))
    # the three APIs through their Services (same namespace), on their documented ports
    for name in SERVICES:
        url = urlsplit(values[f"HECHT_{name.upper()}_URL"])
        assert url.scheme == "http" and url.path in ("", "/"), url
        assert url.hostname.split(".")[0] == name and url.hostname in (
            name, f"{name}.hecht", f"{name}.hecht.svc", f"{name}.hecht.svc.cluster.local"), url
        assert url.port == SERVICE_PORTS[name]
        assert production.find("Service", name)["spec"]["ports"][0]["port"] == url.port
    # the development switch (plain-http cookies, links in the log) stays off
    assert values["HECHT_ENV"].lower() not in ("development", "dev", "test")
    assert int(values["HECHT_PORTAL_SESSION_HOURS"]) > 0
    for secret in ("MONGO_URI", "HECHT_PORTAL_SECRET_KEY", "HECHT_SMTP_URL", "HECHT_JWT_SECRET"):
        assert values[secret] == "<secret>", secret
    portal_url = urlsplit(values["HECHT_PORTAL_URL"])
    assert portal_url.scheme == "https" and portal_url.path in ("", "/") and portal_url.hostname


def _names_read_by_the_code() -> set[str]:
    """Upper-case string constants of hecht/, services/ and deploy/gunicorn.conf.py:
    the environment variables the code can read."""
    names = set()
    paths = [*(REPO / "hecht").rglob("*.py"), *(REPO / "services").rglob("*.py"), DEPLOY / "gunicorn.conf.py"]
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value):
                names.add(node.value)
    return names


def test_every_setting_given_to_a_container_is_read_by_the_code(renderings):
    """A misspelt or renamed variable would be silently ignored by the process."""
    read = _names_read_by_the_code()
    config_maps = {c["metadata"]["name"]: c["data"] for c in renderings[PRODUCTION].of_kind("ConfigMap")}
    for root in (PRODUCTION, "overlays/production-migrate"):
        for resource in renderings[root].resources:
            for container in containers_of(resource):
                given = {e["name"] for e in container.get("env", [])}
                for source in container.get("envFrom", []):
                    given |= set(config_maps[source["configMapRef"]["name"]])
                unread = given - read
                assert not unread, f"{resource['metadata']['name']}/{container['name']}: {sorted(unread)}"


def test_portal_ingress(renderings, production):
    (ingress,) = production.of_kind("Ingress")  # only the portal is published here
    assert ingress["metadata"]["name"] == PORTAL
    spec = ingress["spec"]
    hecht_config = production.find("ConfigMap", "hecht-config")["data"]
    portal_host = urlsplit(hecht_config["HECHT_PORTAL_URL"]).hostname
    (rule,) = spec["rules"]
    assert rule["host"] == portal_host, "the Ingress host and HECHT_PORTAL_URL (e-mail links) must agree"
    assert rule["host"] != renderings["base"].find("Ingress", PORTAL)["spec"]["rules"][0]["host"], \
        "the production overlay names the host"
    (tls,) = spec["tls"]
    assert tls["hosts"] == [portal_host] and tls["secretName"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = production.find("Service", backend["name"])
    assert backend["port"] == {"name": "http"}
    assert "http" in {p["name"] for p in service["spec"]["ports"]}
    web_labels = production.find("Deployment", "portal-web")["spec"]["template"]["metadata"]["labels"]
    assert labels_match({"matchLabels": service["spec"]["selector"]}, web_labels)
    # the controller class whose namespace the NetworkPolicy hecht-web-ingress admits
    assert spec["ingressClassName"] == "nginx"
    admitted = production.find("NetworkPolicy", "hecht-web-ingress")["spec"]["ingress"][0]["from"]
    assert admitted == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]


def test_migration_job(renderings):
    job = renderings["overlays/production-migrate"].find("Job", "hecht-migrate")
    steps = containers_of(job)
    assert [c["name"] for c in steps] == ["members", "agreements", "notify"]
    for step in steps:
        # the service argument matters: without it `hecht migrate` would put all
        # three services' indexes into the one database of this MONGO_URI
        assert step["command"] == ["hecht", "migrate", step["name"]]
        (mongo,) = [e for e in step["env"] if e["name"] == "MONGO_URI"]
        assert mongo["valueFrom"]["secretKeyRef"]["name"] == f"{step['name']}-secrets"
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert 0 < job["spec"]["backoffLimit"] <= 6 and job["spec"]["activeDeadlineSeconds"] > 0
    assert job["metadata"]["namespace"] == "hecht"


# ---------------------------------------------------------------------------
# NetworkPolicies, evaluated for each kind of pod


def _allowed_egress_ports(rendering, labels):
    """{port: [peers]} a pod with these labels may reach, and whether egress is isolated."""
    ports, isolated = {}, False
    for policy in rendering.of_kind("NetworkPolicy"):
        spec = policy["spec"]
        if not labels_match(spec["podSelector"], labels) or "Egress" not in spec["policyTypes"]:
            continue
        isolated = True
        for rule in spec.get("egress", []):
            for port in rule.get("ports", [{"port": "any"}]):
                ports.setdefault(port["port"], []).extend(rule.get("to", [{"anywhere": True}]))
    return ports, isolated


def _allowed_ingress_ports(rendering, labels):
    ports, isolated = set(), False
    for policy in rendering.of_kind("NetworkPolicy"):
        spec = policy["spec"]
        if not labels_match(spec["podSelector"], labels) or "Ingress" not in spec["policyTypes"]:
            continue
        isolated = True
        for rule in spec.get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']}: ingress from anywhere"
            ports |= {p["port"] for p in rule["ports"]}
    return ports, isolated


def test_network_policies_limit_egress(renderings):
    production = renderings[PRODUCTION]
    job_labels = renderings["overlays/production-migrate"].find("Job", "hecht-migrate")["spec"]["template"]["metadata"]["labels"]
    pods = [(d["metadata"]["name"], labels) for d, labels in _pods(production)] + [("hecht-migrate", job_labels)]
    infrastructure = {53, 27017, 9092, 9093}
    for name, labels in pods:
        ports, isolated = _allowed_egress_ports(production, labels)
        assert isolated, f"{name}: egress not restricted"
        assert "any" not in ports, f"{name}: egress to any port"
        if labels["app.kubernetes.io/name"] == PORTAL:
            expected = {53, 27017, 8000, 587}  # DNS, MongoDB, the three APIs, SMTP relay: no Kafka, no 443
        else:
            expected = set(infrastructure)
            if labels["app.kubernetes.io/component"] == "web":
                expected.add(443)  # the OIDC provider's JWKS
            if labels["app.kubernetes.io/name"] == "notify":
                expected |= {443, 587}  # webhooks, SMTP relay
        assert set(ports) == expected, name
        for peer in ports[27017]:
            assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "mongodb"}}
        for peer in ports.get(9092, []):
            assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}


def test_notify_webhook_egress_excludes_private_networks(production):
    policy = production.find("NetworkPolicy", "notify-egress")
    https = [rule for rule in policy["spec"]["egress"] if {"protocol": "TCP", "port": 443} in rule["ports"]]
    (rule,) = https
    blocks = {peer["ipBlock"]["cidr"]: set(peer["ipBlock"]["except"]) for peer in rule["to"]}
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"} <= blocks["0.0.0.0/0"]
    assert {"fc00::/7", "fe80::/10"} <= blocks["::/0"]


def test_network_policies_limit_ingress(production):
    for deployment, labels in _pods(production):
        ports, isolated = _allowed_ingress_ports(production, labels)
        assert isolated
        component = labels["app.kubernetes.io/component"]
        named = {p["name"] for c in containers_of(deployment) for p in c["ports"]}
        assert ports & named == ({"http"} if component == "web" else {"metrics"}), deployment["metadata"]["name"]


# --- connections, evaluated peer by peer (both ends' policies must allow them) ---

PROBE_PORTS = (53, 443, 587, 8000, 9092, 9093, 9100, 27017)


def _hecht_pod(production, deployment_name):
    deployment = production.find("Deployment", deployment_name)
    ports = {p["name"]: p["containerPort"] for c in containers_of(deployment) for p in c.get("ports", [])}
    return pod_endpoint(deployment_name, "hecht", deployment["spec"]["template"]["metadata"]["labels"], ports)


def _world(production):
    """hecht's pods and what is around them: other namespaces' pods, outside addresses."""
    pods = {d["metadata"]["name"]: _hecht_pod(production, d["metadata"]["name"]) for d, _ in _pods(production)}
    others = {
        "ingress-controller": pod_endpoint("ingress-controller", "ingress-nginx",
                                           {"app.kubernetes.io/name": "ingress-nginx"}),
        "prometheus": pod_endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
        "kube-dns": pod_endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}),
        "mongodb": pod_endpoint("mongodb", "mongodb", {"app": "mongo"}),
        "kafka": pod_endpoint("kafka", "kafka", {"strimzi.io/cluster": "hecht-kafka"}),
        # a pod elsewhere wearing the portal's labels: podSelector peers are namespace-local
        "impostor": pod_endpoint("impostor", "default", {"app.kubernetes.io/name": PORTAL,
                                                          "app.kubernetes.io/component": "web",
                                                          "app.kubernetes.io/part-of": "hecht"}),
        "smtp-relay": external_endpoint("smtp-relay", "198.51.100.25"),
        "internet": external_endpoint("internet", "93.184.215.14"),
        "private-address": external_endpoint("private-address", "10.20.30.40"),
    }
    return pods, others


def _reachable(policies, source, targets):
    """{(target name, port)} the source may open a TCP connection to (53 also over UDP)."""
    allowed = set()
    for target in targets:
        for port in PROBE_PORTS:
            if connection_allowed(policies, source, target, port) or (
                    port == 53 and connection_allowed(policies, source, target, port, "UDP")):
                allowed.add((target.name, port))
    return allowed


def test_portal_egress_is_exactly_the_apis_mongodb_dns_and_smtp(production):
    policies = production.of_kind("NetworkPolicy")
    pods, others = _world(production)
    portal = pods["portal-web"]
    reachable = _reachable(policies, portal, [*pods.values(), *others.values()])
    assert reachable == {
        ("members-web", 8000), ("agreements-web", 8000), ("notify-web", 8000),
        ("mongodb", 27017), ("kube-dns", 53),
        # the SMTP relay, wherever it runs (the rule names a port, not a peer)
        ("smtp-relay", 587), ("internet", 587), ("private-address", 587),
        ("ingress-controller", 587), ("prometheus", 587), ("kube-dns", 587), ("mongodb", 587),
        ("kafka", 587), ("impostor", 587),
    }
    # in particular: no Kafka, no HTTPS out, not the workers, not itself
    assert not {("kafka", 9092), ("internet", 443)} & reachable
    assert not {t for t in reachable if t[0].endswith("-worker") or t[0] == "portal-web"}


def test_only_the_ingress_controller_and_prometheus_reach_the_portal(production):
    policies = production.of_kind("NetworkPolicy")
    pods, others = _world(production)
    portal = pods["portal-web"]
    sources = {name: endpoint for name, endpoint in [*pods.items(), *others.items()] if name != "portal-web"}
    reaching = {(name, port) for name, source in sources.items() for port in PROBE_PORTS
                if connection_allowed(policies, source, portal, port)}
    # Prometheus scrapes /metrics on the web port, as for every hecht pod (hecht-ingress-metrics)
    assert reaching == {("ingress-controller", PORTAL_PORT), ("prometheus", PORTAL_PORT)}


def test_the_apis_web_pods_accept_the_portal_and_nothing_else_new(production):
    policies = production.of_kind("NetworkPolicy")
    pods, others = _world(production)
    for name in SERVICES:
        web, worker = pods[f"{name}-web"], pods[f"{name}-worker"]
        sources = {n: e for n, e in [*pods.items(), *others.items()] if n != f"{name}-web"}
        reaching = {(n, port) for n, source in sources.items() for port in PROBE_PORTS
                    if connection_allowed(policies, source, web, port)}
        assert reaching == {("ingress-controller", 8000), ("prometheus", 8000), ("portal-web", 8000)}, name
        # the portal gets the API, not the workers (their metrics port is Prometheus')
        assert not any(connection_allowed(policies, pods["portal-web"], worker, port) for port in PROBE_PORTS)
        # the APIs do not call the portal, nor each other
        for other in SERVICES:
            if other != name:
                assert not connection_allowed(policies, pods[f"{other}-web"], web, 8000)


def test_other_pods_keep_their_reach(production):
    """The portal's policies changed nothing for the three services' pods."""
    policies = production.of_kind("NetworkPolicy")
    pods, others = _world(production)
    for name in SERVICES:
        for component in ("web", "worker"):
            source = pods[f"{name}-{component}"]
            reachable = _reachable(policies, source, [*pods.values(), *others.values()])
            assert {("kafka", 9092), ("kafka", 9093), ("mongodb", 27017), ("kube-dns", 53)} <= reachable
            assert not {t for t in reachable if t[0] in pods}, f"{source.name} reaches hecht pods"
            assert (("internet", 443) in reachable) == (component == "web" or name == "notify")
            assert (("private-address", 443) in reachable) == (component == "web")  # the JWKS rule, see README
            assert (("smtp-relay", 587) in reachable) == (name == "notify")


def test_network_policy_evaluator():
    web = {"app.kubernetes.io/name": "a", "app.kubernetes.io/component": "web"}
    inside = pod_endpoint("a", "ns", web, {"http": 8000})
    client = pod_endpoint("c", "ns", {"role": "client"})
    elsewhere = pod_endpoint("c2", "other", {"role": "client"})
    deny = {"metadata": {"name": "deny", "namespace": "ns"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    allow_in = {"metadata": {"name": "in", "namespace": "ns"},
                "spec": {"podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In",
                                                               "values": ["a"]}]},
                         "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                      "ports": [{"protocol": "TCP", "port": "http"}]}]}}
    allow_out = {"metadata": {"name": "out", "namespace": "ns"},
                 "spec": {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                          "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": 8000}]},
                                     {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]}}
    policies = [deny, allow_in, allow_out]
    assert connection_allowed(policies, client, inside, 8000)
    assert not connection_allowed(policies, client, inside, 8001)       # named port resolves to 8000 only
    assert not connection_allowed([deny, allow_in], client, inside, 8000)  # egress denied at the source
    assert not connection_allowed(policies, elsewhere, inside, 8000)    # podSelector: own namespace only
    assert not connection_allowed(policies, inside, client, 8000)       # the way back is another connection
    assert connection_allowed(policies, client, external_endpoint("x", "93.184.215.14"), 25)
    assert not connection_allowed(policies, client, external_endpoint("y", "10.1.2.3"), 25)
    assert connection_allowed([], client, inside, 1234)                  # no policy: not isolated
    assert labels_match({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["v"]}]}, {})
    assert not labels_match({"matchExpressions": [{"key": "k", "operator": "Exists"}]}, {"j": "v"})
