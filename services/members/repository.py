"""MongoDB documents ↔ members aggregates; every write goes with its events (outbox)."""
from __future__ import annotations

import logging
import re
import time
from datetime import date, datetime, timedelta, timezone

from pymongo import ASCENDING, ReplaceOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from hecht import emails, outbox, topics
from hecht.errors import Conflict, NotFound, PreconditionFailed
from hecht.outbox import AggregateStore, EventDraft, RecordDraft

from .domain import (MEMBER_STATUSES, REVERIFY_STATUSES, STAFF_EVENT_REGION, Capacity, Member, Region,
                     Registration, Staff, reverify_cutoff, snapshot_rows, stale_cutoff)

log = logging.getLogger(__name__)

# Never leave the repository: uniqueness keys.
INTERNAL_FIELDS = {"email_key": 0, "registration_key": 0, "chair_seat": 0, "signup_notice_at": 0}
SNAPSHOTS = "capacity_snapshots"   # one document per region and day, ``_id`` = ``{region}:{day}``


def ensure_indexes(db: Database) -> None:
    outbox.ensure_indexes(db)
    # Uniqueness lives in the database, so two concurrent sign-ups cannot both win. A member
    # without a key (erased, or holding no chair) gets a placeholder unique to it (see
    # ``_keys``): plain unique indexes, no partial-index support needed from the server.
    db.members.create_index([("region", ASCENDING), ("email_key", ASCENDING)], unique=True,
                            name="one_member_per_email")
    db.members.create_index([("region", ASCENDING), ("registration_key", ASCENDING)], unique=True,
                            name="one_member_per_registration")
    db.members.create_index([("chair_seat", ASCENDING)], unique=True, name="one_chair_per_region")
    db.members.create_index([("region", ASCENDING), ("status", ASCENDING)], name="region_status")
    # Lists page in _id order within a region: this index serves the filter and the sort,
    # so a page costs the same at 1k and at 50k members.
    db.members.create_index([("region", ASCENDING), ("_id", ASCENDING)], name="region_id_order")
    # A sign-in looks the address up across regions (the unique index above leads with region).
    db.members.create_index([("email_key", ASCENDING)], name="email_lookup")
    # The purge finds stale sign-ups: pending, by age.
    db.members.create_index([("status", ASCENDING), ("signed_up_at", ASCENDING)], name="status_signed_up")
    # One account per address across all staff (as members' addresses: case-insensitive).
    db.staff.create_index([("email_key", ASCENDING)], unique=True, name="one_staff_per_email")
    db.staff.create_index([("admin_of", ASCENDING), ("_id", ASCENDING)], name="admin_of_id_order")
    # The daily job asks "which regions have today's snapshot?" (history reads go by _id).
    db[SNAPSHOTS].create_index([("day", ASCENDING)], name="snapshot_day")
    rekey_emails(db)


# Addresses with a character outside ASCII: the only ones whose key the rule of hecht/emails.py
# changed. For ASCII addresses ``casefold()``, the earlier key, is the new key.
_NON_ASCII = {"$regex": "[^\\x00-\\x7F]"}


def rekey_emails(db: Database) -> int:
    """Recompute ``email_key`` of members and staff stored with the earlier rule (``casefold()``
    of the whole address), so they are found under the rule of hecht/emails.py. Idempotent, run
    with the indexes (at start-up and by ``hecht migrate``); reads only addresses with non-ASCII
    characters. A key that another account of the same scope already holds is left as it was
    (logged): the two are one identity now, and staff must decide which account stays."""
    changed = 0
    for coll, scope in ((db.members, ("region",)), (db.staff, ())):
        for doc in coll.find({"email": _NON_ASCII, "status": {"$ne": "erased"}},
                             {"email": 1, "email_key": 1, **{f: 1 for f in scope}}):
            new = emails.key(doc["email"])
            if doc.get("email_key") == new:
                continue
            try:
                changed += coll.update_one({"_id": doc["_id"], "email": doc["email"]},
                                           {"$set": {"email_key": new}}).modified_count
            except DuplicateKeyError:
                log.warning("email key not recomputed: another account has it",
                            extra={"collection": coll.name, "id": doc["_id"]})
    if changed:
        log.info("email keys recomputed", extra={"documents": changed})
    return changed


