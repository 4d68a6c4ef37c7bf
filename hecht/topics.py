"""The Kafka topics hecht uses: one place, read by the code, deploy/ and the tests."""
MEMBERS = "hecht.members"
AGREEMENTS = "hecht.agreements"
NOTIFY = "hecht.notify"
# Internal and compacted: the latest contact record of each member (key = member id), written
# by members, read by notify only. Erasure writes a tombstone (null value) under the key, so
# compaction removes the last copy. Its records are not CloudEvents (see schemas/asyncapi.yaml).
MEMBER_CONTACTS = "hecht.members.contacts"

# Consumer groups; each has its dead-letter topic ``hecht.<group>.dlq``.
CONSUMER_GROUPS = ("agreements", "notify")
# notify's reader of the contacts topic (no dead letters: a record it cannot read is skipped).
CONTACTS_GROUP = "notify-contacts"


def dlq_topic(group: str) -> str:
    return f"hecht.{group}.dlq"


EVENT_TOPICS = (MEMBERS, AGREEMENTS, NOTIFY)      # CloudEvents; integrators may read these
COMPACTED_TOPICS = (MEMBER_CONTACTS,)              # cleanup.policy=compact; internal
ALL_TOPICS = EVENT_TOPICS + COMPACTED_TOPICS + tuple(dlq_topic(g) for g in CONSUMER_GROUPS)
# Topic-level settings of the compacted topics (deploy/topics.yaml and the k8s KafkaTopics agree).
COMPACTED_CONFIG = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                    "delete.retention.ms": "86400000", "segment.ms": "3600000"}
