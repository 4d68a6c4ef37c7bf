"""Helpers for the offline checks of deploy/: YAML loading, a small kustomize
renderer, Kubernetes quantities, compose interpolation, Dockerfile parsing.

The renderer supports exactly the kustomize fields that deploy/k8s uses
(resources, namespace, images, patches by path with strategic merge). Anything
else in a kustomization.yaml is an error here, so a new field cannot be
silently ignored by the tests: teach the renderer first.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_DIR = DEPLOY / "compose"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# The fixed facts of hecht that the deployment must agree with.
SERVICES = ("members", "agreements", "notify")
SERVICE_PORTS = {"agreements": 8001, "members": 8002, "notify": 8003}
# The portal: web pages over the three APIs; a web process only (no worker, no Kafka).
PORTAL = "portal"
PORTAL_PORT = 8000
WEB_APPS = SERVICES + (PORTAL,)
WEB_PORTS = {**SERVICE_PORTS, PORTAL: PORTAL_PORT}
CONSUMER_GROUPS = ("agreements", "notify")  # members consumes nothing
EXPECTED_TOPICS = (
    "hecht.members",
    "hecht.agreements",
    "hecht.notify",
    "hecht.members.contacts",
    "hecht.agreements.dlq",
    "hecht.notify.dlq",
)

# The kustomize roots under deploy/k8s, each rendered and validated.
K8S_ROOTS = ("base", "topics", "migrate", "overlays/production", "overlays/production-migrate")


def load_docs(path: Path) -> list[dict]:
    """All non-empty YAML documents of a file."""
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def load_one(path: Path):
    docs = load_docs(path)
    assert len(docs) == 1, f"{path}: expected one YAML document, found {len(docs)}"
    return docs[0]


def topics_file() -> dict:
    return load_one(DEPLOY / "topics.yaml")


def topic_table() -> dict[str, dict]:
    return {topic["name"]: topic for topic in topics_file()["topics"]}


# ---------------------------------------------------------------------------
# kustomize, the subset used here


class KustomizeError(Exception):
    pass


SUPPORTED_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
SUPPORTED_PATCH_FIELDS = {"path"}
SUPPORTED_IMAGE_FIELDS = {"name", "newName", "newTag", "digest"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                        "PriorityClass", "StorageClass", "PersistentVolume"}
# Strategic-merge keys of the lists this repository patches.
LIST_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


@dataclass
class Rendering:
    root: Path
    resources: list[dict]
    files: set[Path] = field(default_factory=set)  # every file the rendering read

    def find(self, kind: str, name: str) -> dict:
        found = [r for r in self.resources if r["kind"] == kind and r["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.root}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def of_kind(self, kind: str) -> list[dict]:
        return [r for r in self.resources if r["kind"] == kind]


def strategic_merge(base, patch, list_key: str | None = None):
    """A strategic merge patch, for maps and the keyed lists above."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if key.startswith("$"):
                raise KustomizeError(f"patch directive {key} is not supported by this renderer")
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and list_key in LIST_MERGE_KEYS:
        merge_key = LIST_MERGE_KEYS[list_key]
        merged = copy.deepcopy(base)
        for item in patch:
            index = next((i for i, old in enumerate(merged) if old.get(merge_key) == item.get(merge_key)), None)
            if index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = strategic_merge(merged[index], item)
        return merged
    return copy.deepcopy(patch)