def _aware(moment: datetime) -> datetime:
    """Mongo returns naive UTC datetimes; compare them as aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


VISIBLE_STATUSES = [s for s in MEMBER_STATUSES if s != "erased"]

_RECENT_REGIONS: dict[tuple[str, str], tuple[float, Region]] = {}


class RegionRepository:
    def __init__(self, db: Database):
        self.db = db
        self.store = AggregateStore(db.regions, source="")

    @staticmethod
    def to_domain(doc: dict) -> Region:
        return Region(id=doc["_id"], name=doc["name"], country=doc["country"], kind=doc["kind"],
                      municipalities=doc["municipalities"], mandate_policy=doc["mandate_policy"],
                      unicode_email_local_parts=bool(doc.get("unicode_email_local_parts")))

    def get_doc(self, region_id: str) -> dict:
        doc = self.db.regions.find_one({"_id": region_id})
        if doc is None:
            raise NotFound(f"region {region_id} not found")
        return doc

    def get(self, region_id: str) -> tuple[Region, int]:
        doc = self.get_doc(region_id)
        return self.to_domain(doc), doc["version"]

    def get_recent(self, region_id: str, max_age_s: float = 5.0) -> Region:
        """The region as read at most ``max_age_s`` ago in this process.

        For the public sign-up, the hot path: regions change rarely, and a municipality added
        to a region is accepted a few seconds later at worst. Saves a round trip per sign-up.
        """
        key = (self.db.name, region_id)
        now = time.monotonic()
        hit = _RECENT_REGIONS.get(key)
        if hit and now - hit[0] < max_age_s:
            return hit[1]
        region, _ = self.get(region_id)
        if len(_RECENT_REGIONS) > 1000:
            _RECENT_REGIONS.clear()
        _RECENT_REGIONS[key] = (now, region)
        return region

    def add(self, region: Region, events: list[EventDraft], trace: str | None) -> dict:
        data = region.event_data()
        doc = {"_id": region.id, "region": region.id, **{k: v for k, v in data.items() if k != "region_id"}}
        return self.store.create(doc, events, traceparent=trace)

    def save(self, region: Region, expected_version: int, events: list[EventDraft], trace: str | None) -> dict:
        data = region.event_data()
        changes = {k: v for k, v in data.items() if k != "region_id"}
        return self.store.update(region.id, expected_version, changes, events, region=region.id,
                                 traceparent=trace)

    def history(self, region_id: str) -> list[dict]:
        self.get_doc(region_id)
        return outbox.history(self.db, region_id, actors=True)


# Member event fields that older events carried (before personal data left them) and erasure removes: the
# ``personal`` block, the language and the free text (a reason; the capacity note, below).
PERSONAL_EVENT_FIELDS = ("personal", "language", "reason")


def without_personal(event: dict) -> dict:
    """A copy of a member event without personal data or free text. Events written now carry
    none (``Member.event_data``); archived ones from before may, and erasure strips them."""
    data = {k: v for k, v in (event.get("data") or {}).items() if k not in PERSONAL_EVENT_FIELDS}
    if isinstance(data.get("capacity"), dict) and "note" in data["capacity"]:
        data["capacity"] = {k: v for k, v in data["capacity"].items() if k != "note"}
    return {**event, "data": data}


class MemberRepository:
    """Member documents: the aggregate's fields, its uniqueness keys and its outbox."""

    def __init__(self, db: Database):
        self.db = db
        self.coll = db.members
        self.store = AggregateStore(db.members, source="members")

    # -- mapping -------------------------------------------------------------------------------
    @staticmethod
    def _keys(m: Member) -> dict:
        """Values of the unique indexes; a member without one gets a placeholder of its own."""
        active = m.status != "erased"
        return {
            "email_key": emails.key(m.email) if active and m.email else f"erased:{m.id}",
            "registration_key": m.registration.identity_key if active and m.registration else f"erased:{m.id}",
            "chair_seat": f"chair:{m.region}" if m.holds_chair else f"none:{m.id}",
        }

    @classmethod
    def _fields(cls, m: Member) -> dict:
        """Everything stored; None means 'absent from the document' (erasure removes fields)."""
        return {
            "region": m.region, "status": m.status, "category": m.category,
            "given_name": m.given_name, "family_name": m.family_name, "email": m.email,
            "language": m.language,
            "registration": {"scheme": m.registration.scheme, "number": m.registration.number}
            if m.registration else None,
            "practice": m.practice, "capacity": m.capacity.to_dict() if m.capacity else None,
            "roles": list(m.roles), "reason": m.reason,
            "signed_up_at": m.signed_up_at, "updated_at": m.updated_at,
            "email_verified_at": m.email_verified_at, "verified_at": m.verified_at,
            "reverify_notified_for": m.reverify_notified_for,
            **cls._keys(m),
            # when a sign-up attempt was last mailed to the member: gone with erasure
            **({"signup_notice_at": None} if m.status == "erased" else {}),
        }

    @staticmethod
    def to_domain(doc: dict) -> Member:
        reg = doc.get("registration")
        return Member(id=doc["_id"], region=doc["region"], status=doc["status"], category=doc.get("category"),
                      given_name=doc.get("given_name"), family_name=doc.get("family_name"),
                      email=doc.get("email"), language=doc.get("language"),
                      registration=Registration(reg["scheme"], reg["number"]) if reg else None,
                      practice=doc.get("practice"), capacity=Capacity.from_dict(doc.get("capacity")),
                      roles=list(doc.get("roles") or []), reason=doc.get("reason"),
                      signed_up_at=doc.get("signed_up_at"), updated_at=doc.get("updated_at"),
                      email_verified_at=doc.get("email_verified_at"), verified_at=doc.get("verified_at"),
                      reverify_notified_for=doc.get("reverify_notified_for"))

    # -- reads -----------------------------------------------------------------------------------
    def get_doc(self, region_id: str, member_id: str) -> dict:
        """The member, only if it belongs to ``region_id`` (another region's id is a 404)."""
        doc = self.coll.find_one({"_id": member_id, "region": region_id}, INTERNAL_FIELDS)
        if doc is None:
            raise NotFound(f"member {member_id} not found in region {region_id}")
        return doc

    def get(self, region_id: str, member_id: str) -> tuple[Member, int]:
        doc = self.get_doc(region_id, member_id)
        return self.to_domain(doc), doc["version"]

    def chair_holder(self, region_id: str) -> str | None:
        doc = self.coll.find_one({"chair_seat": f"chair:{region_id}"}, {"_id": 1})
        return doc["_id"] if doc else None

    @staticmethod
    def stale_query(cutoff: datetime) -> dict:
        """Stale sign-ups (see ``domain.is_stale_sign_up``): pending, unproven, from before ``cutoff``."""
        return {"status": "pending", "email_verified_at": None, "signed_up_at": {"$lt": cutoff}}

    @staticmethod
    def fresh_query(cutoff: datetime) -> dict:
        """Everything that is not a stale sign-up (the negation of ``stale_query``)."""
        return {"$or": [{"status": {"$ne": "pending"}}, {"email_verified_at": {"$ne": None}},
                        {"signed_up_at": {"$gte": cutoff}}]}

    @staticmethod
    def list_query(region_id: str, *, status: str | None = None, role: str | None = None,
                   municipality: str | None = None, capacity: str | None = None, q: str | None = None,
                   email_verified: bool | None = None, stale: bool | None = None,
                   now: datetime | None = None, confirm_days: int = 7) -> dict:
        """Filters of the list endpoint; tombstones only when asked for (status=erased).

        Stale sign-ups are left out unless ``stale`` is true, which lists only them."""
        # The visible statuses listed ($in), not "$ne: erased": an index can serve a list of
        # values, and a negation makes the server read the whole region.
        query: dict = {"region": region_id, "status": status or {"$in": VISIBLE_STATUSES}}
        if role:
            query["roles"] = role
        if municipality:
            query["practice.municipality"] = municipality
        if capacity == "unknown":
            query["capacity"] = None
        elif capacity:
            query["capacity.status"] = capacity
        terms = (q or "").split()
        if terms:
            # Every word must start a given or family name part, case-insensitively.
            query["$and"] = [{"$or": [{f: {"$regex": rf"(^|[\s'-]){re.escape(t)}", "$options": "i"}}
                                      for f in ("given_name", "family_name")]} for t in terms[:5]]
        if email_verified is not None:
            query["email_verified_at"] = {"$ne": None} if email_verified else None
        if now is not None:
            cutoff = stale_cutoff(now, confirm_days)
            if stale:
                query = {"$and": [query, MemberRepository.stale_query(cutoff)]}
            else:
                query = {"$and": [query, MemberRepository.fresh_query(cutoff)]}
        return query

    @staticmethod
    def reverify_due_query(now: datetime, months: int, due: bool = True) -> dict:
        """Members whose registration is past its re-confirmation (see ``domain.reverify_due_at``;
        no ``verified_at``: the sign-up time stands in), or with ``due`` false the others."""
        cutoff = reverify_cutoff(now, months)
        past = {"status": {"$in": list(REVERIFY_STATUSES)},
                "$or": [{"verified_at": {"$lt": cutoff}},
                        {"verified_at": None, "signed_up_at": {"$lt": cutoff}}]}
        return past if due else {"$nor": [past]}

    def reverify_due_ids(self, region_id: str, now: datetime, months: int,
                         limit: int = 10_000) -> list[str]:
        """The region's members past due whose period the sweep has not announced yet (a cheap
        pre-filter: the domain decides again on the fresh document)."""
        query = {"$and": [{"region": region_id}, self.reverify_due_query(now, months)]}
        return [d["_id"] for d in self.coll.find(query, {"_id": 1}).sort("_id", ASCENDING).limit(limit)]

    def with_email(self, email: str) -> list[dict]:
        """Every membership, in every region, whose address has this one's key (hecht/emails.py;
        erased ones have none)."""
        return list(self.coll.find({"email_key": emails.key(email)}, INTERNAL_FIELDS).sort("region", ASCENDING))

    def stale_ids(self, now: datetime, confirm_days: int, limit: int = 10_000) -> list[tuple[str, str]]:
        """(region, member id) of the stale sign-ups, oldest first."""
        cursor = self.coll.find(self.stale_query(stale_cutoff(now, confirm_days)), {"region": 1}) \
            .sort("signed_up_at", ASCENDING).limit(limit)
        return [(d["region"], d["_id"]) for d in cursor]

    def capacity_counts(self, region_id: str) -> list[tuple[str | None, str | None, int]]:
        """(municipality, capacity status, n) over the region's ACTIVE members ($group)."""
        pipeline = [
            {"$match": {"region": region_id, "status": "active"}},
            {"$group": {"_id": {"m": "$practice.municipality", "c": "$capacity.status"}, "n": {"$sum": 1}}},
        ]
        return [(r["_id"].get("m"), r["_id"].get("c"), r["n"]) for r in self.coll.aggregate(pipeline)]

    def history(self, region_id: str, member_id: str) -> list[dict]:
        member, _ = self.get(region_id, member_id)
        events = outbox.history(self.db, member_id, actors=True)
        return [without_personal(e) for e in events] if member.status == "erased" else events

    # -- writes ----------------------------------------------------------------------------------
    def add(self, member: Member, events: list[EventDraft], trace: str | None,
            records: list[RecordDraft] = ()) -> dict:
        doc = {"_id": member.id, **{k: v for k, v in self._fields(member).items() if v is not None}}
        try:
            return self.store.create(doc, events, traceparent=trace, records=records)
        except Conflict:
            raise self._which_duplicate(member) from None

    def save(self, member: Member, expected_version: int, events: list[EventDraft], trace: str | None,
             records: list[RecordDraft] = ()) -> dict:
        fields = self._fields(member)
        changes = {k: v for k, v in fields.items() if v is not None}
        unset = [k for k, v in fields.items() if v is None]
        try:
            return self.store.update(member.id, expected_version, changes, events, region=member.region,
                                     unset=unset, traceparent=trace, records=records)
        except Conflict:
            raise self._which_duplicate(member) from None

    def holders(self, m: Member) -> list[tuple[dict, str]]:
        """The region's members holding ``m``'s address or registration (a sign-up of ``m`` would
        break a unique key), each with what it matched on: ``"email"`` or ``"registration"``."""
        keys = self._keys(m)
        docs = self.coll.find({"region": m.region, "$or": [{"email_key": keys["email_key"]},
                                                           {"registration_key": keys["registration_key"]}]})
        return [(d, "email" if d.get("email_key") == keys["email_key"] else "registration")
                for d in docs.sort("_id", ASCENDING)]

    def note_sign_up_attempt(self, holders: list[tuple[dict, str, dict]], at: datetime,
                             quiet: timedelta) -> int:
        """Someone signed up with these members' address or registration: for each
        ``(document, via, notice)`` not noticed within ``quiet``, its contact record with the
        notice (outbox: notify sends the e-mail), in one transaction. Nothing about the
        membership changes (not its version: its ETag stays); each member's ``signup_notice_at``
        is set, guarded by the version read, so an erasure or a change in between is a
        PreconditionFailed (the caller decides again), and so is a concurrent notice (then
        the quiet time holds). Returns how many were noticed."""
        due = [(d, via, n) for d, via, n in holders
               if d.get("signup_notice_at") is None or _aware(d["signup_notice_at"]) <= at - quiet]
        if not due:
            return 0

        def work(s) -> int:
            entries = []
            for doc, _via, notice in due:
                quiet_since = {"$or": [{"signup_notice_at": None}, {"signup_notice_at": {"$lte": at - quiet}}]}
                res = self.coll.update_one({"_id": doc["_id"], "version": doc["version"],
                                            "status": {"$ne": "erased"}, **quiet_since},
                                           {"$set": {"signup_notice_at": at}}, session=s)
                if res.matched_count != 1:
                    raise PreconditionFailed(f"member {doc['_id']} changed during a sign-up")
                contact = self.to_domain(doc).contact_data()
                entries += outbox.record_entries(doc["_id"], doc["region"], doc["version"], [
                    RecordDraft(topics.MEMBER_CONTACTS, doc["_id"], dict(contact, notice=notice))])
            self.db[outbox.OUTBOX].insert_many(entries, session=s)
            return len(due)
        return outbox.transaction(self.db, work)

    def _which_duplicate(self, m: Member) -> Conflict:
        """Name the rule a refused write broke (the server's duplicate-key error does not)."""
        keys = self._keys(m)
        others = {"region": m.region, "_id": {"$ne": m.id}}
        if self.coll.find_one({**others, "registration_key": keys["registration_key"]}, {"_id": 1}):
            return Conflict(f"this {m.registration.scheme} registration is already enrolled in region {m.region}",
                            errors={"registration": {"number": ["already enrolled in this region"]}})
        if self.coll.find_one({**others, "email_key": keys["email_key"]}, {"_id": 1}):
            return Conflict(f"a member with this email address is already enrolled in region {m.region}",
                            errors={"email": ["already enrolled in this region"]})
        holder = self.chair_holder(m.region)
        if m.holds_chair and holder and holder != m.id:
            return Conflict(f"region {m.region} already has a chair ({holder}); "
                            "take the role from them first", errors={"roles": ["the region already has a chair"]},
                            chair=holder)
        return Conflict(f"member {m.id} already exists")

    def purge_personal(self, member_id: str, request_path_prefix: str) -> None:
        """After erasure: personal data out of every copy this database holds.

        The member document itself was stripped by the erasure write, which also queued a
        tombstone for ``hecht.members.contacts``. Left are contact records still waiting in the
        outbox (dropped: the tombstone supersedes them), events that carry personal data or free
        text (written before personal data left the events), pending or archived, and responses kept for
        Idempotency-Key replays. A relay publishing concurrently is covered by
        ``worker.MembersRelay``, which redacts, tombstones again and re-purges after its writes.
        """
        purge_archive(self.db, [member_id])
        self.db.idempotency.delete_many({"path": {"$regex": f"^{re.escape(request_path_prefix)}(/|$)"}})


