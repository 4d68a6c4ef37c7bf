"""Transactional outbox, published by a relay that follows the outbox's change stream.

A change and its events are one multi-document transaction: the aggregate is
updated with a version filter (``{_id, version}``; nothing matched means
someone else wrote first: 412), and its events are inserted into the
service's ``outbox`` collection, keyed by event id. Both are stored or
neither is. This needs a MongoDB replica set (production) or a server with
the same semantics (SecantusDB locally); ``tests/contracts/test_mongo_semantics.py``
checks each property relied on here.

The :class:`Relay` follows the outbox collection's change stream. After each
published batch it copies the events to the ``events`` collection (the
history the API serves), deletes them from the outbox and stores the stream's
resume token. Internal events (``hecht.events.is_internal``: an agreement's while
it is a draft) are archived without being published. At start, with no token or
one the server no longer knows, it first publishes the backlog through the
outbox's ``(subject, sequence)`` index.
A crash between publishing and deleting publishes those events again:
at-least-once, and consumers drop duplicates by event id.

Besides events, a write may carry *keyed records* for another topic (a compacted one, e.g.
``hecht.members.contacts``): the latest state of something under a key, or a tombstone
(``value`` None) that lets compaction remove it. They share the outbox, its transaction and
the relay's reading order (subject, sequence), with the same at-least-once guarantee; the
store puts the write's sequence into a record's value so a reader can drop an older record
published again after a newer one. They are never archived (the history shows events only).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterable, TypeVar

from pymongo import ASCENDING, ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern
from prometheus_client import Counter

from . import audit, events as ev, topics as topic_names
from .errors import Conflict, PreconditionFailed

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter("hecht_outbox_published_total", "Events published by the relay", ["service"])
RELAY_ERRORS = Counter("hecht_outbox_relay_errors_total", "Relay publish failures", ["service"])

OUTBOX = "outbox"            # unpublished events, one document per event (_id = event id)
ARCHIVE = "events"           # every published event, for the history API
RELAY_STATE = "relay_state"  # the change stream's resume token, one document per relay
TRANSIENT_RETRIES = 5        # write conflicts between concurrent transactions are retried this often
# The server no longer has the history a resume token points into: read the backlog instead.
HISTORY_LOST = {280, 286}    # ChangeStreamFatalError, ChangeStreamHistoryLost

# Each subject's events in sequence order: the relay's reading order, and the history's.
SUBJECT_ORDER = [("subject", ASCENDING), ("sequence", ASCENDING)]

T = TypeVar("T")


class EventDraft:
    """An event the domain asks for; the store gives it a sequence and an envelope."""

    __slots__ = ("type", "data")

    def __init__(self, type: str, data: dict):
        self.type = type
        self.data = data

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"EventDraft({self.type!r})"


class RecordDraft:
    """A keyed record for another topic, written with the change; ``value`` None is a tombstone.

    ``topic`` is the name without the deployment's prefix (the relay adds its own)."""

    __slots__ = ("topic", "key", "value")

    def __init__(self, topic: str, key: str, value: dict | None):
        self.topic = topic
        self.key = key
        self.value = value

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"RecordDraft({self.topic!r}, {self.key!r}, {'tombstone' if self.value is None else 'value'})"


# Storage fields of a keyed record (all ``_``-prefixed, so ``envelope`` never shows them).
RECORD_TOPIC, RECORD_KEY, RECORD_VALUE = "_topic", "_key", "_value"
NOT_A_RECORD = {RECORD_TOPIC: {"$exists": False}}   # the events of an outbox or an archive


def is_record(entry: dict) -> bool:
    return RECORD_TOPIC in entry


