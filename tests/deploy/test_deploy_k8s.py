"""deploy/k8s: every manifest validated offline, and the wiring checked.

Each kustomize root is rendered by deploy_helpers.render (base resources plus
patches, namespace and image transforms) and every resource of every rendering
is validated with kubernetes-validate in strict mode (unknown fields are
errors) for the oldest and the newest Kubernetes version we support. Strimzi's
KafkaTopic is not in those schemas: it is validated against
schemas/strimzi-kafkatopic-v1beta2.schema.json.
"""

from __future__ import annotations

import json
import re

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
    SCHEMAS,
    SERVICE_PORTS,
    SERVICES,
    KustomizeError,
    containers_of,
    labels_match,
    pod_spec,
    quantity,
    render,
    strategic_merge,
    topic_table,
)

OLDEST_SUPPORTED_KUBERNETES = "1.30"
KUBERNETES_VERSIONS = (OLDEST_SUPPORTED_KUBERNETES, latest_version())
CUSTOM_KINDS = {"KafkaTopic"}
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
    for name in SERVICES:
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
    for name, port in SERVICE_PORTS.items():
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
    for name in SERVICES:
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
    assert set(targets) == {f"{n}-web" for n in SERVICES} | {f"{g}-worker" for g in CONSUMER_GROUPS}


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


def test_environment_of_each_container(production):
    config_maps = {c["metadata"]["name"]: c["data"] for c in production.of_kind("ConfigMap")}
    common = {"MONGO_URI", "KAFKA_BOOTSTRAP_SERVERS", "HECHT_TOPIC_PREFIX", "HECHT_LOG_LEVEL",
              "HECHT_JWT_ALGORITHMS", "HECHT_JWKS_URL", "HECHT_JWT_ISSUER", "HECHT_JWT_AUDIENCE"}
    notify_only = {"HECHT_WEBHOOK_ENCRYPTION_KEY", "HECHT_SMTP_URL", "HECHT_SMTP_FROM", "HECHT_WEBHOOKS_ALLOW_PRIVATE"}
    for deployment, labels in _pods(production):
        (container,) = pod_spec(deployment)["containers"]
        values = {}
        for source in container.get("envFrom", []):
            values.update(config_maps[source["configMapRef"]["name"]])
        values.update({e["name"]: e.get("value", "<secret>") for e in container["env"]})
        name = labels["app.kubernetes.io/name"]
        assert common <= set(values), deployment["metadata"]["name"]
        if name == "notify":
            assert notify_only <= set(values)
            assert values["HECHT_WEBHOOKS_ALLOW_PRIVATE"] == "0"
        else:
            assert not (notify_only & set(values)), f"{name} gets notify's settings"
        assert values["HECHT_TOPIC_PREFIX"] == ""
        assert values["HECHT_JWT_ALGORITHMS"] == "RS256"
        assert values["HECHT_JWKS_URL"].startswith("https://")
        assert "HECHT_JWT_SECRET" not in values


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
        expected = set(infrastructure)
        if labels["app.kubernetes.io/component"] == "web":
            expected.add(443)  # the OIDC provider's JWKS
        if labels["app.kubernetes.io/name"] == "notify":
            expected |= {443, 587}  # webhooks, SMTP relay
        assert set(ports) == expected, name
        for peer in ports[27017]:
            assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "mongodb"}}
        for peer in ports[9092]:
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
