"""MongoDB documents ↔ agreements, and the read model built from the members service's events.

Why not ``hecht.outbox.AggregateStore``: its guard is a version-filtered
``find_one_and_update``, which is atomic on MongoDB but *not* on FerretDB
1.x (SQLite), where an update is "read the document, change it in Go, write
it back by ``_id``": two concurrent writers both "win" and one change is lost
(measured: 400 guarded increments by 8 threads left 52). A mandate vote is
exactly that workload. What *is* atomic on every server we run is an insert
into a unique ``_id``. So every change to an agreement is a **commit**:

* ``agreement_commits``: one document per change, ``_id = "<agreement>:<first sequence>"``,
  holding the events (``_outbox``, published by the standard relay) and the
  agreement's full state after the change. Inserting it *is* the optimistic
  concurrency check: of two writers that read the same state, exactly one
  insert succeeds; the other gets a duplicate key, re-reads, and decides again.
  State and events go in one single-document write: nothing is lost.
* ``agreements``: the current state of each agreement (the "head"), which
  reads, lists, filters and the scheduler use. It is a cache of the latest
  commit, rewritten in full after each commit, never over a newer one. A crash
  between commit and head, or a racing writer putting an older head back, can
  leave it a step behind for a moment: a change decided on it then collides
  with the newer commit, and after repeated collisions the writer follows the
  commits and repairs the head; the worker's maintenance repairs the ones
  nobody writes to (so a read may trail the truth by at most one maintenance
  pass after such an event, never by a lost change).
* ``ballot_boxes``: who voted what, one document per agreement, apart from
  the head so that no list, tally or event ever touches an individual choice;
  also a cache of the commits (each vote commit records the ballots it changed).
* ``electorates``: the frozen electorate of a vote, written once when it opens.

Commits are pruned once published, reflected in the caches, and a minute old.
Lookups use ``{"_id": …}`` alone: that is the only filter FerretDB 1.x hands to
SQLite (which still scans the table: its ``_id`` index is not used), so the
collections on the hot path stay small and the commit log is walked only when needed.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import date, datetime, timedelta, timezone

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from hecht import consumer, events as ev, outbox
from hecht.errors import NotFound, PreconditionFailed

from .domain import (Agreement, Event, Mandate, MandatePolicy, OPEN_STATUSES, Terms)

log = logging.getLogger(__name__)

AGREEMENTS = "agreements"
COMMITS = "agreement_commits"
BALLOT_BOXES = "ballot_boxes"
ELECTORATES = "electorates"
REGIONS_VIEW = "regions_view"
MEMBERS_VIEW = "members_view"
AGGREGATE_COLLECTIONS = [COMMITS]  # where the relay finds pending events
SOURCE = "agreements"              # CloudEvents source /regions/{r}/agreements
PRUNE_AFTER = timedelta(seconds=60)


def ensure_indexes(db: Database) -> None:
    outbox.ensure_indexes(db, AGGREGATE_COLLECTIONS)
    consumer.ensure_indexes(db)
    db[AGREEMENTS].create_index([("region", ASCENDING), ("status", ASCENDING)])
    db[AGREEMENTS].create_index([("status", ASCENDING)])
    db[AGREEMENTS].create_index([("chain_id", ASCENDING), ("version", ASCENDING)])
    db[AGREEMENTS].create_index([("previous_id", ASCENDING)])
    db[AGREEMENTS].create_index([("partner_keys", ASCENDING)])
    db[AGREEMENTS].create_index([("municipality_keys", ASCENDING)])
    db[COMMITS].create_index([("agreement_id", ASCENDING)])
    db[MEMBERS_VIEW].create_index([("region_id", ASCENDING), ("status", ASCENDING)])


class VersionConflict(PreconditionFailed):
    """Someone committed a change to this agreement since we read it."""


def commit_id(agreement_id: str, first_sequence: int) -> str:
    return f"{agreement_id}:{first_sequence:010d}"


# -- documents ↔ domain ----------------------------------------------------------------------
def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def parse_day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _mandate_doc(m: Mandate | None) -> dict | None:
    if m is None:
        return None
    return {"status": m.status, "electorate_id": m.electorate_id, "electorate_size": m.electorate_size,
            "quorum": m.quorum, "approval_threshold": m.approval_threshold, "opened_at": m.opened_at,
            "deadline": m.deadline, "ballots_since": m.ballots_since, "for": m.for_, "against": m.against,
            "abstain": m.abstain, "closed_at": m.closed_at, "close_reason": m.close_reason}


def _mandate(doc: dict | None) -> Mandate | None:
    if not doc:
        return None
    return Mandate(status=doc["status"], electorate_id=doc["electorate_id"], electorate_size=doc["electorate_size"],
                   quorum=doc["quorum"], approval_threshold=doc["approval_threshold"], opened_at=doc["opened_at"],
                   deadline=doc["deadline"], ballots_since=doc["ballots_since"], for_=doc["for"],
                   against=doc["against"], abstain=doc["abstain"], closed_at=doc.get("closed_at"),
                   close_reason=doc.get("close_reason"))


def to_head(a: Agreement) -> dict:
    terms = a.terms.as_dict()
    for key in ("effective_from", "effective_until", "review_date"):
        terms[key] = _day(terms[key])
    return {
        "_id": a.id, "region": a.region_id, "chain_id": a.chain_id, "version": a.version,
        "previous_id": a.previous_id, "status": a.status, "sequence": a.sequence, **terms,
        "mandate": _mandate_doc(a.mandate), "signed_at": a.signed_at, "signed_by": a.signed_by,
        "activated_on": _day(a.activated_on), "ended_on": _day(a.ended_on),
        "termination_reason": a.termination_reason, "review_due_on": _day(a.review_due_on),
        "created_at": a.created_at, "updated_at": a.updated_at,
        # Normalised copies for the partner and municipality filters.
        "partner_keys": sorted({p.name.casefold() for p in a.terms.partners}),
        "municipality_keys": sorted({m.casefold() for m in a.terms.municipalities}),
    }


def from_head(doc: dict) -> Agreement:
    terms = Terms(title=doc["title"], theme=doc["theme"], summary=doc.get("summary", ""),
                  partners=doc["partners"], commitments=doc["commitments"],
                  municipalities=doc.get("municipalities", []), effective_from=parse_day(doc["effective_from"]),
                  effective_until=parse_day(doc.get("effective_until")), review_date=parse_day(doc.get("review_date")),
                  documents=doc.get("documents", []))
    return Agreement(
        id=doc["_id"], region_id=doc["region"], terms=terms, created_at=doc["created_at"], status=doc["status"],
        version=doc["version"], previous_id=doc.get("previous_id"), chain_id=doc["chain_id"],
        sequence=doc["sequence"], updated_at=doc.get("updated_at"), mandate=_mandate(doc.get("mandate")),
        signed_at=doc.get("signed_at"), signed_by=doc.get("signed_by"),
        activated_on=parse_day(doc.get("activated_on")), ended_on=parse_day(doc.get("ended_on")),
        termination_reason=doc.get("termination_reason"), review_due_on=parse_day(doc.get("review_due_on")))


# Electorates never change once a vote opens: each process keeps the ones it has read.
_electorate_cache: dict[str, frozenset[str]] = {}
_electorate_lock = threading.Lock()


class AgreementRepository:
    def __init__(self, db: Database):
        self.db = db
        self.heads = db[AGREEMENTS]
        self.commits = db[COMMITS]
        self.boxes = db[BALLOT_BOXES]

    # -- reading ----------------------------------------------------------------------------
    def get(self, agreement_id: str, region_id: str | None = None, *, ballots: bool = False,
            roll_forward: bool = False) -> Agreement:
        """The agreement's state: its head, and with ``ballots=True`` its electorate and ballot box.

        The commits are walked only when needed (each step is a lookup, and FerretDB
        answers every lookup by scanning the collection): when the ballot box is behind
        the head, its missing ballots are replayed; with ``roll_forward`` (a writer keeps
        colliding at the same sequence: the head is stuck behind a commit) the head is
        followed to the latest commit and repaired. A head that is behind is otherwise
        harmless: a change decided on it collides with the newer commit and is retried.
        Another region's agreement is "not found", like a missing one.
        """
        head = self.heads.find_one({"_id": agreement_id})
        if head is None:
            roll_forward = True  # created, but the head was never written: the commits know
        head_seq = head["sequence"] if head else 0
        box, votes, box_seq = None, {}, head_seq
        if ballots:
            box = self.boxes.find_one({"_id": agreement_id})
            if box is not None:
                votes, box_seq = json.loads(box["ballots"]), box["sequence"]
            elif head is not None and head.get("mandate"):
                box_seq = head["mandate"]["ballots_since"]  # the box started empty there
            else:
                box_seq = 0
        latest, seq, pos = head, head_seq, min(head_seq, box_seq)
        while roll_forward or pos < head_seq:
            c = self.commits.find_one({"_id": commit_id(agreement_id, pos + 1)})
            if c is None:
                break
            pos = c["last_seq"]
            if pos > seq:
                latest, seq = dict(c["head"], _id=agreement_id), pos
            for b in c.get("ballots") or []:
                votes[b["member"]] = b["choice"]
        if latest is None or (region_id is not None and latest["region"] != region_id):
            raise NotFound(f"agreement {agreement_id} not found")
        agreement = from_head(latest)
        if ballots and agreement.mandate is not None:
            agreement.ballots = votes
            agreement.electorate = self.electorate(agreement.mandate.electorate_id)
            if box is None or box_seq < seq:
                self._write_box(agreement)
        if seq > head_seq:
            self._write_head(latest)  # repair a head left behind
        return agreement

    def electorate(self, electorate_id: str) -> frozenset[str]:
        cached = _electorate_cache.get(electorate_id)
        if cached is not None:
            return cached
        doc = self.db[ELECTORATES].find_one({"_id": electorate_id})
        if doc is None:
            raise RuntimeError(f"electorate {electorate_id} is missing")
        members = frozenset(doc["members"])
        with _electorate_lock:
            if len(_electorate_cache) > 256:
                _electorate_cache.clear()
            _electorate_cache[electorate_id] = members
        return members

    def chain(self, chain_id: str) -> list[dict]:
        """Every version of one agreement, oldest first."""
        return list(self.heads.find({"chain_id": chain_id},
                                    {"_id": 1, "version": 1, "status": 1, "activated_on": 1, "ended_on": 1})
                    .sort("version", ASCENDING))

    def open_amendment(self, agreement_id: str) -> dict | None:
        return self.heads.find_one({"previous_id": agreement_id, "status": {"$in": list(OPEN_STATUSES)}},
                                   {"_id": 1, "status": 1})

    def history(self, agreement_id: str) -> list[dict]:
        """Every event of one agreement in sequence order: published ones plus those still pending."""
        seen: dict[str, dict] = {}
        for e in self.db[outbox.ARCHIVE].find({"subject": agreement_id}):
            e.pop("_id", None)
            seen[e["id"]] = e
        for c in self.commits.find({"agreement_id": agreement_id, "_pending": True}, {"_outbox": 1}):
            for e in c.get("_outbox") or []:
                seen.setdefault(e["id"], e)
        return sorted(seen.values(), key=lambda e: e["sequence"])

    # -- writing ----------------------------------------------------------------------------
    def save_electorate(self, electorate_id: str, agreement_id: str, members: list[str]) -> None:
        """Store a frozen electorate (before the commit that opens the vote refers to it)."""
        try:
            self.db[ELECTORATES].insert_one({"_id": electorate_id, "agreement_id": agreement_id,
                                             "members": sorted(members), "at": datetime.now(timezone.utc)})
        except DuplicateKeyError:
            pass  # stored by an earlier attempt of the same command

    def commit(self, agreement: Agreement, events: list[Event], trace: str | list[str | None] | None = None,
               ballots: list[tuple[str, str]] | None = None) -> Agreement:
        """Store the agreement's new state with its events, if nobody else changed it first.

        ``trace`` is one traceparent for all events, or one per event (votes committed
        together); ``ballots`` are the (member, choice) changes the events record.
        Raises VersionConflict when another commit took this sequence number.
        """
        if not events:
            raise ValueError("a commit records at least one event")
        traces = trace if isinstance(trace, list) else [trace] * len(events)
        first = agreement.sequence + 1
        source = f"/regions/{agreement.region_id}/{SOURCE}"
        envelopes = [ev.build(e.type, region=agreement.region_id, subject=agreement.id, sequence=first + i,
                              data=e.data, source=source, traceparent=t)
                     for i, (e, t) in enumerate(zip(events, traces, strict=True))]
        agreement.sequence = first + len(envelopes) - 1
        head = to_head(agreement)
        doc = {"_id": commit_id(agreement.id, first), "agreement_id": agreement.id, "region": agreement.region_id,
               "first_seq": first, "last_seq": agreement.sequence,
               "head": {k: v for k, v in head.items() if k != "_id"},
               "ballots": [{"member": m, "choice": c} for m, c in ballots or []],
               "at": datetime.now(timezone.utc), "_outbox": envelopes, "_pending": True}
        try:
            self.commits.insert_one(doc)
        except DuplicateKeyError:
            agreement.sequence = first - 1
            raise VersionConflict(f"agreement {agreement.id} was changed by someone else; "
                                  "read it again and retry") from None
        outbox.signal(self.commits.database, self.commits.name, doc["_id"])
        if ballots:
            self._write_box(agreement)  # before the head: a reader who sees the head sees its ballots
        self._write_head(head)
        return agreement

    @staticmethod
    def _write_cache(coll, doc: dict) -> None:
        """Best effort, never over a newer version: the commit is the truth.

        The sequence filter makes this atomic on MongoDB; on FerretDB it narrows the window
        in which a racing writer can put an older copy back (readers then collide with the
        newer commit and roll forward, and the worker's maintenance repairs it).
        """
        try:
            coll.replace_one({"_id": doc["_id"], "sequence": {"$lt": doc["sequence"]}}, doc, upsert=True)
        except DuplicateKeyError:
            pass  # a newer copy is there already
        except PyMongoError as e:
            log.warning("cache not updated; it will be repaired",
                        extra={"collection": coll.name, "id": doc["_id"], "error": repr(e)})

    def _write_head(self, head: dict) -> None:
        self._write_cache(self.heads, head)

    def _write_box(self, agreement: Agreement) -> None:
        self._write_cache(self.boxes, {"_id": agreement.id, "sequence": agreement.sequence,
                                       "ballots": json.dumps(agreement.ballots or {}, separators=(",", ":"))})

    # -- queries for the API and the scheduler ------------------------------------------------
    @staticmethod
    def list_query(region_id: str, *, status: str | None = None, theme: str | None = None,
                   partner: str | None = None, municipality: str | None = None,
                   active_on: date | None = None) -> dict:
        query: dict = {"region": region_id}
        if status:
            query["status"] = status
        if theme:
            query["theme"] = theme
        if partner:
            query["partner_keys"] = partner.strip().casefold()
        if municipality:
            query["municipality_keys"] = municipality.strip().casefold()
        if active_on:
            day = active_on.isoformat()
            # In force on that day: activated by then, not yet ended, within its period.
            query["activated_on"] = {"$lte": day}
            query["$and"] = [{"$or": [{"ended_on": None}, {"ended_on": {"$gt": day}}]},
                             {"$or": [{"effective_until": None}, {"effective_until": {"$gte": day}}]}]
        return query

    def due(self, rule: str, now: datetime) -> list[str]:
        """Ids of agreements whose head says a dated transition is due (the handler re-checks)."""
        today = now.date().isoformat()
        queries = {
            "close_vote": {"status": "in_consultation", "mandate.deadline": {"$lte": now}},
            "activate": {"status": "mandated", "signed_at": {"$ne": None}, "effective_from": {"$lte": today}},
            "expire": {"status": "active", "effective_until": {"$lt": today}},
            "review": {"status": "active", "review_date": {"$lte": today}, "review_due_on": None},
        }
        if rule == "supersede":
            amendments = list(self.heads.find({"status": "active", "previous_id": {"$ne": None}},
                                              {"previous_id": 1}))
            if not amendments:
                return []
            still_active = {d["_id"] for d in self.heads.find(
                {"_id": {"$in": [a["previous_id"] for a in amendments]}, "status": "active"}, {"_id": 1})}
            return sorted(a["_id"] for a in amendments if a["previous_id"] in still_active)
        return [d["_id"] for d in self.heads.find(queries[rule], {"_id": 1}).sort("_id", ASCENDING)]

    def maintain(self, now: datetime | None = None) -> tuple[int, int]:
        """Roll forward heads and ballot boxes left behind; prune commits nobody needs.

        A commit may go once it is published, reflected in both caches, and old
        enough that no writer that read before it can still be in flight.
        Returns (repaired, pruned).
        """
        now = now or datetime.now(timezone.utc)
        commits = list(self.commits.find({}, {"agreement_id": 1, "last_seq": 1, "_pending": 1, "at": 1}))
        by_agreement: dict[str, list[dict]] = {}
        for c in commits:
            by_agreement.setdefault(c["agreement_id"], []).append(c)
        repaired, prunable = 0, []
        for agreement_id, cs in by_agreement.items():
            head = self.heads.find_one({"_id": agreement_id}, {"sequence": 1, "mandate": 1})
            box = self.boxes.find_one({"_id": agreement_id}, {"sequence": 1})
            newest = max(c["last_seq"] for c in cs)
            voting = head is not None and head.get("mandate") is not None
            if head is None or head["sequence"] < newest or (voting and (box or {}).get("sequence", 0) < newest):
                self.get(agreement_id, ballots=True, roll_forward=True)
                repaired += 1
                head = self.heads.find_one({"_id": agreement_id}, {"sequence": 1, "mandate": 1})
                box = self.boxes.find_one({"_id": agreement_id}, {"sequence": 1})
            if head is None:
                continue
            reflected = head["sequence"]
            if head.get("mandate") is not None:
                reflected = min(reflected, (box or {}).get("sequence", 0))
            for c in cs:
                at = c["at"] if c["at"].tzinfo else c["at"].replace(tzinfo=timezone.utc)
                if not c.get("_pending") and c["last_seq"] <= reflected and now - at > PRUNE_AFTER:
                    prunable.append(c["_id"])
        if prunable:
            self.commits.delete_many({"_id": {"$in": prunable}})
        return repaired, len(prunable)


class ReadModel:
    """Regions and member statuses as the members service announced them (never asked directly)."""

    def __init__(self, db: Database):
        self.regions = db[REGIONS_VIEW]
        self.members = db[MEMBERS_VIEW]

    @staticmethod
    def _put(coll, key: str, fields: dict, sequence: int) -> bool:
        """Store the state carried by an event unless a newer one is already there (idempotent)."""
        current = coll.find_one({"_id": key}, {"sequence": 1})
        if current is not None and current.get("sequence", 0) >= sequence:
            return False
        try:
            coll.replace_one({"_id": key}, {"_id": key, **fields, "sequence": sequence}, upsert=True)
        except DuplicateKeyError:
            return False
        return True

    def put_region(self, data: dict, sequence: int) -> bool:
        policy = data.get("mandate_policy") or {}
        return self._put(self.regions, data["region_id"], {
            "name": data.get("name"), "country": data.get("country"),
            "municipalities": list(data.get("municipalities") or []),
            "mandate_policy": {"quorum": policy["quorum"], "approval_threshold": policy["approval_threshold"],
                               "voting_period_days": policy["voting_period_days"]}}, sequence)

    def put_member(self, data: dict, sequence: int) -> bool:
        return self._put(self.members, data["member_id"], {"region_id": data["region_id"],
                                                          "status": data["status"]}, sequence)

    def region(self, region_id: str) -> dict | None:
        return self.regions.find_one({"_id": region_id})

    def policy(self, region_id: str) -> MandatePolicy | None:
        doc = self.region(region_id)
        return MandatePolicy(**doc["mandate_policy"]) if doc else None

    def active_members(self, region_id: str) -> list[str]:
        return sorted(d["_id"] for d in self.members.find({"region_id": region_id, "status": "active"}, {"_id": 1}))