def purge_archive(db: Database, member_ids: list[str]) -> int:
    """Personal data and free text out of these members' events, pending (outbox) and archived
    (see ``without_personal``), and their pending contact records (not the tombstones) out of
    the outbox."""
    subjects = {"subject": {"$in": member_ids}}
    n = db[outbox.OUTBOX].delete_many({**subjects, outbox.RECORD_TOPIC: {"$exists": True},
                                       outbox.RECORD_VALUE: {"$ne": None}}).deleted_count
    for coll in (db[outbox.OUTBOX], db[outbox.ARCHIVE]):
        for field in PERSONAL_EVENT_FIELDS:
            n += coll.update_many({**subjects, f"data.{field}": {"$exists": True}},
                                  {"$unset": {f"data.{field}": ""}}).modified_count
        n += coll.update_many({**subjects, "data.capacity.note": {"$exists": True}},
                              {"$unset": {"data.capacity.note": ""}}).modified_count
    return n


# ============================================================================================
# Staff accounts
# ============================================================================================
STAFF_INTERNAL_FIELDS = {"email_key": 0, "region": 0}


class StaffRepository:
    """Staff documents (collection ``staff``), each write with its ``staff.*`` events."""

    def __init__(self, db: Database):
        self.db = db
        self.coll = db.staff
        self.store = AggregateStore(db.staff, source="staff")

    @staticmethod
    def _fields(s: Staff) -> dict:
        return {"email": s.email, "email_key": emails.key(s.email), "name": s.name, "language": s.language,
                "platform_admin": s.platform_admin, "admin_of": list(s.admin_of), "status": s.status,
                "invited_at": s.invited_at, "activated_at": s.activated_at, "revoked_at": s.revoked_at}

    @staticmethod
    def to_domain(doc: dict) -> Staff:
        return Staff(id=doc["_id"], email=doc["email"], name=doc["name"], language=doc["language"],
                     platform_admin=bool(doc.get("platform_admin")), admin_of=list(doc.get("admin_of") or []),
                     status=doc["status"], invited_at=doc.get("invited_at"),
                     activated_at=doc.get("activated_at"), revoked_at=doc.get("revoked_at"))

    def get_doc(self, staff_id: str) -> dict:
        doc = self.coll.find_one({"_id": staff_id}, STAFF_INTERNAL_FIELDS)
        if doc is None:
            raise NotFound(f"staff account {staff_id} not found")
        return doc

    def get(self, staff_id: str) -> tuple[Staff, int]:
        doc = self.get_doc(staff_id)
        return self.to_domain(doc), doc["version"]

    def with_email(self, email: str) -> dict | None:
        """The account whose address has this one's key (hecht/emails.py)."""
        return self.coll.find_one({"email_key": emails.key(email)}, STAFF_INTERNAL_FIELDS)

    @staticmethod
    def list_query(*, status: str | None = None, region: str | None = None, q: str | None = None) -> dict:
        query: dict = {}
        if status:
            query["status"] = status
        if region:
            query["admin_of"] = region
        terms = (q or "").split()
        if terms:
            # Every word must occur in the name or the address, case-insensitively.
            query["$and"] = [{"$or": [{f: {"$regex": re.escape(t), "$options": "i"}} for f in ("name", "email")]}
                             for t in terms[:5]]
        return query

    def add(self, s: Staff, events: list[EventDraft], trace: str | None) -> dict:
        doc = {"_id": s.id, "region": STAFF_EVENT_REGION,
               **{k: v for k, v in self._fields(s).items() if v is not None}}
        try:
            created = self.store.create(doc, events, traceparent=trace)
        except Conflict:
            raise self._duplicate(s) from None
        return {k: v for k, v in created.items() if k not in STAFF_INTERNAL_FIELDS}

    def save(self, s: Staff, expected_version: int, events: list[EventDraft], trace: str | None) -> dict:
        fields = self._fields(s)
        try:
            doc = self.store.update(s.id, expected_version, {k: v for k, v in fields.items() if v is not None},
                                    events, region=STAFF_EVENT_REGION,
                                    unset=[k for k, v in fields.items() if v is None], traceparent=trace)
        except Conflict:
            raise self._duplicate(s) from None
        return {k: v for k, v in doc.items() if k not in STAFF_INTERNAL_FIELDS}

    def _duplicate(self, s: Staff) -> Conflict:
        if self.coll.find_one({"email_key": emails.key(s.email), "_id": {"$ne": s.id}}, {"_id": 1}):
            return Conflict("a staff account with this email address already exists",
                            errors={"email": ["already on a staff account"]})
        return Conflict(f"staff account {s.id} already exists")

    def history(self, staff_id: str) -> list[dict]:
        self.get_doc(staff_id)
        return outbox.history(self.db, staff_id, actors=True)

    def names_for_region(self, region_id: str, ids: list[str]) -> list[dict]:
        """``[{id, name}]`` of the accounts among ``ids`` that may have acted in the region: its
        admins and the platform admins, now or at any time before (their ``staff.*`` events carry
        ``admin_of`` and ``platform_admin``), so a history keeps the names of those who left.
        Any other id is left out, whether it exists or not; never the address or other regions."""
        ids = sorted(set(ids))
        if not ids:
            return []
        docs = {d["_id"]: d for d in self.coll.find({"_id": {"$in": ids}}, {"name": 1, "admin_of": 1,
                                                                            "platform_admin": 1})}
        allowed = {i for i, d in docs.items() if d.get("platform_admin") or region_id in (d.get("admin_of") or [])}
        earlier = [i for i in docs if i not in allowed]
        if earlier:
            query = {"subject": {"$in": earlier}, **outbox.NOT_A_RECORD,
                     "$or": [{"data.admin_of": region_id}, {"data.platform_admin": True}]}
            for coll in (outbox.ARCHIVE, outbox.OUTBOX):
                allowed |= {e["subject"] for e in self.db[coll].find(query, {"subject": 1})}
        return [{"id": i, "name": docs[i]["name"]} for i in ids if i in allowed and docs[i].get("name")]


