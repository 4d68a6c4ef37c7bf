"""Transactional outbox without multi-document transactions.

FerretDB and a standalone MongoDB have no multi-document transactions, so the
events a change produces are pushed into an ``_outbox`` array *inside the
aggregate's own document*, in the same single-document update as the state
change: both are stored or neither is. ``_pending`` marks documents that still
hold unpublished events.

Each write with events also leaves a signal (``outbox_signals``, keyed by the
document) so the relay finds pending work without scanning the aggregates: on
FerretDB 1.x any filter but a bare ``_id`` reads the whole collection, and the
relay's poll did that several times a second. A signal is written after the
change it announces, so a crash in between can only strand events until the
relay's periodic sweep (``_pending`` scan), never lose them.

The :class:`Relay` publishes each document's pending events in order with the
idempotent producer, copies them to the ``events`` collection (the history the
API serves), and only then clears the outbox (under the document's write claim).
A crash between publish and clearing republishes them: at-least-once, and
consumers dedupe on the event id.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Iterable

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure
from prometheus_client import Counter, Gauge

from . import events as ev
from .errors import Conflict, PreconditionFailed

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter("hecht_outbox_published_total", "Events published by the relay", ["service"])
RELAY_ERRORS = Counter("hecht_outbox_relay_errors_total", "Relay publish failures", ["service"])
OUTBOX_PENDING = Gauge("hecht_outbox_pending_documents", "Documents holding unpublished events", ["service"])

ARCHIVE = "events"
SIGNALS = "outbox_signals"  # one small document per aggregate with unpublished events
CLAIM_TTL_S = 30  # a write claim older than this was orphaned by a crash
RELAY_CLAIM_TTL_S = 3  # the relay holds a claim for one update: older means a relay was killed


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class EventDraft:
    """An event the domain asks for; the store gives it a sequence and an envelope."""

    __slots__ = ("type", "data")

    def __init__(self, type: str, data: dict):
        self.type = type
        self.data = data

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"EventDraft({self.type!r})"


class AggregateStore:
    """Reads and writes one collection of aggregates, each write with its events.

    ``version`` is the aggregate's sequence: every event increments it, so the
    CloudEvents ``sequence`` extension is strictly increasing per subject and
    the ETag changes on every write.
    """

    def __init__(self, collection: Collection, source: str):
        self.coll = collection
        self.claims = collection.database[f"{collection.name}_claims"]
        self.source = source  # e.g. "members": CloudEvents source /regions/{r}/members

    def _envelopes(self, doc_id: str, region: str, start: int, drafts: Iterable[EventDraft],
                   traceparent: str | None) -> list[dict]:
        out = []
        for i, d in enumerate(drafts, start=1):
            source = f"/regions/{region}/{self.source}" if self.source else f"/regions/{region}"
            out.append(ev.build(d.type, region=region, subject=doc_id, sequence=start + i,
                                data=d.data, source=source, traceparent=traceparent))
        return out

    def create(self, doc: dict, drafts: list[EventDraft], traceparent: str | None = None) -> dict:
        """Insert a new aggregate with its first events; Conflict if the id or a unique key exists."""
        envelopes = self._envelopes(doc["_id"], doc["region"], 0, drafts, traceparent)
        doc = dict(doc, version=len(envelopes) or 1, _outbox=envelopes, _pending=bool(envelopes))
        try:
            self.coll.insert_one(doc)
        except DuplicateKeyError as e:
            raise Conflict("a record with the same identity already exists",
                           key=str((e.details or {}).get("keyValue", ""))) from None
        if envelopes:
            signal(self.coll.database, self.coll.name, doc["_id"])
        return doc

    def update(self, doc_id: str, expected_version: int, changes: dict, drafts: list[EventDraft],
               *, region: str, unset: Iterable[str] = (), traceparent: str | None = None) -> dict:
        """Apply ``changes`` if the stored version is still ``expected_version``.

        The version guard makes every write optimistic: a concurrent writer in
        between means PreconditionFailed, never a lost update.
        """
        envelopes = self._envelopes(doc_id, region, expected_version, drafts, traceparent)
        new_version = expected_version + max(1, len(envelopes))
        self._claim(doc_id, expected_version)
        update: dict = {"$set": dict(changes, version=new_version)}
        if envelopes:
            update["$push"] = {"_outbox": {"$each": envelopes}}
            update["$set"]["_pending"] = True
        if unset:
            update["$unset"] = {f: "" for f in unset}
        claim = {"_id": f"{doc_id}@{expected_version}"}
        try:
            doc = self.coll.find_one_and_update({"_id": doc_id, "version": expected_version}, update,
                                                return_document=ReturnDocument.AFTER)
        except DuplicateKeyError as e:
            self.claims.delete_one(claim)  # the step did not happen: free it
            raise Conflict("a record with the same identity already exists",
                           key=str((e.details or {}).get("keyValue", ""))) from None
        except OperationFailure as e:
            self.claims.delete_one(claim)
            # FerretDB (SQLite) reports a unique-index violation in findAndModify as a generic
            # error (code 1) instead of 11000; it is still a duplicate, not an outage.
            if "UNIQUE constraint failed" not in str(e):
                raise
            raise Conflict("a record with the same identity already exists") from None
        except BaseException:
            self.claims.delete_one(claim)
            raise
        if doc is None:
            self.claims.delete_one(claim)
            raise PreconditionFailed(f"{self.source or 'record'} {doc_id} was changed by someone else; "
                                     "read it again and retry")
        self.claims.delete_one({"_id": f"{doc_id}@{expected_version - 1}"})  # the previous step's claim
        if envelopes:
            signal(self.coll.database, self.coll.name, doc_id)
        return doc

    def _claim(self, doc_id: str, expected_version: int) -> None:
        """Win the step from ``expected_version`` with an insert into a unique ``_id``.

        The version filter of ``find_one_and_update`` is atomic on MongoDB but
        not on FerretDB 1.x (SQLite), which reads, changes and writes the
        document back: two concurrent writers could both "win" and one change
        would be lost. An insert into a unique ``_id`` is atomic everywhere, so
        exactly one writer gets each step. A claim orphaned by a crash between
        claim and update expires after CLAIM_TTL_S (RELAY_CLAIM_TTL_S for the
        relay's) and is taken over.
        """
        claim_id = f"{doc_id}@{expected_version}"
        waited_for_relay = 0
        takeovers = 0
        while True:
            now = datetime.now(timezone.utc)
            try:
                self.claims.insert_one({"_id": claim_id, "at": now})
                return
            except DuplicateKeyError:
                stale = self.claims.find_one({"_id": claim_id})
            if stale is None:  # released between our insert and our read: try again
                takeovers += 1
                if takeovers > 3:
                    break
                continue
            by_relay = stale.get("holder") == "relay"
            age = now - _aware(stale["at"])
            if age >= timedelta(seconds=RELAY_CLAIM_TTL_S if by_relay else CLAIM_TTL_S) and takeovers < 3:
                # Orphaned by a crash (a relay or web worker killed mid-step): take it over,
                # unless the document moved on meanwhile (then the step was really taken).
                current = self.coll.find_one({"_id": doc_id}, {"version": 1})
                if not current or current.get("version") != expected_version:
                    break
                self.claims.delete_one({"_id": claim_id, "at": stale["at"]})
                takeovers += 1
                continue
            if by_relay and waited_for_relay < 400:
                waited_for_relay += 1  # the relay clears the outbox for a few ms: wait, don't fail
                time.sleep(0.005)
                continue
            break
        raise PreconditionFailed(f"{self.source or 'record'} {doc_id} was changed by someone else; "
                                 "read it again and retry")


def signal(db: Database, collection: str, doc_id: str) -> None:
    """Tell the relay that ``doc_id`` holds unpublished events; call it after the write.

    If a signal is already there, the relay has not taken it yet and will read the
    document after our write (it deletes the signal before reading): nothing to do.
    """
    try:
        db[SIGNALS].insert_one({"_id": f"{collection}/{doc_id}", "c": collection, "d": doc_id,
                                "at": datetime.now(timezone.utc)})
    except DuplicateKeyError:
        pass


def ensure_indexes(db: Database, collections: Iterable[str]) -> None:
    for name in collections:
        db[name].create_index([("_pending", ASCENDING)])
    db[ARCHIVE].create_index([("subject", ASCENDING), ("sequence", ASCENDING)])
    db[ARCHIVE].create_index([("region", ASCENDING), ("time", ASCENDING)])


def history(db: Database, collection: str, subject: str) -> list[dict]:
    """Every event of one aggregate in sequence order: published ones plus those still pending."""
    seen: dict[str, dict] = {}
    for e in db[ARCHIVE].find({"subject": subject}, sort=[("sequence", ASCENDING)]):
        e = dict(e)
        e.pop("_id", None)
        seen[e["id"]] = e
    doc = db[collection].find_one({"_id": subject}, {"_outbox": 1})
    for e in (doc or {}).get("_outbox", []):
        seen.setdefault(e["id"], e)
    return sorted(seen.values(), key=lambda e: e["sequence"])


class Relay:
    """Publishes pending outbox events to one topic, in order per aggregate.

    Several relays may run at once (one per worker replica): each event may
    then be published more than once, never lost, never reordered within a
    partition; consumers drop the duplicates by event id.
    """

    def __init__(self, db: Database, collections: list[str], topic: str, producer_factory,
                 service: str, batch: int = 200, poll_s: float = 0.2, sweep_s: float | None = None):
        self.db = db
        self.collections = collections
        self.topic = topic
        self.producer_factory = producer_factory
        self.service = service
        self.batch = batch
        self.poll_s = poll_s
        # The sweep finds what no signal announces (a writer died between its write and its
        # signal); it is a full scan on FerretDB, so it runs at start and then rarely.
        self.sweep_s = sweep_s if sweep_s is not None else float(os.environ.get("HECHT_RELAY_SWEEP_S", 30))
        self._next_sweep = 0.0
        self._force_sweep = True  # the first pass scans: whatever a crash left behind
        self._producer = None

    def _get_producer(self):
        if self._producer is None:
            self._producer = self.producer_factory()
        return self._producer

    def close(self) -> None:
        """Drop the producer; never raises (it is called while handling an outage).

        Records still buffered in a dead producer are not lost: their events
        are still in the outbox and the next pass publishes them again.
        """
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=2)
            except Exception as e:  # noqa: BLE001 - flush times out while the broker is down
                log.debug("producer closed uncleanly", extra={"error": repr(e)})

    def run_once(self) -> int:
        """Publish what is pending now; returns the number of events published.

        Signals say *whether* there is work; the work itself always comes from the
        ``_pending`` scan in natural (insertion) order, as one batch: one flush, one archive
        write, each document's events in outbox order. That order matters where one
        aggregate's events span documents (agreement commits): publishing the documents
        read through signals one by one could put sequence 6 before 5 after an outage.
        An idle relay thus costs one read of a near-empty collection, not a scan of every
        aggregate. The scan runs without a signal at start, every ``sweep_s``, after a
        failed pass (signals taken by it are gone) and while the backlog fills a batch.
        Each document's published events are then cleared by ``_id``.
        """
        due = self._force_sweep or time.monotonic() >= self._next_sweep
        if not due and not self._take_signals():
            OUTBOX_PENDING.labels(self.service).set(0)
            return 0
        self._force_sweep = True  # until this pass has succeeded
        started = time.monotonic()
        pending = {name: list(self.db[name].find({"_pending": True}, {"_outbox": 1, "version": 1})
                              .limit(self.batch)) for name in self.collections}
        if due:  # at most ~10 % of the time in unsignalled sweeps, however large the collections
            self._next_sweep = time.monotonic() + max(self.sweep_s, 10 * (time.monotonic() - started))
        published = 0
        for name, docs in pending.items():
            coll = self.db[name]
            batch = [e for doc in docs for e in (doc.get("_outbox") or [])]
            if batch:
                self._publish(batch)
                self._archive(batch)
                published += len(batch)
            for doc in docs:
                if "version" in doc:
                    self._clear(coll, doc)
                else:
                    # Written once (e.g. agreement commits): no concurrent writer to guard against.
                    coll.update_one({"_id": doc["_id"]}, {"$set": {"_outbox": [], "_pending": False}})
        self._force_sweep = any(len(docs) >= self.batch for docs in pending.values())  # more behind
        OUTBOX_PENDING.labels(self.service).set(sum(len(d) for d in pending.values()))
        if published:
            EVENTS_PUBLISHED.labels(self.service).inc(published)
        return published

    def _take_signals(self) -> bool:
        """Remove our collections' signals; True if there were any.

        Removed *before* the scan: a writer signalling after it leaves a new one (its event
        goes out next pass); one whose signal met ours wrote before the scan, which sees it.
        """
        mine = [sig["_id"] for sig in self.db[SIGNALS].find({}, {"c": 1}) if sig.get("c") in self.collections]
        if mine:
            self.db[SIGNALS].delete_many({"_id": {"$in": mine}})
        return bool(mine)

    def _clear(self, coll, doc: dict) -> None:
        """Remove a versioned document's published events while holding its write claim.

        FerretDB 1.x applies an update as read–modify–write without isolation, so
        clearing the outbox while a writer pushes its change could drop that
        write and its event (measured: 8 of 60 steps lost). Holding the claim
        for the version we read keeps writers out; under it the document is read
        again by ``_id`` and cleared only if still at that version (else a writer
        moved it on, and its signal brings the document back: at-least-once).
        """
        claims = coll.database[f"{coll.name}_claims"]
        claim = {"_id": f"{doc['_id']}@{doc['version']}", "at": datetime.now(timezone.utc), "holder": "relay"}
        try:
            claims.insert_one(claim)
        except DuplicateKeyError:
            return
        try:
            current = coll.find_one({"_id": doc["_id"]}, {"version": 1})
            if current is not None and current.get("version") == doc["version"]:
                coll.update_one({"_id": doc["_id"]}, {"$set": {"_outbox": [], "_pending": False}})
        finally:
            claims.delete_one({"_id": claim["_id"], "holder": "relay"})

    def _publish(self, outbox: list[dict]) -> None:
        producer = self._get_producer()
        futures = [producer.send(self.topic, key=e["subject"].encode(), value=ev.encode(e),
                                 headers=ev.kafka_headers(e)) for e in outbox]
        producer.flush(timeout=15)
        for f in futures:
            f.get(timeout=15)  # raises if the broker did not acknowledge (acks=all)

    def _archive(self, outbox: list[dict]) -> None:
        try:
            self.db[ARCHIVE].insert_many([dict(e, _id=e["id"]) for e in outbox], ordered=False)
        except BulkWriteError as e:
            # Already archived by an earlier (interrupted) pass: only duplicates are fine.
            if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                raise

    def run(self, stop: threading.Event) -> None:
        delay = 0.5
        log.info("relay started", extra={"topic": self.topic, "collections": self.collections})
        while not stop.is_set():
            try:
                n = self.run_once()
                delay = 0.5
                if n == 0:
                    stop.wait(self.poll_s)
            except Exception as e:  # noqa: BLE001 - the relay must outlive any outage
                RELAY_ERRORS.labels(self.service).inc()
                log.warning("relay cannot publish yet; events stay in the outbox",
                            extra={"error": f"{type(e).__name__}: {e}", "retry_in_s": delay})
                self.close()  # a fresh producer after an outage avoids stale metadata
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.close()
        log.info("relay stopped")

