"""Kafka principals and ACLs (issue 17): who may read which topic.

    deploy/k8s/topics/kafkausers.yaml (Strimzi KafkaUsers)
        == the table in deploy/README.md (what the compose deployment documents)
        and both agree with hecht/topics.py: integrators read hecht.members and
        hecht.agreements only; only notify reads hecht.members.contacts; members writes it.
"""
from __future__ import annotations

import json
import re

import jsonschema
import pytest

from hecht import topics

from .deploy_helpers import DEPLOY, K8S, SCHEMAS, render, topic_table

SERVICES = {"members": "hecht-members", "agreements": "hecht-agreements", "notify": "hecht-notify"}
INTEGRATOR = "hecht-integrator-example"
READ, WRITE = {"Read", "Describe"}, {"Write", "Describe"}


@pytest.fixture(scope="module")
def users() -> dict[str, dict]:
    return {u["metadata"]["name"]: u for u in render(K8S / "topics").of_kind("KafkaUser")}


def _matches(resource: dict, kind: str, name: str) -> bool:
    if resource.get("type") != kind:
        return False
    pattern = resource.get("patternType", "literal")
    value = resource["name"]
    return value == "*" or (name.startswith(value) if pattern == "prefix" else name == value)


def allowed(user: dict, kind: str, name: str, operations: set[str]) -> bool:
    """Does the user's ACL allow every one of ``operations`` on the resource (literal or prefix)?"""
    granted: set[str] = set()
    for acl in user["spec"]["authorization"]["acls"]:
        if acl.get("type", "allow") == "allow" and _matches(acl["resource"], kind, name):
            granted |= set(acl["operations"])
    return "All" in granted or operations <= granted


def readers(users: dict, topic: str) -> set[str]:
    return {n for n, u in users.items() if allowed(u, "topic", topic, {"Read"})}


def writers(users: dict, topic: str) -> set[str]:
    return {n for n, u in users.items() if allowed(u, "topic", topic, {"Write"})}


def test_kafka_users_validate_against_the_strimzi_schema(users):
    schema = json.loads((SCHEMAS / "strimzi-kafkauser-v1beta2.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert set(users) == set(SERVICES.values()) | {INTEGRATOR}
    for name, user in users.items():
        errors = [e.message for e in validator.iter_errors(user)]
        assert not errors, f"KafkaUser/{name}: {errors}"
        assert user["metadata"]["namespace"] == "kafka"
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"


def test_the_schema_rejects_what_strimzi_would_not_take(users):
    validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "strimzi-kafkauser-v1beta2.schema.json")
                                                           .read_text()))
    broken = json.loads(json.dumps(users["hecht-notify"]))
    broken["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    assert list(validator.iter_errors(broken))


def test_only_notify_reads_the_contacts_topic_and_only_members_writes_it(users):
    contacts = topics.MEMBER_CONTACTS
    assert readers(users, contacts) == {"hecht-notify"}
    assert writers(users, contacts) == {"hecht-members"}
    assert {n for n, u in users.items() if allowed(u, "topic", contacts, {"Describe"})} == \
        {"hecht-notify", "hecht-members"}


def test_integrators_read_the_public_event_topics_and_nothing_else(users):
    integrator = users[INTEGRATOR]
    readable = {t for t in topic_table() if allowed(integrator, "topic", t, {"Read"})}
    assert readable == {topics.MEMBERS, topics.AGREEMENTS}
    assert not any(allowed(integrator, "topic", t, {"Write"}) for t in topic_table())
    # its consumer groups are its own: it can never join (and read as) a service's group
    for group in (*topics.CONSUMER_GROUPS, topics.CONTACTS_GROUP):
        assert not allowed(integrator, "group", group, {"Read"})


def test_each_service_reads_what_it_consumes_and_writes_only_its_own_topics(users):
    from hecht.asyncapi import CONSUMERS
    for service, principal in SERVICES.items():
        user = users[principal]
        consumed = set(CONSUMERS.get(service, ())) | ({topics.MEMBER_CONTACTS} if service == "notify" else set())
        readable = {t for t in topic_table() if allowed(user, "topic", t, {"Read"})}
        assert readable == consumed, service
        own = {t for t in topic_table() if t.split(".")[1] == service and not t.endswith(".contacts")}
        if service == "members":
            own = {topics.MEMBERS, topics.MEMBER_CONTACTS}
        assert {t for t in topic_table() if allowed(user, "topic", t, {"Write"})} == own, service
        # idempotent producers (acks=all, enable_idempotence) need the cluster's IdempotentWrite
        assert any(acl["resource"]["type"] == "cluster" and "IdempotentWrite" in acl["operations"]
                   for acl in user["spec"]["authorization"]["acls"]), service
    groups = {g: {n for n, u in users.items() if allowed(u, "group", g, {"Read"})}
              for g in (*topics.CONSUMER_GROUPS, topics.CONTACTS_GROUP)}
    assert groups == {"agreements": {"hecht-agreements"}, "notify": {"hecht-notify"},
                      "notify-contacts": {"hecht-notify"}}


def _readme_table() -> dict[str, dict[str, set[str]]]:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- kafka-acls: the test parses this table -->", 1)[1]
    rows = {}
    for line in block.strip().splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("principal", "") or set(cells[0]) <= {"-"}:
            continue
        rows[cells[0]] = {k: {x.strip() for x in v.split(",") if x.strip()}
                          for k, v in zip(("reads", "writes", "groups"), cells[1:])}
    return rows


def test_the_documented_table_is_what_the_kafka_users_grant(users):
    table = _readme_table()
    assert set(table) == set(users)
    for name, user in users.items():
        row = table[name]
        assert row["reads"] == {t for t in topic_table() if allowed(user, "topic", t, {"Read"})}, name
        assert row["writes"] == {t for t in topic_table() if allowed(user, "topic", t, {"Write"})}, name
        groups = set()
        for acl in user["spec"]["authorization"]["acls"]:
            if acl["resource"]["type"] == "group":
                r = acl["resource"]
                groups.add(r["name"] + ("*" if r.get("patternType") == "prefix" else ""))
        assert row["groups"] == groups, name


def test_the_compose_deployment_documents_the_contacts_acl():
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    compose = readme.split("## docker compose: one host", 1)[1].split("## Kubernetes", 1)[0]
    assert re.search(r"User:hecht-notify.*\n.*--topic hecht\.members\.contacts", compose)
    assert "never for integrators" in compose
    script = (DEPLOY / "compose" / "create-topics.sh").read_text(encoding="utf-8")
    assert re.search(r"^create hecht\.members\.contacts \d+ \d+ compact$", script, re.M)