def record_entries(subject: str, region: str, sequence: int, records: Iterable[RecordDraft]) -> list[dict]:
    """Outbox documents for keyed records: ordered with the subject's events (same sequence as
    the write's last event), the value stamped with that sequence."""
    return [{"_id": str(uuid.uuid4()), "subject": subject, "sequence": sequence, "region": region,
             "time": ev.now_iso(), RECORD_TOPIC: r.topic, RECORD_KEY: r.key,
             RECORD_VALUE: None if r.value is None else dict(r.value, sequence=sequence)}
            for r in records]


def encode_record(value: dict | None) -> bytes | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def transaction(db: Database, work: Callable[[ClientSession], T]) -> T:
    """Run ``work(session)`` in one multi-document transaction, committed with majority.

    Transient errors (a write conflict with a concurrent transaction on the same document)
    run ``work`` again, a few times; ``work`` must therefore decide from what it reads inside
    the transaction. Anything ``work`` raises aborts the transaction and propagates. Unlike
    ``ClientSession.with_transaction`` this gives up after a few tries rather than 120 s, so
    an outage becomes a quick 503 instead of a hanging request.
    """
    client = db.client
    for attempt in range(TRANSIENT_RETRIES):
        with client.start_session() as session:
            try:
                session.start_transaction(read_concern=ReadConcern("local"),
                                          write_concern=WriteConcern("majority"))
                result = work(session)
                _commit(session)
                return result
            except PyMongoError as e:
                if session.in_transaction:
                    _abort(session)
                if e.has_error_label("TransientTransactionError") and attempt + 1 < TRANSIENT_RETRIES:
                    time.sleep(0.002 * (attempt + 1))
                    continue
                raise
            except BaseException:
                if session.in_transaction:
                    _abort(session)
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _commit(session: ClientSession) -> None:
    for attempt in range(3):
        try:
            session.commit_transaction()
            return
        except PyMongoError as e:
            # Committing again is safe: the server knows whether this transaction committed.
            if e.has_error_label("UnknownTransactionCommitResult") and attempt < 2:
                continue
            raise


def _abort(session: ClientSession) -> None:
    try:
        session.abort_transaction()
    except PyMongoError:  # the server aborts it anyway when the session ends
        pass


def outbox_entries(envelopes: Iterable[dict], actor: dict | None = None) -> list[dict]:
    """Storage documents for events: keyed by event id, with who made the change beside them."""
    extra = {"_actor": actor} if actor else {}
    return [dict(e, _id=e["id"], **extra) for e in envelopes]


def envelope(entry: dict) -> dict:
    """The event itself, as published: without the storage key and the actor."""
    return {k: v for k, v in entry.items() if not k.startswith("_")}


