"""The consumer loop every service uses: at-least-once delivery, effectively-once effects.

For each record: decode the CloudEvent (undecodable or oversized → dead-letter at once),
skip it if its ``sequence`` is not newer than the last one applied for its
subject (a redelivery or a stale duplicate: an event's id and sequence go
together, so a newer sequence cannot be in the inbox), run the handler with
bounded retries, dead-letter it if it keeps failing. At the end of the batch the
applied ids go into the inbox and each subject's cursor moves on, in one write
each, and only then are the offsets committed: a crash re-delivers rather than
loses.

The subject cursors are cached while this consumer keeps its partitions (their
subjects have no other consumer), so a new event costs its handler's writes
plus a share of two batch writes, instead of two reads and two writes.

Handlers must be idempotent for the window between their effect and the end of
the batch (a crash there re-applies); they get the decoded event dict.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import Callable

from kafka import TopicPartition
from prometheus_client import Counter, Gauge
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from . import events as ev, logs
from .config import Settings
from .kafka import consumer as make_consumer, producer as make_producer
from .topics import dlq_topic
from .web import ensure_ttl_index

log = logging.getLogger(__name__)

CONSUMED = Counter("hecht_consumer_events_total", "Events handled by outcome",
                   ["group", "outcome"])  # applied | duplicate | stale | dead_lettered | ignored
LAG = Gauge("hecht_consumer_lag", "Records behind the end of the partition", ["group", "topic", "partition"])

INBOX = "inbox"
CURSORS = "subject_cursors"

Handler = Callable[[dict], None]


class RetryableError(Exception):
    """The handler could not apply the event now (e.g. a dependency is down): retry later."""


def inbox_retention_s() -> int:
    """How long an inbox entry is kept: ``HECHT_INBOX_RETENTION_DAYS`` (default 35, beyond the
    topics' 30-day retention, so no record still on a topic is older than its entry)."""
    return int(float(os.environ.get("HECHT_INBOX_RETENTION_DAYS", 35)) * 86400)


def ensure_indexes(db: Database) -> None:
    """The inbox's uniqueness is its _id (the event id); subject cursors are keyed by subject.

    Inbox entries expire through a TTL index on ``at``: the entries are the record of what
    was applied, never what decides (the subject cursors do), so their deletion, whenever
    the server's TTL monitor gets to it, changes no outcome."""
    ensure_ttl_index(db[INBOX], "at", inbox_retention_s())


class ConsumerRunner:
    def __init__(self, settings: Settings, db: Database, group: str, topics: list[str],
                 handle: Handler, *, retry_delay_s: float = 0.5):
        self.settings = settings
        self.db = db
        self.group = group
        self.topics = [settings.topic(t) for t in topics]
        self.handle = handle
        self.retry_delay_s = retry_delay_s
        self.dlq = settings.topic(dlq_topic(group))
        self._consumer = None
        self._producer = None
        self._last_lag = 0.0
        self._lag_labels: set[tuple[str, str, str]] = set()  # the LAG series this runner reports
        self._assigned: frozenset = frozenset()
        self._cursors: dict[str, int] = {}      # subject → last sequence applied (DB or this batch)
        self._inbox: list[dict] = []            # marks of this batch, written by _flush
        self._moved: dict[str, int] = {}        # subject → sequence to $max into its cursor

    # -- one record -------------------------------------------------------------------------
    def process(self, record) -> str:
        """Handle one Kafka record; returns the outcome (also counted in metrics)."""
        size = len(record.value or b"")
        if size > self.settings.max_event_bytes:
            # Our events are a few KiB; parsing megabytes of someone's mistake (or a JSON bomb)
            # would only stall the partition, so it goes to the DLQ as it came.
            self._dead_letter(record, f"oversized: {size} bytes > {self.settings.max_event_bytes}",
                              "OversizedEvent")
            return self._count("dead_lettered")
        try:
            event = ev.decode(record.value)
        except ev.InvalidEvent as e:
            self._dead_letter(record, f"undecodable: {e}", "InvalidEvent")
            return self._count("dead_lettered")
        event_id = str(event["id"])
        last = self._last_applied(event["subject"])
        if event["sequence"] == last:
            return self._count("duplicate")  # the last one applied, delivered again
        if event["sequence"] < last:
            log.info("stale event skipped", extra={"event_id": event_id, "subject": event["subject"],
                                                   "sequence": event["sequence"], "last_applied": last})
            return self._count("stale")
        if last and event["sequence"] > last + 1:
            log.warning("sequence gap: applying anyway", extra={
                "subject": event["subject"], "sequence": event["sequence"], "last_applied": last})
        with logs.continued_trace(event.get("traceparent")):
            return self._apply(record, event, event_id)

    def _apply(self, record, event: dict, event_id: str) -> str:
        """Handle a new event (retries, then the DLQ), under the producer's trace id."""
        error = None
        for attempt in range(1, self.settings.consumer_max_attempts + 1):
            try:
                self.handle(event)
                error = None
                break
            except PyMongoError:
                raise  # our own database is down: stop the batch, don't commit, retry later
            except Exception as e:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                error = e
                log.warning("handler failed", extra={"event_id": event_id, "type": event.get("type"),
                                                     "attempt": attempt, "error": repr(e)})
                if attempt < self.settings.consumer_max_attempts:
                    time.sleep(self.retry_delay_s * attempt)
        if error is not None:
            self._dead_letter(record, f"{type(error).__name__}: {error}", type(error).__name__,
                              "".join(traceback.format_exception_only(error)).strip())
            outcome = "dead_lettered"
        else:
            outcome = "applied"
            log.debug("event applied", extra={"event_id": event_id, "type": event.get("type")})
        self._mark(event)
        return self._count(outcome)

    def _last_applied(self, subject: str) -> int:
        if subject not in self._cursors:
            cursor = self.db[CURSORS].find_one({"_id": subject}) or {}
            self._cursors[subject] = cursor.get("sequence", 0)
        return self._cursors[subject]

    def _mark(self, event: dict) -> None:
        subject, sequence = event["subject"], event["sequence"]
        self._inbox.append({"_id": str(event["id"]), "type": event.get("type"), "subject": subject,
                            "sequence": sequence, "at": datetime.now(timezone.utc)})
        self._cursors[subject] = max(sequence, self._cursors.get(subject, 0))
        self._moved[subject] = self._cursors[subject]

    def _flush(self) -> None:
        """The batch's inbox entries in one insert, then one ``$max`` per subject touched."""
        if self._inbox:
            try:
                self.db[INBOX].insert_many(self._inbox, ordered=False)
            except BulkWriteError as e:
                if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                    raise
        for subject, sequence in self._moved.items():
            self.db[CURSORS].update_one({"_id": subject}, {"$max": {"sequence": sequence}}, upsert=True)
        self._inbox, self._moved = [], {}

    def _count(self, outcome: str) -> str:
        CONSUMED.labels(self.group, outcome).inc()
        return outcome

    def _dead_letter(self, record, reason: str, error_type: str, detail: str = "") -> None:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        headers = list(record.headers or []) + [
            ("dlq-reason", reason[:1000].encode()),
            ("dlq-error-type", error_type.encode()),
            ("dlq-original-topic", record.topic.encode()),
            ("dlq-original-partition", str(record.partition).encode()),
            ("dlq-original-offset", str(record.offset).encode()),
            ("dlq-consumer-group", self.group.encode()),
        ]
        if detail:
            headers.append(("dlq-detail", detail[:2000].encode()))
        self._producer.send(self.dlq, key=record.key, value=record.value, headers=headers).get(timeout=15)
        log.error("event dead-lettered", extra={"dlq": self.dlq, "reason": reason,
                                                "topic": record.topic, "offset": record.offset})

    # -- the loop ---------------------------------------------------------------------------
    def poll_once(self, timeout_ms: int = 500) -> int:
        """Poll, handle and commit one batch; returns the number of records seen."""
        if self._consumer is None:
            self._consumer = make_consumer(self.settings, self.group, self.topics)
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        assigned = frozenset(self._consumer.assignment())
        if assigned != self._assigned:  # a rebalance: another consumer may have moved our subjects on
            self._assigned, self._cursors = assigned, {}
        n = 0
        for tp, records in batches.items():
            for record in records:
                self.process(record)
                n += 1
        if n:
            self._flush()
            self._consumer.commit()
        self._report_lag()
        return n

    def _report_lag(self) -> None:
        if time.monotonic() - self._last_lag < 5 or self._consumer is None:
            return
        self._last_lag = time.monotonic()
        try:
            assigned = list(self._consumer.assignment())
            if not assigned:
                return
            ends = self._consumer.end_offsets(assigned)
            current = set()
            for tp in assigned:
                labels = (self.group, tp.topic, str(tp.partition))
                LAG.labels(*labels).set(max(0, ends.get(tp, 0) - self._consumer.position(tp)))
                current.add(labels)
            self._forget_lag(self._lag_labels - current)  # moved to another consumer in a rebalance
            self._lag_labels = current
        except Exception as e:  # noqa: BLE001 - metrics must never break consumption
            log.debug("lag not measured", extra={"error": repr(e)})

    def _forget_lag(self, series) -> None:
        """Drop lag series we no longer own: a stale figure would alert on nothing, or hide lag."""
        for labels in series:
            try:
                LAG.remove(*labels)
            except KeyError:
                pass

    def close(self) -> None:
        self._forget_lag(self._lag_labels)
        self._lag_labels = set()
        # Unflushed marks are dropped with the cache: their records come again and are re-applied.
        self._cursors, self._inbox, self._moved, self._assigned = {}, [], {}, frozenset()
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
        self._consumer = self._producer = None

    def run(self, stop: threading.Event) -> None:
        poll_until_stopped(stop, self.poll_once, self.close, "consumer",
                           {"group": self.group, "topics": self.topics})


def poll_until_stopped(stop: threading.Event, poll_once, close, what: str, extra: dict) -> None:
    """A consumer's loop: poll until stopped. On an outage of Kafka or Mongo it closes the
    client (uncommitted records are re-delivered to the next one), backs off from 0.5 s
    doubling to 10 s, and resumes from the last committed offset."""
    log.info(f"{what} started", extra=extra)
    delay = 0.5
    while not stop.is_set():
        try:
            poll_once()
            delay = 0.5
        except Exception as e:  # noqa: BLE001 - outages of Kafka or Mongo: back off, keep going
            log.warning(f"{what} paused; will resume from the last committed offset",
                        extra={**extra, "error": f"{type(e).__name__}: {e}", "retry_in_s": delay})
            close()
            stop.wait(delay)
            delay = min(delay * 2, 10.0)
    close()
    log.info(f"{what} stopped", extra=extra)


def lag(settings: Settings, group: str, topics: list[str]) -> int:
    """Total lag of a consumer group, from its committed offsets (for tests and operators)."""
    from kafka import KafkaConsumer

    from .kafka import security
    probe = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                          group_id=settings.topic_prefix + group, enable_auto_commit=False, **security())
    try:
        total = 0
        for topic in (settings.topic(t) for t in topics):
            parts = probe.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in parts]
            ends = probe.end_offsets(tps)
            for tp in tps:
                committed = probe.committed(tp) or 0
                total += max(0, ends[tp] - committed)
        return total
    finally:
        probe.close()
