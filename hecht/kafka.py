"""Kafka clients with the settings the guarantees depend on, built in one place."""
from __future__ import annotations

import logging
import os

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import ClusterAuthorizationFailedError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from .config import Settings
from .topics import COMPACTED_CONFIG, COMPACTED_TOPICS, CONSUMER_GROUPS, EVENT_TOPICS, dlq_topic

log = logging.getLogger(__name__)


def security(env=None) -> dict:
    """Client options for an authenticated listener, from the environment (none: plaintext).

    ``KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL),
    ``KAFKA_SASL_MECHANISM`` (default SCRAM-SHA-512, as the Strimzi KafkaUsers in
    deploy/k8s/topics/kafkausers.yaml use), ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``,
    ``KAFKA_SSL_CAFILE``. With ACLs each service's principal may touch only its own topics
    (only notify may read ``hecht.members.contacts``)."""
    env = os.environ if env is None else env
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "").strip().upper()
    if not protocol or protocol == "PLAINTEXT":
        return {}
    options: dict = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        options.update(sasl_mechanism=env.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                       sasl_plain_username=env.get("KAFKA_SASL_USERNAME"),
                       sasl_plain_password=env.get("KAFKA_SASL_PASSWORD"))
    if env.get("KAFKA_SSL_CAFILE"):
        options["ssl_cafile"] = env["KAFKA_SSL_CAFILE"]
    return options


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
        **security(),
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
        **security(),
    )
    options.update(overrides)
    c = KafkaConsumer(**options)
    c.subscribe(topics)
    return c


def admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers,
                            request_timeout_ms=5000, client_id=f"hecht-{settings.service}-admin", **security())


def ensure_topics(settings: Settings, partitions: int | None = None) -> list[str]:
    """Create hecht's topics (with the settings' prefix) if they are missing.

    Replication is left to the broker's ``default.replication.factor`` (-1), so
    on a real cluster a topic created here gets the cluster's durability, not 1.
    Production creates its topics ahead (deploy/topics.yaml); this is the safety net. Under
    ACLs a service's principal sees only its own topics and may create none: a refusal is
    logged and start-up goes on (the topics exist, made by the operator).
    """
    import os
    partitions = partitions or int(os.environ.get("HECHT_TOPIC_PARTITIONS", 3))
    wanted = [settings.topic(t) for t in EVENT_TOPICS]
    compacted = [settings.topic(t) for t in COMPACTED_TOPICS]
    dlqs = [settings.topic(dlq_topic(g)) for g in CONSUMER_GROUPS]
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        new = [NewTopic(t, partitions, -1) for t in wanted if t not in existing]
        new += [NewTopic(t, partitions, -1, topic_configs=dict(COMPACTED_CONFIG))
                for t in compacted if t not in existing]
        new += [NewTopic(t, 1, -1) for t in dlqs if t not in existing]
        if new:
            try:
                client.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as e:
                log.warning("not allowed to create topics; they must exist already",
                            extra={"topics": [t.name for t in new], "error": type(e).__name__})
                return wanted + compacted + dlqs
            log.info("created topics", extra={"topics": [t.name for t in new]})
        return wanted + compacted + dlqs
    finally:
        client.close()
