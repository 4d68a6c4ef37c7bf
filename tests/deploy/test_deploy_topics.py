"""One list of topics: deploy/topics.yaml, compared with every other place.

    deploy/topics.yaml == hecht.topics.ALL_TOPICS           (the code)
                       == channels of schemas/asyncapi.yaml (the public contract)
                       == Strimzi KafkaTopics in deploy/k8s/topics
                       == `create` lines of deploy/compose/create-topics.sh
"""

from __future__ import annotations

import importlib
import re

import yaml

from .deploy_helpers import (
    COMPOSE_DIR,
    CONSUMER_GROUPS,
    EXPECTED_TOPICS,
    K8S,
    REPO,
    render,
    topic_table,
    topics_file,
)

KAFKA_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


def test_topics_file_lists_hechts_topics():
    names = [topic["name"] for topic in topics_file()["topics"]]
    assert names == list(EXPECTED_TOPICS)


def test_topic_settings():
    data = topics_file()
    assert data["defaults"] == {"replicas": 3, "min_insync_replicas": 2}
    for name, topic in topic_table().items():
        assert KAFKA_TOPIC_NAME.match(name)
        assert set(topic) == {"name", "partitions", "retention_ms", "cleanup_policy"}, name
        assert isinstance(topic["partitions"], int) and topic["partitions"] >= 1
        assert isinstance(topic["retention_ms"], int) and topic["retention_ms"] >= 24 * 3600 * 1000
        assert topic["cleanup_policy"] in {"delete", "compact", "compact,delete"}
        if not name.endswith(".dlq"):
            assert topic["partitions"] == 6, name
    # a dead-letter topic per consumer group, and no other
    assert {n for n in topic_table() if n.endswith(".dlq")} == {f"hecht.{g}.dlq" for g in CONSUMER_GROUPS}


def test_strimzi_kafka_topics_match():
    defaults = topics_file()["defaults"]
    rendered = render(K8S / "topics").of_kind("KafkaTopic")
    found = {}
    for resource in rendered:
        name = resource["spec"].get("topicName", resource["metadata"]["name"])
        spec = resource["spec"]
        found[name] = {
            "name": name,
            "partitions": spec["partitions"],
            "retention_ms": int(spec["config"]["retention.ms"]),
            "cleanup_policy": spec["config"]["cleanup.policy"],
        }
        assert spec["replicas"] == defaults["replicas"], name
        assert int(spec["config"]["min.insync.replicas"]) == defaults["min_insync_replicas"], name
        assert resource["metadata"]["labels"]["strimzi.io/cluster"]
    assert found == topic_table()


def test_compose_creates_the_same_topics():
    script = (COMPOSE_DIR / "create-topics.sh").read_text(encoding="utf-8")
    created = {}
    for name, partitions, retention, cleanup in re.findall(r"^create (\S+) (\d+) (\d+) (\S+)$", script, re.M):
        created[name] = {"name": name, "partitions": int(partitions), "retention_ms": int(retention),
                         "cleanup_policy": cleanup}
    assert created == topic_table()


def test_code_uses_the_same_topics():
    module = importlib.import_module("hecht.topics")
    all_topics = module.ALL_TOPICS
    assert isinstance(all_topics, tuple)
    assert len(all_topics) == len(set(all_topics))
    assert set(all_topics) == set(topic_table())


def test_asyncapi_document_has_the_same_channels():
    path = REPO / "schemas" / "asyncapi.yaml"
    assert path.is_file(), "schemas/asyncapi.yaml is missing: run `hecht asyncapi --write`"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert str(document["asyncapi"]).startswith("3.")
    addresses = [channel["address"] for channel in document["channels"].values()]
    assert len(addresses) == len(set(addresses))
    assert set(addresses) == set(topic_table())
