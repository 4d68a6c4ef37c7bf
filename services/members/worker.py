"""Members worker: the outbox relay (members consumes no other service's events)."""
from __future__ import annotations

from hecht import kafka, topics
from hecht.outbox import Relay

from .repository import AGGREGATE_COLLECTIONS, ensure_indexes  # noqa: F401 - used by `hecht migrate`


def components(settings, db):
    relay = Relay(db, AGGREGATE_COLLECTIONS, settings.topic(topics.MEMBERS),
                  lambda: kafka.producer(settings), service="members", poll_s=settings.relay_poll_s)
    return [("relay", relay.run)]