# ============================================================================================
# Capacity over time: one snapshot per region and day
# ============================================================================================

def snapshot_id(region_id: str, day: date) -> str:
    """``{region}:{day}``: writing a day again replaces it (idempotent per day), and a region's
    days are one contiguous, ordered range of the _id index."""
    return f"{region_id}:{day.isoformat()}"


def write_snapshot(db: Database, region_id: str, day: date, municipalities: list[dict],
                   taken_at: datetime | None = None) -> bool:
    """Store a day's counts (``[{municipality, open, limited, closed, unknown}]``), replacing
    that day's earlier ones; True if the day is new. Also what tests and the bench call to
    backfill history (see ``write_snapshots``)."""
    doc = {"region_id": region_id, "day": day.isoformat(), "municipalities": municipalities,
           "taken_at": taken_at or datetime.now(timezone.utc)}
    result = db[SNAPSHOTS].replace_one({"_id": snapshot_id(region_id, day)}, doc, upsert=True)
    return result.upserted_id is not None


def write_snapshots(db: Database, region_id: str, days: list[tuple[date, list[dict]]]) -> int:
    """Backfill many days at once (one bulk write): ``[(day, municipalities), …]``. Days already
    stored are replaced. Returns how many were written."""
    now = datetime.now(timezone.utc)
    ops = [ReplaceOne({"_id": snapshot_id(region_id, day)},
                      {"region_id": region_id, "day": day.isoformat(), "municipalities": rows, "taken_at": now},
                      upsert=True) for day, rows in days]
    for i in range(0, len(ops), 500):
        db[SNAPSHOTS].bulk_write(ops[i:i + 500], ordered=False)
    return len(ops)


