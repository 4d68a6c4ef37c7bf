"""Kafka clients with the settings the guarantees depend on, built in one place."""
from __future__ import annotations

import logging

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from .config import Settings
from .topics import EVENT_TOPICS, dlq_topic, CONSUMER_GROUPS

log = logging.getLogger(__name__)


def producer(settings: Settings, **overrides) -> KafkaProducer:
    """Idempotent, acks=all: a broker retry never duplicates or reorders a partition."""
    options = dict(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_block_ms=5000,
        request_timeout_ms=10000,
        client_id=f"hecht-{settings.service}",
    )
    options.update(overrides)
    return KafkaProducer(**options)


def consumer(settings: Settings, group: str, topics: list[str], **overrides) -> KafkaConsumer:
    """Offsets are committed by hand after processing (at-least-once)."""
    options = dict(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.topic_prefix + group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=200,
        client_id=f"hecht-{settings.service}-{group}",
    )
    options.update(overrides)
    c = KafkaConsumer(**options)
    c.subscribe(topics)
    return c


def admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers,
                            request_timeout_ms=5000, client_id=f"hecht-{settings.service}-admin")


def ensure_topics(settings: Settings, partitions: int | None = None) -> list[str]:
    """Create hecht's topics (with the settings' prefix) if they are missing.

    Replication is left to the broker's ``default.replication.factor`` (-1), so
    on a real cluster a topic created here gets the cluster's durability, not 1.
    Production creates its topics ahead (deploy/topics.yaml); this is the safety net.
    """
    import os
    partitions = partitions or int(os.environ.get("HECHT_TOPIC_PARTITIONS", 3))
    wanted = [settings.topic(t) for t in EVENT_TOPICS]
    dlqs = [settings.topic(dlq_topic(g)) for g in CONSUMER_GROUPS]
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        new = [NewTopic(t, partitions, -1) for t in wanted if t not in existing]
        new += [NewTopic(t, 1, -1) for t in dlqs if t not in existing]
        if new:
            try:
                client.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics", extra={"topics": [t.name for t in new]})
        return wanted + dlqs
    finally:
        client.close()