class AggregateStore:
    """Reads and writes one collection of aggregates, each write with its events.

    ``version`` is the aggregate's sequence: every event increments it, so the
    CloudEvents ``sequence`` extension is strictly increasing per subject and
    the ETag changes on every write.
    """

    def __init__(self, collection: Collection, source: str):
        self.coll = collection
        self.db = collection.database
        self.outbox = self.db[OUTBOX]
        self.source = source  # e.g. "members": CloudEvents source /regions/{r}/members

    def _envelopes(self, doc_id: str, region: str, start: int, drafts: Iterable[EventDraft],
                   traceparent: str | None) -> list[dict]:
        source = f"/regions/{region}/{self.source}" if self.source else f"/regions/{region}"
        return [ev.build(d.type, region=region, subject=doc_id, sequence=start + i, data=d.data, source=source,
                         traceparent=traceparent)
                for i, d in enumerate(drafts, start=1)]

    def create(self, doc: dict, drafts: list[EventDraft], traceparent: str | None = None,
               records: Iterable[RecordDraft] = ()) -> dict:
        """Insert a new aggregate with its first events (and keyed records); Conflict if the id
        or a unique key exists."""
        envelopes = self._envelopes(doc["_id"], doc["region"], 0, drafts, traceparent)
        doc = dict(doc, version=len(envelopes) or 1)
        entries = record_entries(doc["_id"], doc["region"], doc["version"], records)

        def work(s: ClientSession) -> dict:
            self.coll.insert_one(doc, session=s)
            if envelopes or entries:
                self.outbox.insert_many(outbox_entries(envelopes, audit.current(self.source)) + entries,
                                        session=s)
            return doc
        try:
            return transaction(self.db, work)
        except DuplicateKeyError as e:
            raise Conflict("a record with the same identity already exists",
                           key=str((e.details or {}).get("keyValue", ""))) from None

    def update(self, doc_id: str, expected_version: int, changes: dict, drafts: list[EventDraft],
               *, region: str, unset: Iterable[str] = (), traceparent: str | None = None,
               before_commit: Callable[[], None] | None = None,
               records: Iterable[RecordDraft] = ()) -> dict:
        """Apply ``changes`` if the stored version is still ``expected_version``.

        The version guard makes every write optimistic: a concurrent writer in
        between means PreconditionFailed, never a lost update. ``before_commit`` runs
        once the writes are in place and before the commit: an effect outside the
        database (an e-mail handed to SMTP) whose record must follow it as closely as
        possible. If it raises, nothing is written. It may run again if the transaction
        is retried, so it must do its work only once.
        """
        envelopes = self._envelopes(doc_id, region, expected_version, drafts, traceparent)
        version = expected_version + max(1, len(envelopes))
        entries = record_entries(doc_id, region, version, records)
        update: dict = {"$set": dict(changes, version=version)}
        if unset:
            update["$unset"] = {f: "" for f in unset}

        def work(s: ClientSession) -> dict:
            doc = self.coll.find_one_and_update({"_id": doc_id, "version": expected_version}, update,
                                                return_document=ReturnDocument.AFTER, session=s)
            if doc is None:
                raise PreconditionFailed(f"{self.source or 'record'} {doc_id} was changed by someone else; "
                                         "read it again and retry")
            if envelopes or entries:
                self.outbox.insert_many(outbox_entries(envelopes, audit.current(self.source)) + entries,
                                        session=s)
            if before_commit is not None:
                before_commit()
            return doc
        try:
            return transaction(self.db, work)
        except DuplicateKeyError as e:
            raise Conflict("a record with the same identity already exists",
                           key=str((e.details or {}).get("keyValue", ""))) from None


def ensure_indexes(db: Database) -> None:
    # The relay's reading order for the backlog: each subject's events in sequence order.
    db[OUTBOX].create_index(SUBJECT_ORDER, name="relay_order")
    db[ARCHIVE].create_index(SUBJECT_ORDER)
    db[ARCHIVE].create_index([("region", ASCENDING), ("time", ASCENDING)])


def history(db: Database, subject: str, *, actors: bool = False) -> list[dict]:
    """Every event of one aggregate in sequence order: published ones plus those still pending,
    each with who caused it (``actor``) when ``actors`` is set (history endpoints only)."""
    seen: dict[str, dict] = {}
    for coll in (ARCHIVE, OUTBOX):
        for e in db[coll].find({"subject": subject, **NOT_A_RECORD}):
            out = envelope(e)
            if actors:
                out["actor"] = e.get("_actor")
            seen.setdefault(e["id"], out)
    return sorted(seen.values(), key=lambda e: e["sequence"])


def pending(db: Database, subject: str | None = None) -> list[dict]:
    """The events still waiting in the outbox (of one subject), in the relay's order."""
    query = dict(NOT_A_RECORD, subject=subject) if subject else dict(NOT_A_RECORD)
    return [envelope(e) for e in db[OUTBOX].find(query).sort(SUBJECT_ORDER)]


def _buffered(stream) -> int:
    """Changes the driver already holds (no round trip needed to take them).

    pymongo has no public accessor; without one (another driver version) this says 0
    and the relay publishes each change as it comes, which is correct, only slower.
    """
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    return len(data) if data is not None else 0


