"""The Kafka topics hecht uses: one place, read by the code, deploy/ and the tests."""
MEMBERS = "hecht.members"
AGREEMENTS = "hecht.agreements"
NOTIFY = "hecht.notify"

# Consumer groups; each has its dead-letter topic ``hecht.<group>.dlq``.
CONSUMER_GROUPS = ("agreements", "notify")


def dlq_topic(group: str) -> str:
    return f"hecht.{group}.dlq"


EVENT_TOPICS = (MEMBERS, AGREEMENTS, NOTIFY)
ALL_TOPICS = EVENT_TOPICS + tuple(dlq_topic(g) for g in CONSUMER_GROUPS)
