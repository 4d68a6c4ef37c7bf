"""deploy/compose: the compose file against the Compose Specification schema,
its variable interpolation, and the wiring of MongoDB, Kafka and the services.

Nothing is started (there is no Docker engine here): these are static checks.
"""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

from .deploy_helpers import (
    COMPOSE_DIR,
    REPO,
    SCHEMAS,
    PORTAL,
    PORTAL_PORT,
    SERVICE_PORTS,
    SERVICES,
    WEB_APPS,
    env_file_keys,
    interpolate,
    interpolate_tree,
    interpolation_errors,
    interpolation_variables,
    strings_in,
    topics_file,
)

COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
COMPOSE_SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
MONGO_NODES = ("mongo-1", "mongo-2", "mongo-3")
KAFKA_BROKERS = ("kafka-1", "kafka-2", "kafka-3")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


@pytest.fixture(scope="module")
def example_env():
    """The variables docker compose reads from .env, as env.example gives them,
    with made-up values where the example leaves a secret empty."""
    env = env_file_keys(COMPOSE_DIR / "env.example")
    return {key: value or f"example-{key.lower()}" for key, value in env.items()}


def _validator():
    raw = (SCHEMAS / "compose-spec.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == COMPOSE_SCHEMA_SHA256, "vendored schema changed: see schemas/README.md"
    schema = json.loads(raw)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _env(service) -> dict:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "use the mapping form of environment"
    return environment


def _hecht_services(services):
    """The containers of the hecht image: the three services' and the portal."""
    return {name: s for name, s in services.items() if name.split("-")[0] in WEB_APPS}


# ---------------------------------------------------------------------------
# schema and interpolation


def test_compose_file_matches_the_compose_specification(compose, example_env):
    validator = _validator()
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    # and once more after interpolation, as docker compose would see it
    resolved = interpolate_tree(compose, example_env)
    errors = list(validator.iter_errors(resolved))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_compose_schema_rejects_an_unknown_service_field(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["members-web"]["enviroment"] = {}
    assert not _validator().is_valid(broken)


def test_every_dollar_is_valid_interpolation(compose):
    problems = [p for text in strings_in(compose) for p in interpolation_errors(text)]
    assert problems == []


def test_interpolation_checker_flags_a_bare_dollar():
    assert interpolation_errors('exec "$@"') != []
    assert interpolation_errors('exec "$$@" ${A:-b} ${B:?msg} $C') == []


def test_every_variable_is_in_env_example(compose):
    used = set()
    for text in strings_in(compose):
        used |= interpolation_variables(text)
    documented = set(env_file_keys(COMPOSE_DIR / "env.example"))
    assert used - documented == set()
    assert documented - used == set(), "env.example lists variables the compose file does not use"


# ---------------------------------------------------------------------------
# MongoDB replica set


def test_mongodb_replica_set(services):
    for node in MONGO_NODES:
        service = services[node]
        assert re.fullmatch(r"mongo:\d+\.\d+\.\d+", service["image"]), service["image"]
        command = service["command"]
        assert command[command.index("--replSet") + 1] == "rs0"
        assert "--keyFile" in command and "--bind_ip_all" in command
        assert service["hostname"] == node
        assert "healthcheck" in service
        assert {v.split(":")[1] for v in service["volumes"]} == {"/data/db", "/data/configdb"}
    init = services["mongo-init"]
    assert init["depends_on"] == {n: {"condition": "service_healthy"} for n in MONGO_NODES}
    script = (COMPOSE_DIR / "mongo-init.js").read_text(encoding="utf-8")
    hosts = json.loads(re.search(r"const hosts = (\[.*?\]);", script).group(1))
    assert hosts == [f"{n}:27017" for n in MONGO_NODES]
    assert 'const replicaSet = "rs0";' in script
    for mount in init["volumes"]:
        assert (COMPOSE_DIR / mount.split(":")[0]).is_file(), mount


def test_each_service_uses_its_own_database_and_user(services, example_env):
    script = (COMPOSE_DIR / "mongo-init.js").read_text(encoding="utf-8")
    created = set(re.findall(r"^\s+(hecht_\w+): \"MONGO_\w+_PASSWORD\",$", script, re.M))
    assert created == {f"hecht_{s}" for s in WEB_APPS}
    init_env = _env(services["mongo-init"])
    for app in WEB_APPS:
        assert f"${{MONGO_{app.upper()}_PASSWORD:?" in init_env[f"MONGO_{app.upper()}_PASSWORD"]
    for name, service in _hecht_services(services).items():
        owner = name.split("-")[0]
        raw = _env(service)["MONGO_URI"]
        assert f"${{MONGO_{owner.upper()}_PASSWORD:?" in raw, name
        uri = urlsplit(interpolate(raw, example_env))
        assert uri.scheme == "mongodb"
        assert uri.path == f"/hecht_{owner}", name
        assert uri.username == f"hecht_{owner}", name
        assert uri.password == example_env[f"MONGO_{owner.upper()}_PASSWORD"]
        assert uri.netloc.split("@")[1].split(",") == [f"{n}:27017" for n in MONGO_NODES]
        assert parse_qs(uri.query) == {"replicaSet": ["rs0"]}


# ---------------------------------------------------------------------------
# Kafka cluster (KRaft)


def test_kafka_kraft_cluster(services):
    ids, cluster_ids = set(), set()
    defaults = topics_file()["defaults"]
    for number, broker in enumerate(KAFKA_BROKERS, start=1):
        service = services[broker]
        assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", service["image"]), service["image"]
        env = _env(service)
        ids.add(env["KAFKA_NODE_ID"])
        cluster_ids.add(env["CLUSTER_ID"])
        assert env["KAFKA_NODE_ID"] == str(number)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == ",".join(
            f"{i}@{b}:9093" for i, b in enumerate(KAFKA_BROKERS, start=1))
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{broker}:9092"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == str(defaults["replicas"])
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == str(defaults["min_insync_replicas"])
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert "ZOOKEEPER" not in " ".join(env)
        assert service["volumes"] == [f"{broker}-data:/var/lib/kafka/data"]
        assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert len(ids) == 3 and len(cluster_ids) == 1
    init = services["kafka-init"]
    assert init["depends_on"] == {b: {"condition": "service_healthy"} for b in KAFKA_BROKERS}
    assert init["entrypoint"] == ["sh", "/opt/hecht/create-topics.sh"]
    assert (COMPOSE_DIR / "create-topics.sh").is_file()


def test_create_topics_script_uses_the_topic_defaults():
    script = (COMPOSE_DIR / "create-topics.sh").read_text(encoding="utf-8")
    defaults = topics_file()["defaults"]
    assert f"REPLICATION_FACTOR={defaults['replicas']}\n" in script
    assert f"MIN_INSYNC_REPLICAS={defaults['min_insync_replicas']}\n" in script
    assert "--if-not-exists" in script


# ---------------------------------------------------------------------------
# the hecht containers


def test_web_worker_and_migrate_containers_per_service(services):
    brokers = ",".join(f"{b}:9092" for b in KAFKA_BROKERS)
    for name in SERVICES:
        web, worker, migrate = services[f"{name}-web"], services[f"{name}-worker"], services[f"{name}-migrate"]
        assert web["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", f"services.{name}.app:create_app()"]
        assert worker["command"] == ["hecht", "worker", name]
        assert migrate["command"] == ["hecht", "migrate", name]  # one database per service
        assert web["ports"] == [f"${{HECHT_PUBLISH_ADDR:-127.0.0.1}}:{SERVICE_PORTS[name]}:8000"]
        assert _env(web)["HECHT_BIND"] == "0.0.0.0:8000"
        assert _env(web)["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
        assert _env(worker)["HECHT_METRICS_PORT"] == "9100"
        assert "9100" in " ".join(worker["healthcheck"]["test"])
        assert migrate["restart"] == "no"
        for service in (web, worker):
            assert service["depends_on"] == {
                f"{s}-migrate": {"condition": "service_completed_successfully"} for s in SERVICES}
            assert service["restart"] == "unless-stopped"
        assert migrate["depends_on"] == {
            "mongo-init": {"condition": "service_completed_successfully"},
            "kafka-init": {"condition": "service_completed_successfully"},
        }
        for service in (web, worker, migrate):
            env = _env(service)
            assert env["KAFKA_BOOTSTRAP_SERVERS"] == brokers
            assert env["HECHT_TOPIC_PREFIX"] == ""
            assert env["HECHT_WEBHOOKS_ALLOW_PRIVATE"] == "0"


def test_restart_policies(services):
    one_shot = {"mongo-init", "kafka-init"} | {f"{s}-migrate" for s in SERVICES}
    for name, service in services.items():
        assert service["restart"] == ("no" if name in one_shot else "unless-stopped"), name
    assert set(services) == one_shot | set(MONGO_NODES) | set(KAFKA_BROKERS) | {PORTAL} | {
        f"{s}-{kind}" for s in SERVICES for kind in ("web", "worker")}


def test_hecht_containers_are_hardened_and_share_one_image(services):
    hecht = _hecht_services(services)
    assert len(hecht) == 10
    assert {s["image"] for s in hecht.values()} == {"${HECHT_IMAGE:-hecht:local}"}
    for name, service in hecht.items():
        assert service["build"] == {"context": "../..", "dockerfile": "Dockerfile"}, name
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert "memory" in service["deploy"]["resources"]["limits"]
    assert (COMPOSE_DIR / "../../Dockerfile").resolve() == REPO / "Dockerfile"


def test_settings_files_and_smtp_as_a_variable(services):
    for name, service in _hecht_services(services).items():
        expected = {"notify": ["hecht.env", "notify.env"], PORTAL: ["hecht.env", "portal.env"]}.get(
            name.split("-")[0], ["hecht.env"])
        assert service["env_file"] == expected, name
    # SMTP is an existing relay, named by a variable: no mail server in the file
    assert not [s for s in services.values() if re.search(r"smtp|mail", str(s.get("image", "")), re.I)]
    notify = env_file_keys(COMPOSE_DIR / "notify.env.example")
    assert set(notify) == {"HECHT_SMTP_URL", "HECHT_SMTP_FROM", "HECHT_WEBHOOK_ENCRYPTION_KEY"}
    assert urlsplit(notify["HECHT_SMTP_URL"]).scheme == "smtp"
    assert urlsplit(notify["HECHT_SMTP_URL"]).port == 587
    shared = env_file_keys(COMPOSE_DIR / "hecht.env.example")
    assert shared["HECHT_JWT_ALGORITHMS"] == "RS256,HS256"   # the provider's and the portal's
    assert {"HECHT_JWKS_URL", "HECHT_JWT_ISSUER", "HECHT_JWT_AUDIENCE", "HECHT_LOG_LEVEL"} <= set(shared)
    # the shared token secret comes from .env, where compose refuses to start without it
    assert "HECHT_JWT_SECRET" not in shared
    portal = env_file_keys(COMPOSE_DIR / "portal.env.example")
    assert set(portal) == {"HECHT_PORTAL_SECRET_KEY", "HECHT_SMTP_URL", "HECHT_SMTP_FROM", "HECHT_PORTAL_SESSION_HOURS"}
    assert portal["HECHT_PORTAL_SECRET_KEY"] == "", "a secret is never filled in by the example"
    assert urlsplit(portal["HECHT_SMTP_URL"]).scheme == "smtp"
    assert urlsplit(portal["HECHT_SMTP_URL"]).port == 587
    assert int(portal["HECHT_PORTAL_SESSION_HOURS"]) > 0


def test_filled_in_settings_stay_out_of_git():
    ignored = (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()
    assert {"/.env", "/hecht.env", "/notify.env", "/portal.env", "/secrets/*"} <= set(ignored)


def test_mongo_key_file_is_a_secret_not_an_image_layer(compose):
    assert compose["secrets"] == {"mongo_keyfile": {"file": "./secrets/mongo-keyfile"}}
    for node in MONGO_NODES:
        assert compose["services"][node]["secrets"] == ["mongo_keyfile"]


# ---------------------------------------------------------------------------
# the portal


def test_portal_container(services, example_env):
    portal = services[PORTAL]
    assert portal["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", "services.portal.app:create_app()"]
    assert portal["restart"] == "unless-stopped"
    # published like the services: on HECHT_PUBLISH_ADDR (127.0.0.1), for a TLS proxy in front
    assert portal["ports"] == [f"${{HECHT_PUBLISH_ADDR:-127.0.0.1}}:{PORTAL_PORT}:8000"]
    assert interpolate(portal["ports"][0], example_env).startswith("127.0.0.1:")
    # its database user exists, and the three APIs answer /healthz, before it starts
    assert portal["depends_on"] == {
        "mongo-init": {"condition": "service_completed_successfully"},
        **{f"{s}-web": {"condition": "service_healthy"} for s in SERVICES},
    }
    assert "healthcheck" not in portal, "the image's HEALTHCHECK (/healthz) makes it healthy"
    env = _env(portal)
    assert env["HECHT_BIND"] == "0.0.0.0:8000"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert env["WEB_CONCURRENCY"] == "${PORTAL_WEB_CONCURRENCY:-2}"
    for name in SERVICES:
        url = urlsplit(env[f"HECHT_{name.upper()}_URL"])
        assert (url.scheme, url.hostname, url.port) == ("http", f"{name}-web", 8000), url
        assert f"{name}-web" in services
    assert env["HECHT_ENV"] not in ("development", "dev", "test"), "the session cookie must stay Secure"
    assert "KAFKA_BOOTSTRAP_SERVERS" not in env, "the portal uses no Kafka"
    portal_url = urlsplit(interpolate(env["HECHT_PORTAL_URL"], example_env))
    assert portal_url.scheme == "https" and portal_url.hostname


def test_portal_url_and_token_secret_are_shared_and_required(services, example_env):
    """notify's e-mails link to the portal; the portal's tokens verify at the APIs."""
    for name, service in _hecht_services(services).items():
        env = _env(service)
        assert env["HECHT_PORTAL_URL"] == "${HECHT_PORTAL_URL:?set HECHT_PORTAL_URL in deploy/compose/.env}", name
        is_web = name == PORTAL or name.endswith("-web")
        assert ("HECHT_JWT_SECRET" in env) == is_web, name
        if is_web:
            assert env["HECHT_JWT_SECRET"] == "${HECHT_JWT_SECRET:?set HECHT_JWT_SECRET in deploy/compose/.env}"
    with pytest.raises(KeyError, match="HECHT_JWT_SECRET"):
        interpolate(_env(services[PORTAL])["HECHT_JWT_SECRET"], {**example_env, "HECHT_JWT_SECRET": ""})
    # the example leaves every secret empty
    example = env_file_keys(COMPOSE_DIR / "env.example")
    assert example["HECHT_JWT_SECRET"] == "" and example["MONGO_PORTAL_PASSWORD"] == ""


def test_root_env_example_lists_the_portal_settings():
    """.env.example (local development, read by honcho) names every variable the
    portal's settings read, with a comment."""
    config = (REPO / "services" / "portal" / "config.py").read_text(encoding="utf-8")
    read = set(re.findall(r"\"(HECHT_[A-Z0-9_]+)\"", config)) | {"HECHT_PORTAL_MONGO_URI"}
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"^#? ?(HECHT_[A-Z0-9_]+)=", example, re.M))
    assert read - mentioned == set()
    values = env_file_keys(REPO / ".env.example")
    assert values["HECHT_PORTAL_URL"] == "http://127.0.0.1:8000"
    assert {values[f"HECHT_{s.upper()}_URL"] for s in SERVICES} == {
        f"http://127.0.0.1:{port}" for port in SERVICE_PORTS.values()}
