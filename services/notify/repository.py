"""MongoDB documents of the notify service; aggregate writes go with their events (outbox).

Two collections are aggregates with an outbox, relayed to ``hecht.notify``:
``subscriptions`` (``subscription.disabled``) and ``notifications``
(``notification.sent`` / ``notification.failed``). The rest is notify's own working state:

- ``event_copies``: every consumed event, redacted (the source of replays);
- ``deliveries``: one per (subscription, event), unique; ``attempts``: their attempt log;
- ``address_book``: contact data from member events (``member.erased`` purges it);
- ``regions``: region names for the e-mails;
- ``reminders``: the vote-closing reminders the scheduler fires.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from hecht import outbox
from hecht.errors import NotFound
from hecht.outbox import AggregateStore, EventDraft
from hecht.web import new_id

AGGREGATE_COLLECTIONS = ["subscriptions", "notifications"]

# Delivery states: ``pending`` (waiting for its turn, its next attempt, or being attempted
# under a claim) and the final ``succeeded`` / ``failed``.
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"

# Notification states: ``queued`` (waiting, or being sent under a claim) → ``sent`` | ``failed``.
QUEUED, SENT = "queued", "sent"


def now() -> datetime:
    return datetime.now(timezone.utc)


def ensure_indexes(db: Database) -> None:
    outbox.ensure_indexes(db, AGGREGATE_COLLECTIONS)
    db.subscriptions.create_index([("region", ASCENDING), ("_id", ASCENDING)])
    db.subscriptions.create_index([("idem_key", ASCENDING)], unique=True)  # the _id when no key was sent
    db.deliveries.create_index([("subscription_id", ASCENDING), ("event_id", ASCENDING)], unique=True)
    db.deliveries.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
    db.deliveries.create_index([("subscription_id", ASCENDING), ("subject", ASCENDING),
                                ("status", ASCENDING), ("sequence", ASCENDING)])
    db.deliveries.create_index([("subscription_id", ASCENDING), ("_id", ASCENDING)])
    db.attempts.create_index([("delivery_id", ASCENDING), ("_id", ASCENDING)])
    db.event_copies.create_index([("region", ASCENDING), ("time", ASCENDING)])
    db.address_book.create_index([("region", ASCENDING), ("status", ASCENDING)])
    db.notifications.create_index([("key", ASCENDING)], unique=True)
    db.notifications.create_index([("region", ASCENDING), ("_id", ASCENDING)])
    db.notifications.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
    db.reminders.create_index([("status", ASCENDING), ("due_at", ASCENDING)])
    db.reminders.create_index([("agreement_id", ASCENDING)])
    db.claims.create_index([("at", ASCENDING)])


class Claims:
    """The exclusive, expiring right to make one attempt at a delivery or notification.

    A claim is an insert of the unique key ``<kind>:<id>:<n>``, ``n`` being one more than the
    document's ``claim_seq`` as the claimer read it: of several workers that read the same
    state, exactly one insert succeeds. Recording the attempt's outcome increments
    ``claim_seq`` in the same write, so the next attempt needs a new key. A claim whose
    holder died is recognised by its ``lease_until``; ``expire`` then moves ``claim_seq`` past
    it. This relies only on unique keys, never on a conditional update being atomic:
    FerretDB 1.x evaluates an update's filter and applies the change without isolation (two
    concurrent ``find_one_and_update`` calls with the same filter can both "win"), whereas its
    unique indexes are enforced by the storage engine. Claims are purged after a day.
    """

    KEEP = timedelta(days=1)

    def __init__(self, db: Database):
        self.db = db
        self.coll = db.claims

    @staticmethod
    def key(kind: str, doc_id: str, seq: int) -> str:
        return f"{kind}:{doc_id}:{seq}"

    def take(self, kind: str, doc_id: str, seq: int, owner: str, lease_until: datetime) -> bool:
        try:
            self.coll.insert_one({"_id": self.key(kind, doc_id, seq), "owner": owner, "at": now(),
                                  "lease_until": lease_until})
            return True
        except DuplicateKeyError:
            return False

    def take_many(self, kind: str, wanted: list[tuple[str, int]], owner: str, lease_until: datetime) -> set[str]:
        """Several claims in one round trip: the ids of ``(doc_id, seq)`` pairs this caller won."""
        if not wanted:
            return set()
        at = now()
        docs = [{"_id": self.key(kind, doc_id, seq), "owner": owner, "at": at, "lease_until": lease_until}
                for doc_id, seq in wanted]
        lost: set[int] = set()
        try:
            self.coll.insert_many(docs, ordered=False)
        except BulkWriteError as e:
            errors = e.details.get("writeErrors", [])
            if any(err.get("code") != 11000 for err in errors):
                raise
            lost = {err["index"] for err in errors}
        return {doc_id for i, (doc_id, _) in enumerate(wanted) if i not in lost}

    def expire(self, kind: str, collection: str, doc_id: str, seq: int, at: datetime) -> bool:
        """If claim ``seq`` was never settled and its lease is over, free the document for a new claim."""
        claim = self.coll.find_one({"_id": self.key(kind, doc_id, seq)})
        if claim is None or _aware(claim["lease_until"]) >= at:
            return False
        return self.db[collection].update_one({"_id": doc_id, "claim_seq": seq - 1},
                                              {"$inc": {"claim_seq": 1}}).modified_count == 1

    def purge(self) -> int:
        return self.coll.delete_many({"at": {"$lt": now() - self.KEEP}}).deleted_count


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# -- subscriptions ----------------------------------------------------------------------------
class SubscriptionRepository:
    def __init__(self, db: Database):
        self.db = db
        self.store = AggregateStore(db.subscriptions, source="subscriptions")

    def get_doc(self, region: str, subscription_id: str) -> dict:
        doc = self.db.subscriptions.find_one({"_id": subscription_id, "region": region, "deleted": {"$ne": True}},
                                             {"_outbox": 0})
        if doc is None:
            raise NotFound(f"subscription {subscription_id} not found")
        return doc

    def find(self, subscription_id: str) -> dict | None:
        return self.db.subscriptions.find_one({"_id": subscription_id, "deleted": {"$ne": True}}, {"_outbox": 0})

    def add(self, doc: dict) -> dict:
        return self.store.create(doc, [])

    def update(self, doc: dict, changes: dict, events: list[EventDraft] = (), unset=(),
               trace: str | None = None) -> dict:
        return self.store.update(doc["_id"], doc["version"], changes, list(events), region=doc["region"],
                                 unset=unset, traceparent=trace)

    def enabled_in_region(self, region: str) -> list[dict]:
        return list(self.db.subscriptions.find({"region": region, "enabled": True, "deleted": {"$ne": True}},
                                               {"_outbox": 0}))

    def all_enabled(self) -> list[dict]:
        return list(self.db.subscriptions.find({"enabled": True, "deleted": {"$ne": True}}, {"_outbox": 0}))

    def record_success(self, subscription_id: str) -> None:
        """A delivery went through: the run of consecutive failures is over.

        Operational counters live beside the aggregate's fields but do not bump its version
        (they are not configuration, and must not make a client's ETag stale)."""
        self.db.subscriptions.update_one({"_id": subscription_id, "consecutive_failures": {"$ne": 0}},
                                         {"$set": {"consecutive_failures": 0}})

    def record_failure(self, subscription_id: str) -> int:
        doc = self.db.subscriptions.find_one_and_update(
            {"_id": subscription_id}, {"$inc": {"consecutive_failures": 1}, "$set": {"last_failure_at": now()}},
            return_document=ReturnDocument.AFTER)  # no projection: FerretDB 1.x lacks it in findAndModify
        return (doc or {}).get("consecutive_failures", 0)


# -- notify's copy of the events --------------------------------------------------------------
class EventCopies:
    """Every event notify consumed, already redacted: replays are served from here."""

    def __init__(self, db: Database):
        self.db = db

    def add(self, event: dict, short_type: str, at: datetime) -> None:
        try:
            self.db.event_copies.insert_one({"_id": event["id"], "region": event.get("region"),
                                             "type": short_type, "subject": event["subject"],
                                             "sequence": event["sequence"], "time": at, "event": event})
        except DuplicateKeyError:
            pass

    def get(self, event_id: str) -> dict | None:
        doc = self.db.event_copies.find_one({"_id": event_id}, {"event": 1})
        return doc["event"] if doc else None

    def since(self, region: str, since: datetime, until: datetime | None, limit: int):
        query: dict = {"region": region, "time": {"$gte": since}}
        if until is not None:
            query["time"]["$lt"] = until
        return self.db.event_copies.find(query, {"event": 0}).sort([("time", ASCENDING), ("_id", ASCENDING)]) \
            .limit(limit)


# -- deliveries -------------------------------------------------------------------------------
class DeliveryRepository:
    def __init__(self, db: Database):
        self.db = db
        self.coll = db.deliveries

    @staticmethod
    def new_doc(subscription: dict, event_meta: dict, at: datetime) -> dict:
        """``event_meta``: id, type (short), subject, sequence, time of the event."""
        return {"_id": new_id("dlv"), "subscription_id": subscription["_id"], "region": subscription["region"],
                "event_id": event_meta["id"], "event_type": event_meta["type"], "subject": event_meta["subject"],
                "sequence": event_meta["sequence"], "event_time": event_meta.get("time"),
                "status": PENDING, "attempt_count": 0, "round_attempts": 0,
                "next_attempt_at": at, "created_at": at, "claim_seq": 0}

    def add_many(self, docs: list[dict]) -> int:
        """Insert what is new; a (subscription, event) pair that exists already is left alone."""
        if not docs:
            return 0
        try:
            return len(self.coll.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as e:
            if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                raise
            return e.details.get("nInserted", 0)

    def get(self, subscription_id: str, delivery_id: str) -> dict:
        doc = self.coll.find_one({"_id": delivery_id, "subscription_id": subscription_id})
        if doc is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return doc

    def reopen(self, query: dict, at: datetime) -> dict | None:
        """Back to ``pending`` for a fresh round of attempts (manual retry, replay)."""
        return self.coll.find_one_and_update(
            {**query, "status": {"$in": [SUCCEEDED, FAILED]}},
            {"$set": {"status": PENDING, "round_attempts": 0, "next_attempt_at": at, "reopened_at": at}},
            return_document=ReturnDocument.AFTER)

    def attempts(self, delivery_id: str) -> list[dict]:
        """The attempt log (its own insert-only collection: appending never rewrites a delivery)."""
        return list(self.db.attempts.find({"delivery_id": delivery_id}).sort("_id", ASCENDING))

    def delete_for(self, subscription_id: str) -> None:
        self.coll.delete_many({"subscription_id": subscription_id})
        self.db.attempts.delete_many({"subscription_id": subscription_id})


# -- people -----------------------------------------------------------------------------------
def _apply_newer(coll, doc_id: str, sequence: int, fields: dict) -> None:
    """Set ``fields`` on a read-model document unless a newer event's sequence is stored."""
    try:
        coll.update_one({"_id": doc_id, "sequence": {"$lt": sequence}},
                        {"$set": dict(fields, sequence=sequence)}, upsert=True)
    except DuplicateKeyError:
        pass  # a newer event was applied already


class AddressBook:
    """Contact data of members, kept from member events only, newest sequence wins."""

    def __init__(self, db: Database):
        self.coll = db.address_book

    def apply(self, member_id: str, sequence: int, fields: dict) -> None:
        _apply_newer(self.coll, member_id, sequence, dict(fields, updated_at=now()))

    def erase(self, member_id: str, region: str, sequence: int) -> None:
        """GDPR: the contact data goes; a tombstone stops an older event from bringing it back."""
        tombstone = {"region": region, "status": "erased", "sequence": sequence, "erased_at": now()}
        try:
            self.coll.replace_one({"_id": member_id, "sequence": {"$lt": sequence}}, tombstone, upsert=True)
        except DuplicateKeyError:
            pass

    def get(self, member_id: str) -> dict | None:
        return self.coll.find_one({"_id": member_id})

    def active_ids(self, region: str, roles: tuple[str, ...] | None = None) -> list[str]:
        query: dict = {"region": region, "status": "active"}
        if roles:
            query["roles"] = {"$in": list(roles)}
        return [d["_id"] for d in self.coll.find(query, {"_id": 1}).sort("_id", ASCENDING)]

    def with_status(self, member_ids: set[str], statuses: set[str]) -> set[str]:
        """Those of ``member_ids`` whose known status is one of ``statuses``."""
        if not member_ids:
            return set()
        return {d["_id"] for d in self.coll.find({"_id": {"$in": sorted(member_ids)}}, {"status": 1})
                if d.get("status") in statuses}


class ElectorateBook:
    """The electorate of each agreement's latest vote (from ``agreement.mandate_requested``)."""

    def __init__(self, db: Database):
        self.coll = db.electorates

    def apply(self, agreement_id: str, sequence: int, members: list[str]) -> None:
        _apply_newer(self.coll, agreement_id, sequence, {"members": members})

    def members(self, agreement_id: str) -> set[str]:
        return set((self.coll.find_one({"_id": agreement_id}) or {}).get("members") or [])


class RegionBook:
    def __init__(self, db: Database):
        self.coll = db.regions

    def apply(self, region_id: str, sequence: int, name: str, country: str | None) -> None:
        _apply_newer(self.coll, region_id, sequence, {"name": name, "country": country})

    def name(self, region_id: str) -> str:
        doc = self.coll.find_one({"_id": region_id}, {"name": 1})
        return (doc or {}).get("name") or region_id


# -- notifications ----------------------------------------------------------------------------
class NotificationRepository:
    def __init__(self, db: Database):
        self.db = db
        self.coll = db.notifications
        self.store = AggregateStore(db.notifications, source="notifications")

    def queue_many(self, docs: list[dict]) -> int:
        """Record notifications before anything is sent; a key seen before is skipped.

        The documents have the shape ``AggregateStore.create`` gives (version 1, empty
        outbox), written in one batch: an ``agreement.activated`` reaches every member.
        """
        if not docs:
            return 0
        docs = [dict(d, version=1, _outbox=[], _pending=False) for d in docs]
        try:
            return len(self.coll.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as e:
            if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                raise
            return e.details.get("nInserted", 0)

    def get(self, region: str, notification_id: str) -> dict:
        doc = self.coll.find_one({"_id": notification_id, "region": region}, {"_outbox": 0})
        if doc is None:
            raise NotFound(f"notification {notification_id} not found")
        return doc

    def claim(self, owner: str, lease_s: float, candidates: int = 20) -> dict | None:
        """The next due notification, claimed (see ``Claims``); one whose sender died is freed
        once its lease is over."""
        t = now()
        claims = Claims(self.db)
        for c in self.coll.find({"status": QUEUED, "next_attempt_at": {"$lte": t}}, {"_outbox": 0, "context": 0}) \
                .sort("next_attempt_at", ASCENDING).limit(candidates):
            seq = c.get("claim_seq", 0) + 1
            if claims.take("ntf", c["_id"], seq, owner, t + timedelta(seconds=lease_s)):
                doc = self.coll.find_one({"_id": c["_id"]}, {"_outbox": 0})
                if doc is not None and doc["status"] == QUEUED and doc.get("claim_seq", 0) == seq - 1:
                    return dict(doc, lease_owner=owner)
            else:
                claims.expire("ntf", "notifications", c["_id"], seq, t)
        return None

    def requeue(self, doc: dict, at: datetime, error: str) -> None:
        """Try again later (the claim is settled: ``claim_seq`` moves on)."""
        self.coll.update_one({"_id": doc["_id"], "claim_seq": doc.get("claim_seq", 0)},
                             {"$set": {"next_attempt_at": at, "last_error": error},
                              "$inc": {"attempts": 1, "claim_seq": 1}})

    def finish(self, doc: dict, status: str, event: EventDraft, extra: dict) -> dict:
        """queued → sent | failed, with its event, in one write (version-guarded)."""
        changes = dict(extra, status=status, finished_at=now(), attempts=doc.get("attempts", 0) + 1,
                       claim_seq=doc.get("claim_seq", 0) + 1)
        return self.store.update(doc["_id"], doc["version"], changes, [event], region=doc["region"])


class ReminderRepository:
    def __init__(self, db: Database):
        self.coll = db.reminders

    def schedule(self, doc: dict) -> None:
        try:
            self.coll.insert_one(doc)
        except DuplicateKeyError:
            pass

    def cancel_for(self, agreement_id: str, reason: str) -> int:
        return self.coll.update_many({"agreement_id": agreement_id, "status": "scheduled"},
                                     {"$set": {"status": "cancelled", "cancel_reason": reason,
                                               "cancelled_at": now()}}).modified_count

    def due(self, at: datetime, limit: int = 50) -> list[dict]:
        """Reminders whose time has come. Firing one is idempotent (notification keys), so two
        schedulers may both see it: the e-mails still go out once."""
        return list(self.coll.find({"status": "scheduled", "due_at": {"$lte": at}})
                    .sort("due_at", ASCENDING).limit(limit))

    def mark(self, reminder_id: str, status: str) -> None:
        self.coll.update_one({"_id": reminder_id, "status": "scheduled"},
                             {"$set": {"status": status, "fired_at": now()}})


def purge_history(db: Database, before: datetime, chunk: int = 500) -> dict[str, int]:
    """Retention: settled deliveries with their attempts, and event copies, older than ``before``.

    A pending delivery and the copy of its event stay whatever their age (a replay needs
    the copy). E-mail notifications stay: they are the record of what each GP was sent.
    Explicit deletes rather than TTL indexes, which FerretDB 1.x does not implement.
    """
    settled = [d["_id"] for d in db.deliveries.find(
        {"status": {"$in": [SUCCEEDED, FAILED]}, "created_at": {"$lt": before}}, {"_id": 1})]
    purged = {"deliveries": 0, "attempts": 0, "event_copies": 0}
    for i in range(0, len(settled), chunk):
        ids = settled[i:i + chunk]
        purged["attempts"] += db.attempts.delete_many({"delivery_id": {"$in": ids}}).deleted_count
        purged["deliveries"] += db.deliveries.delete_many({"_id": {"$in": ids}}).deleted_count
    still_needed = {d["event_id"] for d in db.deliveries.find({"status": PENDING}, {"event_id": 1})}
    copies = [c["_id"] for c in db.event_copies.find({"time": {"$lt": before}}, {"_id": 1})
              if c["_id"] not in still_needed]
    for i in range(0, len(copies), chunk):
        purged["event_copies"] += db.event_copies.delete_many({"_id": {"$in": copies[i:i + chunk]}}).deleted_count
    return purged