class Relay:
    """Publishes the outbox's events to one topic, in order per aggregate.

    Several relays may run at once (one per worker replica): each event may
    then be published more than once, never lost; consumers drop the duplicates
    by event id and older sequences by their per-subject cursors.
    """

    def __init__(self, db: Database, topic: str, producer_factory, service: str,
                 batch: int = 500, poll_s: float = 0.05, topic_prefix: str | None = None):
        self.db = db
        self.outbox = db[OUTBOX]
        self.topic = topic
        # Keyed records name their topic without the deployment's prefix: the relay gives them
        # the prefix its own topic has (``t1.hecht.members`` → ``t1.hecht.members.contacts``).
        self.topic_prefix = topic_prefix if topic_prefix is not None else next(
            (topic[:-len(t)] for t in topic_names.EVENT_TOPICS if topic.endswith(t)), "")
        self.producer_factory = producer_factory
        self.service = service
        self.batch = batch
        self.poll_s = poll_s  # the longest a quiet change stream waits on the server per poll
        self._producer = None
        self._token_saved_at = 0.0
        self._progress = False  # the current stream has polled at least once

    def _get_producer(self):
        if self._producer is None:
            self._producer = self.producer_factory()
        return self._producer

    def close(self) -> None:
        """Drop the producer; never raises (it is called while handling an outage).

        Records still buffered in a dead producer are not lost: their events
        are still in the outbox and are published again.
        """
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=2)
            except Exception as e:  # noqa: BLE001 - flush times out while the broker is down
                log.debug("producer closed uncleanly", extra={"error": repr(e)})

    # -- one batch ----------------------------------------------------------------------------
    def _send(self, entries: list[dict]) -> int:
        """Publish, archive and delete these outbox entries (given in publishing order)."""
        if not entries:
            return 0
        event_entries = [e for e in entries if not is_record(e)]
        records = [e for e in entries if is_record(e)]
        # Internal events (a draft's: ``events.is_internal``) are archived for the history but
        # never published. Writers keep them out of the outbox; this holds for any that are
        # there anyway (written by a version from before the rule, or by another writer).
        published = [out for out in map(envelope, event_entries) if not ev.is_internal(out)]
        if published:
            self._publish(published)
        if records:
            self._publish_records(records)
        if event_entries:
            self._archive(event_entries)
        self.outbox.delete_many({"_id": {"$in": [e["_id"] for e in entries]}})
        EVENTS_PUBLISHED.labels(self.service).inc(len(entries))
        return len(entries)

    def run_once(self) -> int:
        """Publish the whole backlog through the index; returns the number of events published.

        What the relay does at start without a usable resume token; tests and tools call it
        to drain the outbox synchronously.
        """
        total = 0
        while True:
            entries = list(self.outbox.find({}).sort(SUBJECT_ORDER)
                           .limit(self.batch))
            total += self._send(entries)
            if len(entries) < self.batch:
                break
        return total

    def _publish(self, events: list[dict]) -> None:
        producer = self._get_producer()
        futures = [producer.send(self.topic, key=e["subject"].encode(), value=ev.encode(e),
                                 headers=ev.kafka_headers(e)) for e in events]
        producer.flush(timeout=15)
        for f in futures:
            f.get(timeout=15)  # raises if the broker did not acknowledge (acks=all)

    def _publish_records(self, entries: list[dict]) -> None:
        """Keyed records, in order, each to its topic (a None value is sent as a tombstone)."""
        producer = self._get_producer()
        futures = [producer.send(self.topic_prefix + e[RECORD_TOPIC], key=str(e[RECORD_KEY]).encode(),
                                 value=encode_record(e[RECORD_VALUE]),
                                 headers=[("content-type", b"application/json")]) for e in entries]
        producer.flush(timeout=15)
        for f in futures:
            f.get(timeout=15)

    def _archive(self, entries: list[dict]) -> None:
        """Keep the published entries (with their actor) for the history endpoints."""
        try:
            self.db[ARCHIVE].insert_many([dict(e, _id=e.get("_id", e["id"])) for e in entries], ordered=False)
        except BulkWriteError as e:
            # Already archived by an earlier (interrupted) pass: only duplicates are fine.
            if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                raise

    # -- following the change stream -------------------------------------------------------------
    def _load_token(self) -> dict | None:
        doc = self.db[RELAY_STATE].find_one({"_id": self.topic})
        return (doc or {}).get("token")

    def _save_token(self, token: dict | None, force: bool = False) -> None:
        # After every published batch; while idle at most every few seconds (the token of a
        # quiet stream moves with the server's heartbeats and keeps it inside the oplog window).
        if token is None or (not force and time.monotonic() - self._token_saved_at < 5):
            return
        self.db[RELAY_STATE].update_one({"_id": self.topic}, {"$set": {
            "token": token, "at": datetime.now(timezone.utc)}}, upsert=True)
        self._token_saved_at = time.monotonic()

    def _forget_token(self) -> None:
        try:
            self.db[RELAY_STATE].delete_one({"_id": self.topic})
            log.warning("resume token outside the server's history; the backlog is read next",
                        extra={"topic": self.topic})
        except PyMongoError:
            pass  # still unusable next time: forgotten then

    def _open_stream(self):
        pipeline = [{"$match": {"operationType": "insert"}}]
        wait_ms = max(10, int(self.poll_s * 1000))
        token = self._load_token()
        if token is not None:
            try:
                stream = self.outbox.watch(pipeline, resume_after=token, max_await_time_ms=wait_ms)
                log.info("relay resumed the outbox change stream", extra={"topic": self.topic})
                return stream
            except OperationFailure as e:
                if e.code not in HISTORY_LOST and "resume token" not in str(e):
                    raise
                log.warning("stored resume token not usable; reading the backlog first",
                            extra={"topic": self.topic, "error": str(e)})
        # Opened before the backlog is read: whatever commits meanwhile is in one or the other.
        stream = self.outbox.watch(pipeline, max_await_time_ms=wait_ms)
        n = self.run_once()
        if n:
            log.info("relay published the outbox backlog", extra={"topic": self.topic, "events": n})
        self._save_token(stream.resume_token, force=True)
        return stream

    def _follow(self, stop: threading.Event) -> None:
        with self._open_stream() as stream:
            while not stop.is_set():
                changes = []
                while len(changes) < self.batch:
                    if changes and not _buffered(stream):
                        break  # publish what has arrived rather than wait on the server for more
                    started = time.monotonic()
                    change = stream.try_next()  # waits up to poll_s on the server when nothing is there
                    if change is None:
                        if not changes and time.monotonic() - started < 0.005:
                            stop.wait(self.poll_s)  # the server did not wait: don't spin
                        break
                    changes.append(change)
                if changes:
                    ids = [c["documentKey"]["_id"] for c in changes]
                    # Only what is still there: the backlog read or another relay may have
                    # published some already. Stream order is commit order.
                    present = {e["_id"]: e for e in self.outbox.find({"_id": {"$in": ids}})}
                    self._send([present[i] for i in ids if i in present])
                self._save_token(stream.resume_token, force=bool(changes))
                self._progress = True

    def run(self, stop: threading.Event) -> None:
        delay = 0.5
        log.info("relay started", extra={"topic": self.topic})
        while not stop.is_set():
            self._progress = False
            try:
                self._follow(stop)
            except Exception as e:  # noqa: BLE001 - the relay must outlive any outage
                RELAY_ERRORS.labels(self.service).inc()
                if isinstance(e, OperationFailure) and e.code in HISTORY_LOST:
                    self._forget_token()
                if self._progress:
                    delay = 0.5  # it worked until now: a fresh failure starts the backoff again
                log.warning("relay cannot publish yet; events stay in the outbox",
                            extra={"error": f"{type(e).__name__}: {e}", "retry_in_s": delay})
                self.close()  # a fresh producer after an outage avoids stale metadata
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.close()
        log.info("relay stopped")