def take_snapshot(db: Database, region_id: str, day: date) -> tuple[dict, bool]:
    """Count the region's active members per municipality by capacity now, as ``day``'s
    snapshot; (the snapshot, whether the day is new). NotFound for an unknown region."""
    started = datetime.now(timezone.utc)   # before counting: see refresh_snapshot
    region, _ = RegionRepository(db).get(region_id)
    rows = snapshot_rows(region.municipalities, MemberRepository(db).capacity_counts(region_id))
    created = write_snapshot(db, region_id, day, rows, taken_at=started)
    return {"region_id": region_id, "day": day.isoformat(), "municipalities": rows}, created


def refresh_snapshot(db: Database, region_id: str, day: date) -> bool:
    """Count ``day``'s snapshot again if it has been taken (the day's point must agree
    with the live overview after the day's approvals and capacity changes); a day not taken
    yet is left to the daily job. Called after every command that can change the counts.

    ``taken_at`` is when counting began: a count that began later has seen every write the
    earlier one saw, so an older count never replaces a newer one (two changes at once)."""
    sid = snapshot_id(region_id, day)
    if db[SNAPSHOTS].find_one({"_id": sid}, {"_id": 1}) is None:
        return False
    started = datetime.now(timezone.utc)
    region, _ = RegionRepository(db).get(region_id)
    rows = snapshot_rows(region.municipalities, MemberRepository(db).capacity_counts(region_id))
    doc = {"region_id": region_id, "day": day.isoformat(), "municipalities": rows, "taken_at": started}
    return db[SNAPSHOTS].replace_one({"_id": sid, "taken_at": {"$lte": started}}, doc).matched_count == 1


def snapshot_history(db: Database, region_id: str, start: date, end: date) -> list[dict]:
    """The region's snapshots from ``start`` to ``end`` (both included), oldest first; days
    without a snapshot are absent."""
    query = {"_id": {"$gte": snapshot_id(region_id, start), "$lte": snapshot_id(region_id, end)},
             "region_id": region_id}
    return list(db[SNAPSHOTS].find(query, {"_id": 0, "taken_at": 0}).sort("_id", ASCENDING))


def regions_without_snapshot(db: Database, day: date) -> list[str]:
    """The regions that have no snapshot for ``day`` yet: two small reads, so the daily job may
    ask as often as it likes."""
    done = {d["region_id"] for d in db[SNAPSHOTS].find({"day": day.isoformat()}, {"region_id": 1})}
    return [d["_id"] for d in db.regions.find({}, {"_id": 1}).sort("_id", ASCENDING) if d["_id"] not in done]
