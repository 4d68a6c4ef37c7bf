"""MongoDB documents of the notify service; aggregate writes go with their events (outbox).

Two collections are aggregates whose events are relayed to ``hecht.notify``:
``subscriptions`` (``subscription.disabled``) and ``notifications``
(``notification.sent`` / ``notification.failed``). The rest is notify's own working state:

- ``event_copies``: every consumed event, redacted (the source of replays);
- ``deliveries``: one per (subscription, event), unique; ``attempts``: their attempt log;
- ``address_book``: status and roles from member events, the address from the contacts topic
  (``member.erased`` and the contact's tombstone purge it);
- ``regions``: region names for the e-mails;
- ``reminders``: the vote-closing reminders the scheduler fires.

An attempt at a delivery or a notification is claimed with one ``find_one_and_update`` /
``update_many`` whose filter holds the state the claimer read and a free (or expired)
lease: on MongoDB (and SecantusDB) a conditional update is isolated per document, so of
several workers exactly one wins each claim.

Retention (``HECHT_NOTIFY_RETENTION_DAYS``) is TTL indexes on ``expires_at``: a delivery
and its attempts get it when the delivery settles (succeeded, failed for good); an event
copy when no delivery of it is pending any more (at once if none was made). A pending
delivery, its attempts and its event's copy carry none and stay. Notifications stay: they
are the record of what each GP was sent.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Callable

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from hecht import consumer, outbox
from hecht.errors import NotFound
from hecht.outbox import AggregateStore, EventDraft
from hecht.web import ensure_ttl_index, new_id

AGGREGATE_COLLECTIONS = ["subscriptions", "notifications"]

# Delivery states: ``pending`` (waiting for its turn, its next attempt, or being attempted
# under a lease) and the final ``succeeded`` / ``failed``.
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"

# Notification states: ``queued`` (waiting, or being sent under a lease) → ``sent`` | ``failed``.
QUEUED, SENT = "queued", "sent"


def now() -> datetime:
    return datetime.now(timezone.utc)


def retention() -> timedelta:
    """How long settled deliveries, their attempts and event copies are kept."""
    return timedelta(days=float(os.environ.get("HECHT_NOTIFY_RETENTION_DAYS", 90)))


def ensure_indexes(db: Database) -> None:
    outbox.ensure_indexes(db)
    consumer.ensure_indexes(db)
    db.subscriptions.create_index([("region", ASCENDING), ("_id", ASCENDING)])
    db.subscriptions.create_index([("idem_key", ASCENDING)], unique=True)  # the _id when no key was sent
    db.deliveries.create_index([("subscription_id", ASCENDING), ("event_id", ASCENDING)], unique=True)
    db.deliveries.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
    db.deliveries.create_index([("subscription_id", ASCENDING), ("subject", ASCENDING),
                                ("status", ASCENDING), ("sequence", ASCENDING)])
    db.deliveries.create_index([("subscription_id", ASCENDING), ("_id", ASCENDING)])
    db.deliveries.create_index([("event_id", ASCENDING), ("status", ASCENDING)])  # is a copy still needed?
    db.attempts.create_index([("delivery_id", ASCENDING), ("_id", ASCENDING)])
    db.event_copies.create_index([("region", ASCENDING), ("time", ASCENDING)])
    for name in ("deliveries", "attempts", "event_copies"):
        ensure_ttl_index(db[name], "expires_at", 0)
    db.address_book.create_index([("region", ASCENDING), ("status", ASCENDING)])
    db.notifications.create_index([("key", ASCENDING)], unique=True)
    db.notifications.create_index([("region", ASCENDING), ("_id", ASCENDING)])
    # A member's own notifications (GDPR export), in id order.
    db.notifications.create_index([("region", ASCENDING), ("member_id", ASCENDING), ("_id", ASCENDING)],
                                  name="region_member")
    db.notifications.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
    db.reminders.create_index([("status", ASCENDING), ("due_at", ASCENDING)])
    db.reminders.create_index([("agreement_id", ASCENDING)])
    db.subscriptions.create_index([("region", ASCENDING), ("owner", ASCENDING), ("_id", ASCENDING)])
    db.integrators.create_index([("region", ASCENDING), ("_id", ASCENDING)])
    db.integrators.create_index([("contact_email_key", ASCENDING)])  # the portal's integrator sign-in
    from .integrators import rekey_contacts
    rekey_contacts(db)
    db.integrators.create_index([("status", ASCENDING)])  # the delivery engine holds suspended ones


# -- subscriptions ----------------------------------------------------------------------------
class SubscriptionRepository:
    def __init__(self, db: Database):
        self.db = db
        self.store = AggregateStore(db.subscriptions, source="subscriptions")

    def get_doc(self, region: str, subscription_id: str) -> dict:
        doc = self.db.subscriptions.find_one({"_id": subscription_id, "region": region, "deleted": {"$ne": True}})
        if doc is None:
            raise NotFound(f"subscription {subscription_id} not found")
        return doc

    def find(self, subscription_id: str) -> dict | None:
        return self.db.subscriptions.find_one({"_id": subscription_id, "deleted": {"$ne": True}})

    def add(self, doc: dict) -> dict:
        return self.store.create(doc, [])

    def update(self, doc: dict, changes: dict, events: list[EventDraft] = (), unset=(),
               trace: str | None = None) -> dict:
        return self.store.update(doc["_id"], doc["version"], changes, list(events), region=doc["region"],
                                 unset=unset, traceparent=trace)

    def enabled_in_region(self, region: str) -> list[dict]:
        return list(self.db.subscriptions.find({"region": region, "enabled": True, "deleted": {"$ne": True}}))

    def all_enabled(self) -> list[dict]:
        return list(self.db.subscriptions.find({"enabled": True, "deleted": {"$ne": True}}))

    def record_success(self, subscription_id: str) -> None:
        """A delivery went through: the run of consecutive failures is over.

        Operational counters live beside the aggregate's fields but do not bump its version
        (they are not configuration, and must not make a client's ETag stale)."""
        self.db.subscriptions.update_one({"_id": subscription_id, "consecutive_failures": {"$ne": 0}},
                                         {"$set": {"consecutive_failures": 0}})

    def record_failure(self, subscription_id: str) -> int:
        doc = self.db.subscriptions.find_one_and_update(
            {"_id": subscription_id}, {"$inc": {"consecutive_failures": 1}, "$set": {"last_failure_at": now()}},
            projection={"consecutive_failures": 1}, return_document=ReturnDocument.AFTER)
        return (doc or {}).get("consecutive_failures", 0)


# -- notify's copy of the events --------------------------------------------------------------
class EventCopies:
    """Every event notify consumed, already redacted: replays are served from here.

    A copy that deliveries need is *pinned* (no ``expires_at``) until none of them is pending;
    then it expires ``retention()`` later. A copy no delivery needed expires ``retention()``
    after its event's time."""

    def __init__(self, db: Database):
        self.db = db
        self.coll = db.event_copies

    def add(self, event: dict, short_type: str, at: datetime, *, pinned: bool) -> bool:
        """Keep the copy (False if it was there already, a redelivery: left as it is)."""
        doc = {"_id": event["id"], "region": event.get("region"), "type": short_type, "subject": event["subject"],
               "sequence": event["sequence"], "time": at, "event": event}
        if not pinned:
            doc["expires_at"] = at + retention()
        try:
            self.coll.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def pin(self, event_ids: list[str]) -> None:
        """New or reopened deliveries need these copies: keep them while they are pending."""
        if event_ids:
            self.coll.update_many({"_id": {"$in": event_ids}, "expires_at": {"$exists": True}},
                                  {"$unset": {"expires_at": ""}})

    def release(self, event_ids, at: datetime) -> None:
        """Deliveries of these events settled or went: a copy no pending delivery needs any more
        expires ``retention()`` from ``at``.

        Called after the writes that settled them, so of two workers settling the last two
        deliveries of one event at once, at least one sees both settled."""
        ids = sorted(set(event_ids))
        if not ids:
            return
        needed = set(self.db.deliveries.distinct("event_id", {"event_id": {"$in": ids}, "status": PENDING}))
        done = [i for i in ids if i not in needed]
        if done:
            self.coll.update_many({"_id": {"$in": done}, "expires_at": {"$exists": False}},
                                  {"$set": {"expires_at": at + retention()}})

    def get(self, event_id: str) -> dict | None:
        doc = self.coll.find_one({"_id": event_id}, {"event": 1})
        return doc["event"] if doc else None

    def since(self, region: str, since: datetime, until: datetime | None, limit: int):
        query: dict = {"region": region, "time": {"$gte": since}}
        if until is not None:
            query["time"]["$lt"] = until
        return self.coll.find(query, {"event": 0}).sort([("time", ASCENDING), ("_id", ASCENDING)]).limit(limit)


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

    def missing(self, docs: list[dict]) -> list[dict]:
        """Those of ``docs`` whose (subscription, event) has no delivery yet."""
        if not docs:
            return []
        have = {(d["subscription_id"], d["event_id"]) for d in self.coll.find(
            {"event_id": {"$in": sorted({d["event_id"] for d in docs})}}, {"subscription_id": 1, "event_id": 1})}
        return [d for d in docs if (d["subscription_id"], d["event_id"]) not in have]

    def claim(self, candidates: list[dict], owner: str, at: datetime, lease_until: datetime) -> set[str]:
        """Lease the attempts at ``candidates`` (as read by the caller); the ids this caller won.

        One ``update_many``: each candidate matches only while it is still pending, due, at
        the ``claim_seq`` the caller read (nothing happened to it since) and not leased by a
        live holder. The claim moves ``claim_seq`` on, and every outcome is recorded under
        the new number: a holder that outlived its lease (and was taken over) records nothing.
        """
        if not candidates:
            return set()
        res = self.coll.update_many(
            {"$and": [{"$or": [{"_id": d["_id"], "claim_seq": d.get("claim_seq", 0)} for d in candidates]},
                      {"$or": [{"lease_until": None}, {"lease_until": {"$lte": at}}]}],
             "status": PENDING, "next_attempt_at": {"$lte": at}},
            {"$set": {"lease_owner": owner, "lease_until": lease_until}, "$inc": {"claim_seq": 1}})
        if res.modified_count == len(candidates):
            return {d["_id"] for d in candidates}
        if res.modified_count == 0:
            return set()
        return {d["_id"] for d in self.coll.find({"_id": {"$in": [d["_id"] for d in candidates]},
                                                  "lease_owner": owner}, {"_id": 1})}

    def settled(self, deliveries: list[dict], at: datetime) -> None:
        """These deliveries settled at ``at``: their earlier attempts and (unless another
        delivery still needs it) their event's copy expire with them."""
        earlier = [d["_id"] for d in deliveries if d.get("attempt_count", 0) > 0]
        if earlier:
            self.db.attempts.update_many({"delivery_id": {"$in": earlier}, "expires_at": {"$exists": False}},
                                         {"$set": {"expires_at": at + retention()}})
        EventCopies(self.db).release([d["event_id"] for d in deliveries], at)

    def get(self, subscription_id: str, delivery_id: str) -> dict:
        doc = self.coll.find_one({"_id": delivery_id, "subscription_id": subscription_id})
        if doc is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return doc

    def reopen(self, query: dict, at: datetime) -> dict | None:
        """Back to ``pending`` for a fresh round of attempts (manual retry, replay): it, its
        attempts and its event's copy no longer expire."""
        doc = self.coll.find_one_and_update(
            {**query, "status": {"$in": [SUCCEEDED, FAILED]}},
            {"$set": {"status": PENDING, "round_attempts": 0, "next_attempt_at": at, "reopened_at": at},
             "$unset": {"expires_at": ""}},
            return_document=ReturnDocument.AFTER)
        if doc is not None:
            self.db.attempts.update_many({"delivery_id": doc["_id"], "expires_at": {"$exists": True}},
                                         {"$unset": {"expires_at": ""}})
            EventCopies(self.db).pin([doc["event_id"]])
        return doc

    def attempts(self, delivery_id: str) -> list[dict]:
        """The attempt log (its own insert-only collection: appending never rewrites a delivery)."""
        return list(self.db.attempts.find({"delivery_id": delivery_id}).sort("_id", ASCENDING))

    def delete_for(self, subscription_id: str) -> None:
        waiting = self.coll.distinct("event_id", {"subscription_id": subscription_id, "status": PENDING})
        self.coll.delete_many({"subscription_id": subscription_id})
        self.db.attempts.delete_many({"subscription_id": subscription_id})
        EventCopies(self.db).release(waiting, now())  # the copies only these deliveries needed


# -- people -----------------------------------------------------------------------------------
def _apply_newer(coll, doc_id: str, sequence: int, fields: dict) -> None:
    """Set ``fields`` on a read-model document unless a newer event's sequence is stored."""
    try:
        coll.update_one({"_id": doc_id, "sequence": {"$lt": sequence}},
                        {"$set": dict(fields, sequence=sequence)}, upsert=True)
    except DuplicateKeyError:
        pass  # a newer event was applied already


class AddressBook:
    """What notify knows of each member, newest wins per source: region, status and roles from
    member events (``sequence``); e-mail, language and the rejection reason from the internal
    contacts topic (``contact_sequence``; services/notify/contacts.py). The two topics are read
    independently, so either may come first; a tombstone or ``member.erased`` ends both."""

    CONTACT_FIELDS = ("email", "language", "reason")

    def __init__(self, db: Database):
        self.coll = db.address_book

    def apply(self, member_id: str, sequence: int, fields: dict) -> None:
        # Like ``_apply_newer``, but the document may exist without ``sequence`` (its contact
        # record came first).
        try:
            self.coll.update_one({"_id": member_id, "$or": [{"sequence": {"$lt": sequence}},
                                                            {"sequence": {"$exists": False}}]},
                                 {"$set": dict(fields, sequence=sequence, updated_at=now())}, upsert=True)
        except DuplicateKeyError:
            pass  # a newer event was applied already

    def apply_contact(self, member_id: str, contact: dict) -> bool:
        """A contact record (newer than the one kept, for a member neither erased nor
        tombstoned); False if it was ignored."""
        sequence = int(contact.get("sequence") or 0)
        fields = {k: contact.get(k) for k in self.CONTACT_FIELDS}
        unset = {k: "" for k, v in fields.items() if v is None}
        update: dict = {"$set": dict({k: v for k, v in fields.items() if v is not None},
                                     contact_sequence=sequence, contact_at=now())}
        if unset:
            update["$unset"] = unset
        if contact.get("region_id"):
            update["$setOnInsert"] = {"region": contact["region_id"]}
        try:
            res = self.coll.update_one(
                {"_id": member_id, "status": {"$ne": "erased"}, "contact_erased": {"$ne": True},
                 "$or": [{"contact_sequence": {"$lt": sequence}}, {"contact_sequence": {"$exists": False}}]},
                update, upsert=True)
            return bool(res.modified_count or res.upserted_id)
        except DuplicateKeyError:
            return False  # erased, tombstoned or a newer record kept already

    def forget_contact(self, member_id: str) -> None:
        """The contact's tombstone: the address, language and reason go for good (a record
        published before it and read again later cannot bring them back)."""
        self.coll.update_one({"_id": member_id},
                             {"$unset": {k: "" for k in self.CONTACT_FIELDS},
                              "$set": {"contact_erased": True, "contact_at": now()}}, upsert=True)

    def erase(self, member_id: str, region: str, sequence: int) -> None:
        """GDPR: the contact data goes; a tombstone stops an older event from bringing it back."""
        tombstone = {"region": region, "status": "erased", "sequence": sequence, "erased_at": now(),
                     "contact_erased": True}
        try:
            self.coll.replace_one({"_id": member_id, "$or": [{"sequence": {"$lt": sequence}},
                                                             {"sequence": {"$exists": False}}]},
                                  tombstone, upsert=True)
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

    def apply(self, region_id: str, sequence: int, name: str, country: str | None,
              unicode_email_local_parts: bool = False) -> None:
        _apply_newer(self.coll, region_id, sequence, {"name": name, "country": country,
                                                      "unicode_email_local_parts": bool(unicode_email_local_parts)})

    def name(self, region_id: str) -> str:
        doc = self.coll.find_one({"_id": region_id}, {"name": 1})
        return (doc or {}).get("name") or region_id

    def known(self, region_id: str) -> bool:
        """Has a ``region.*`` event from the members service named this region?"""
        return self.coll.find_one({"_id": region_id}, {"_id": 1}) is not None

    def unicode_email_local_parts(self, region_id: str) -> bool:
        """Does the region accept non-ASCII local parts in addresses (hecht/emails.py)? No until
        its events said so."""
        doc = self.coll.find_one({"_id": region_id}, {"unicode_email_local_parts": 1})
        return bool((doc or {}).get("unicode_email_local_parts"))


# -- notifications ----------------------------------------------------------------------------
class NotificationRepository:
    def __init__(self, db: Database):
        self.db = db
        self.coll = db.notifications
        self.store = AggregateStore(db.notifications, source="notifications")

    def queue_many(self, docs: list[dict]) -> int:
        """Record notifications before anything is sent; a key seen before is skipped.

        The documents have the shape ``AggregateStore.create`` gives (version 1, no events),
        written in one batch: an ``agreement.activated`` reaches every member.
        """
        if not docs:
            return 0
        docs = [dict(d, version=1) for d in docs]
        try:
            return len(self.coll.insert_many(docs, ordered=False).inserted_ids)
        except BulkWriteError as e:
            if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                raise
            return e.details.get("nInserted", 0)

    def of_member(self, region: str, member_id: str) -> list[dict]:
        """Every notification to the member, oldest first, without the rendered context."""
        return list(self.coll.find({"region": region, "member_id": member_id}, {"context": 0})
                    .sort("_id", ASCENDING))

    def get(self, region: str, notification_id: str) -> dict:
        doc = self.coll.find_one({"_id": notification_id, "region": region})
        if doc is None:
            raise NotFound(f"notification {notification_id} not found")
        return doc

    def claim(self, owner: str, lease_s: float) -> dict | None:
        """The next due notification, leased to ``owner`` for ``lease_s`` seconds.

        One ``find_one_and_update``: of several senders exactly one gets it. While leased its
        ``next_attempt_at`` is the lease's end, so a sender that died holding it leaves it due
        again then; ``claim_seq`` moves on with every claim and guards the holder's requeue.
        """
        t = now()
        return self.coll.find_one_and_update(
            {"status": QUEUED, "next_attempt_at": {"$lte": t}},
            {"$set": {"next_attempt_at": t + timedelta(seconds=lease_s), "lease_owner": owner},
             "$inc": {"claim_seq": 1}},
            sort=[("next_attempt_at", ASCENDING)], return_document=ReturnDocument.AFTER)

    def requeue(self, doc: dict, at: datetime, error: str) -> None:
        """Try again at ``at`` (unless the lease was lost: then its new holder decides)."""
        self.coll.update_one({"_id": doc["_id"], "claim_seq": doc.get("claim_seq", 0)},
                             {"$set": {"next_attempt_at": at, "last_error": error},
                              "$unset": {"lease_owner": ""}, "$inc": {"attempts": 1}})

    def finish(self, doc: dict, status: str, event: EventDraft | None, extra: dict,
               before_commit: Callable[[], None] | None = None) -> dict:
        """queued → sent | failed, with its event, in one transaction (version-guarded);
        ``before_commit`` (the SMTP hand-over) runs inside it, just before the commit."""
        changes = dict(extra, status=status, finished_at=now(), attempts=doc.get("attempts", 0) + 1)
        return self.store.update(doc["_id"], doc["version"], changes, [event] if event else [], region=doc["region"],
                                 unset=("lease_owner",), before_commit=before_commit)


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