def pod_spec(resource: dict) -> dict | None:
    spec = resource.get("spec", {})
    if resource["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return spec["template"]["spec"]
    if resource["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if resource["kind"] == "Pod":
        return spec
    return None


def containers_of(resource: dict) -> list[dict]:
    spec = pod_spec(resource)
    if spec is None:
        return []
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def image_name(image: str) -> str:
    """`registry/repo:tag@sha256:...` -> `registry/repo`."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image = image[: len(image) - len(last)] + last.split(":", 1)[0]
    return image


def _apply_image(image: str, rule: dict) -> str:
    name = rule.get("newName", image_name(image))
    if "digest" in rule:
        return f"{name}@{rule['digest']}"
    if "newTag" in rule:
        return f"{name}:{rule['newTag']}"
    rest = image[len(image_name(image)):]
    return name + rest


def render(directory: Path) -> Rendering:
    """Render a kustomization directory the way `kustomize build` would (subset)."""
    directory = Path(directory)
    kustomization_path = directory / "kustomization.yaml"
    if not kustomization_path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    kustomization = load_one(kustomization_path)
    unknown = set(kustomization) - SUPPORTED_KUSTOMIZATION_FIELDS
    if unknown:
        raise KustomizeError(f"{kustomization_path}: fields not supported by the test renderer: {sorted(unknown)}")
    if kustomization.get("kind") != "Kustomization":
        raise KustomizeError(f"{kustomization_path}: kind must be Kustomization")

    files = {kustomization_path.resolve()}
    resources: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            sub = render(path)
            resources.extend(sub.resources)
            files |= sub.files
        elif path.is_file():
            resources.extend(copy.deepcopy(load_docs(path)))
            files.add(path)
        else:
            raise KustomizeError(f"{kustomization_path}: resource {entry} does not exist")

    for patch_entry in kustomization.get("patches", []):
        unknown = set(patch_entry) - SUPPORTED_PATCH_FIELDS
        if unknown:
            raise KustomizeError(f"{kustomization_path}: patch fields not supported: {sorted(unknown)}")
        path = (directory / patch_entry["path"]).resolve()
        if not path.is_file():
            raise KustomizeError(f"{kustomization_path}: patch {patch_entry['path']} does not exist")
        files.add(path)
        for patch in load_docs(path):
            kind, name = patch.get("kind"), patch.get("metadata", {}).get("name")
            targets = [i for i, r in enumerate(resources)
                       if r.get("kind") == kind and r.get("metadata", {}).get("name") == name]
            if len(targets) != 1:
                raise KustomizeError(f"{path}: patch for {kind}/{name} matches {len(targets)} resources")
            index = targets[0]
            if resources[index].get("apiVersion") != patch.get("apiVersion"):
                raise KustomizeError(f"{path}: apiVersion {patch.get('apiVersion')} differs from the target's")
            resources[index] = strategic_merge(resources[index], patch)

    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED_KINDS:
                resource.setdefault("metadata", {})["namespace"] = namespace

    for rule in kustomization.get("images", []):
        unknown = set(rule) - SUPPORTED_IMAGE_FIELDS
        if unknown:
            raise KustomizeError(f"{kustomization_path}: image fields not supported: {sorted(unknown)}")
        for resource in resources:
            for container in containers_of(resource):
                if image_name(container["image"]) == rule["name"]:
                    container["image"] = _apply_image(container["image"], rule)

    seen = set()
    for resource in resources:
        key = (resource["kind"], resource["metadata"].get("namespace"), resource["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{directory}: duplicate resource {key}")
        seen.add(key)
    return Rendering(root=directory, resources=resources, files=files)


# ---------------------------------------------------------------------------
# Kubernetes quantities

_SUFFIXES = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def quantity(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


_SELECTOR_OPERATORS = {
    "In": lambda labels, key, values: key in labels and labels[key] in values,
    "NotIn": lambda labels, key, values: key not in labels or labels[key] not in values,
    "Exists": lambda labels, key, values: key in labels,
    "DoesNotExist": lambda labels, key, values: key not in labels,
}


def labels_match(selector: dict, labels: dict) -> bool:
    """A LabelSelector: matchLabels and matchExpressions (all must hold; {} selects all)."""
    assert set(selector) <= {"matchLabels", "matchExpressions"}, f"unsupported selector {selector}"
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        operator, key, values = expression["operator"], expression["key"], expression.get("values", [])
        assert operator in _SELECTOR_OPERATORS, f"unknown selector operator {operator}"
        assert bool(values) == (operator in ("In", "NotIn")), f"values and operator disagree: {expression}"
        if not _SELECTOR_OPERATORS[operator](labels, key, values):
            return False
    return True


# ---------------------------------------------------------------------------
# NetworkPolicy evaluation: may this connection happen?


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (namespace, labels, named container ports) or
    an address outside the cluster (``ip``)."""
    name: str
    namespace: str | None = None
    labels: tuple = ()
    ports: tuple = ()          # (name, number) of the pod's containers
    ip: str | None = None

    @property
    def label_map(self) -> dict:
        return dict(self.labels)

    @property
    def namespace_labels(self) -> dict:
        return {"kubernetes.io/metadata.name": self.namespace}


def pod_endpoint(name: str, namespace: str, labels: dict, ports: dict | None = None) -> Endpoint:
    return Endpoint(name=name, namespace=namespace, labels=tuple(sorted(labels.items())),
                    ports=tuple(sorted((ports or {}).items())))


def external_endpoint(name: str, ip: str) -> Endpoint:
    return Endpoint(name=name, ip=ip)


def _peer_matches(peer: dict, other: Endpoint, policy_namespace: str) -> bool:
    import ipaddress

    if "ipBlock" in peer:
        # Pod addresses are the CNI's business; the manifests use ipBlock for the outside.
        if other.ip is None:
            return False
        address = ipaddress.ip_address(other.ip)
        block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        if address.version != block.version or address not in block:
            return False
        return not any(address in ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", [])
                       if ipaddress.ip_network(e).version == address.version)
    if other.ip is not None:
        return False
    if "namespaceSelector" in peer:
        if not labels_match(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False  # a podSelector alone means the policy's own namespace
    return labels_match(peer.get("podSelector", {}), other.label_map)


def _port_matches(rule_port: dict, port: int, protocol: str, target: Endpoint) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    if "port" not in rule_port:
        return True
    wanted = rule_port["port"]
    if isinstance(wanted, str):  # a named port: the destination pod's container port of that name
        return dict(target.ports).get(wanted) == port
    return wanted <= port <= rule_port.get("endPort", wanted)


def _side_allows(policies, selected: Endpoint, other: Endpoint, port: int, protocol: str,
                 direction: str, target: Endpoint) -> bool:
    """Whether the policies of `selected`'s namespace let it send (Egress) to / receive
    (Ingress) from `other`. A pod no policy selects for that direction is not isolated."""
    if selected.ip is not None:
        return True  # outside the cluster: not ours to judge
    kind, peers_key = ("Egress", "to") if direction == "Egress" else ("Ingress", "from")
    isolated = False
    for policy in policies:
        namespace = policy["metadata"].get("namespace", selected.namespace)
        if namespace != selected.namespace:
            continue
        spec = policy["spec"]
        if kind not in spec.get("policyTypes", ["Ingress"]):
            continue
        if not labels_match(spec["podSelector"], selected.label_map):
            continue
        isolated = True
        for rule in spec.get(kind.lower(), []):
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(peer, other, namespace) for peer in peers):
                continue
            ports = rule.get("ports")
            if ports and not any(_port_matches(p, port, protocol, target) for p in ports):
                continue
            return True
    return not isolated


def connection_allowed(policies, source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """True when the source's egress and the target's ingress policies both allow it
    (the NetworkPolicy semantics of networking.k8s.io/v1; policies of every namespace
    in `policies`, each applying in its own namespace)."""
    return (_side_allows(policies, source, target, port, protocol, "Egress", target)
            and _side_allows(policies, target, source, port, protocol, "Ingress", target))


# ---------------------------------------------------------------------------
# docker compose variable interpolation

_INTERPOLATION = re.compile(
    r"\$\$"                                                        # escaped dollar
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolation_errors(text: str) -> list[str]:
    """`$` uses that docker compose would reject (it needs `$$` for a literal)."""
    errors = []
    position = 0
    while True:
        index = text.find("$", position)
        if index < 0:
            return errors
        match = _INTERPOLATION.match(text, index)
        if not match:
            errors.append(f"invalid interpolation at {text[index:index + 20]!r}")
            position = index + 1
        else:
            if match.group("braced") and match.group("op") is None and match.group("arg"):
                errors.append(f"invalid interpolation {match.group(0)!r}")
            position = match.end()


def interpolation_variables(text: str) -> set[str]:
    names = set()
    for match in _INTERPOLATION.finditer(text):
        name = match.group("braced") or match.group("bare")
        if name:
            names.add(name)
    return names


def interpolate(text: str, env: dict[str, str]) -> str:
    def replace(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            if value is None or (op == ":-" and value == ""):
                return arg
        elif op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise KeyError(f"{name}: {arg}")
        elif op in (":+", "+"):
            return arg if value not in (None, "") or (op == "+" and value is not None) else ""
        return value if value is not None else ""

    return _INTERPOLATION.sub(replace, text)


def interpolate_tree(node, env):
    if isinstance(node, dict):
        return {interpolate_tree(k, env): interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def strings_in(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)
    elif isinstance(node, str):
        yield node


def env_file_keys(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blanks skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


# ---------------------------------------------------------------------------
# Dockerfile


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    instructions = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, arguments = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = ""
    if pending:
        keyword, _, arguments = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    return instructions


def dockerfile_problems(text: str) -> list[str]:
    """Explicit checks standing in for (and alongside) hadolint.

    - every FROM names a pinned image: an explicit version tag or a digest,
      never `latest` or no tag (ARG defaults are resolved);
    - no ADD of a URL (fetch with a checked download instead), no ADD at all
      where COPY does;
    - the final stage switches to a non-root USER, and it is the last USER;
    - the final stage has a HEALTHCHECK (not NONE);
    - no `sudo`, no `apt-get upgrade`, no `pip install` without constraints.
    """
    instructions = parse_dockerfile(text)
    problems = []
    args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    stage_names = set()
    for instruction in instructions:
        if instruction.keyword == "ARG" and not stages:
            name, _, default = instruction.arguments.partition("=")
            args[name.strip()] = default.strip().strip('"')
        if instruction.keyword == "FROM":
            stages.append([])
            parts = instruction.arguments.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            image = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)),
                           parts[0])
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stage_names.add(parts[2].lower())
            if image.lower() in stage_names or image == "scratch":
                pass
            elif "$" in image:
                problems.append(f"line {instruction.line}: FROM {parts[0]} is not resolvable to a pinned image")
            elif "@sha256:" in image:
                pass
            else:
                last = image.rsplit("/", 1)[-1]
                tag = last.split(":", 1)[1] if ":" in last else None
                if tag is None:
                    problems.append(f"line {instruction.line}: FROM {image} has no tag (pin a version)")
                elif tag == "latest" or not re.search(r"\d", tag):
                    problems.append(f"line {instruction.line}: FROM {image} is not pinned to a version")
        elif stages:
            stages[-1].append(instruction)
        if instruction.keyword == "ADD":
            if re.search(r"(^|\s)(https?|ftp)://", instruction.arguments):
                problems.append(f"line {instruction.line}: ADD of a URL")
            else:
                problems.append(f"line {instruction.line}: ADD where COPY would do")
        if instruction.keyword == "RUN":
            if re.search(r"(^|[\s;&|])sudo\s", instruction.arguments):
                problems.append(f"line {instruction.line}: sudo in RUN")
            if re.search(r"apt-get\s+(dist-)?upgrade", instruction.arguments):
                problems.append(f"line {instruction.line}: apt-get upgrade in RUN")
            for command in re.split(r"&&|;", instruction.arguments):
                if re.search(r"pip3?\s+install\b", command) and not re.search(r"(\s-c\s|--constraint|\s-r\s)", command):
                    problems.append(f"line {instruction.line}: pip install without constraints")
    if not stages:
        return problems + ["no FROM"]
    final = stages[-1]
    users = [i for i in final if i.keyword == "USER"]
    if not users:
        problems.append("final stage has no USER (it would run as root)")
    else:
        user = users[-1].arguments.split(":", 1)[0].strip()
        if user in {"root", "0"}:
            problems.append(f"final stage runs as {user}")
    healthchecks = [i for i in final if i.keyword == "HEALTHCHECK"]
    if not healthchecks:
        problems.append("final stage has no HEALTHCHECK")
    elif healthchecks[-1].arguments.upper().startswith("NONE"):
        problems.append("HEALTHCHECK NONE in the final stage")
    return problems
