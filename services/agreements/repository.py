"""MongoDB documents ↔ agreements, and the read model built from the members service's events.

* ``agreements``: the current state of each agreement, which reads, lists, filters
  and the scheduler use. Every change is one transaction: the document is replaced
  only if its ``sequence`` is still the one the change was decided on (else
  VersionConflict: the caller reads again and decides again), and the change's
  events go into the outbox (``hecht.outbox``) in the same transaction; a draft's events
  (internal, ``hecht.events.is_internal``) go straight into the history (``events``) instead,
  so they never reach Kafka, webhooks or integrators.
* ``ballot_boxes``: who voted what, one document per agreement, apart from the
  agreement so that no list, tally or event ever touches an individual choice.
  A vote writes it in the same transaction as the tally and the ``vote_cast`` event.
* ``electorates``: the frozen electorate of a vote, written once when it opens.
"""
from __future__ import annotations

import json
import threading
from datetime import date, datetime, timezone

from pymongo import ASCENDING
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from hecht import audit, consumer, events as ev, outbox
from hecht.errors import NotFound, PreconditionFailed

from .domain import (Agreement, ClusterTally, Electorate, Event, Mandate, MandatePolicy, OPEN_STATUSES, Terms,
                     electorate_for)

AGREEMENTS = "agreements"
BALLOT_BOXES = "ballot_boxes"
ELECTORATES = "electorates"
REGIONS_VIEW = "regions_view"
MEMBERS_VIEW = "members_view"
SOURCE = "agreements"              # CloudEvents source /regions/{r}/agreements


def ensure_indexes(db: Database) -> None:
    outbox.ensure_indexes(db)
    consumer.ensure_indexes(db)
    db[AGREEMENTS].create_index([("region", ASCENDING), ("status", ASCENDING)])
    db[AGREEMENTS].create_index([("status", ASCENDING)])
    db[AGREEMENTS].create_index([("chain_id", ASCENDING), ("version", ASCENDING)])
    db[AGREEMENTS].create_index([("previous_id", ASCENDING)])
    db[AGREEMENTS].create_index([("partner_keys", ASCENDING)])
    db[AGREEMENTS].create_index([("municipality_keys", ASCENDING)])
    db[MEMBERS_VIEW].create_index([("region_id", ASCENDING), ("status", ASCENDING)])



ELECTOR = {"sub": "elector", "roles": ["gp"]}  # the recorded actor of every ballot

class VersionConflict(PreconditionFailed):
    """Someone committed a change to this agreement since we read it."""


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
            "abstain": m.abstain, "closed_at": m.closed_at, "close_reason": m.close_reason,
            "body": m.body, "policy_version": m.policy_version, "live_tally": m.live_tally,
            "max_proxies": m.max_proxies, "trainees_vote": m.trainees_vote,
            "seats": [{"member_id": mid, "cluster": c} for mid, c in m.seats],
            "clusters": [{"cluster": c.cluster, "seats": c.seats, "for": c.for_, "against": c.against,
                          "abstain": c.abstain} for c in m.clusters],
            "outside_region": list(m.outside_region), "unverified": list(m.unverified)}


def _mandate(doc: dict | None) -> Mandate | None:
    if not doc:
        return None
    return Mandate(status=doc["status"], electorate_id=doc["electorate_id"], electorate_size=doc["electorate_size"],
                   quorum=doc["quorum"], approval_threshold=doc["approval_threshold"], opened_at=doc["opened_at"],
                   deadline=doc["deadline"], ballots_since=doc["ballots_since"], for_=doc["for"],
                   against=doc["against"], abstain=doc["abstain"], closed_at=doc.get("closed_at"),
                   close_reason=doc.get("close_reason"), body=doc.get("body") or "assembly",
                   policy_version=doc.get("policy_version"), live_tally=bool(doc.get("live_tally", False)),
                   max_proxies=int(doc.get("max_proxies") or 0), trainees_vote=bool(doc.get("trainees_vote", True)),
                   seats=tuple((x["member_id"], x["cluster"]) for x in doc.get("seats") or ()),
                   clusters=tuple(ClusterTally(c["cluster"], c["seats"], c["for"], c["against"], c["abstain"])
                                  for c in doc.get("clusters") or ()),
                   outside_region=tuple(doc.get("outside_region") or ()),
                   unverified=tuple(doc.get("unverified") or ()))


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
        self.boxes = db[BALLOT_BOXES]

    # -- reading ----------------------------------------------------------------------------
    def get(self, agreement_id: str, region_id: str | None = None, *, ballots: bool = False) -> Agreement:
        """The agreement, and with ``ballots=True`` its electorate and ballot box.

        Another region's agreement is "not found", like a missing one.
        """
        doc = self.heads.find_one({"_id": agreement_id})
        if doc is None or (region_id is not None and doc["region"] != region_id):
            raise NotFound(f"agreement {agreement_id} not found")
        agreement = from_head(doc)
        if ballots and agreement.mandate is not None:
            box = self.boxes.find_one({"_id": agreement_id})
            # A box older than this vote belongs to an earlier one: this vote started empty.
            current = box is not None and box["sequence"] >= agreement.mandate.ballots_since
            agreement.ballots = json.loads(box["ballots"]) if current else {}
            agreement.proxies = json.loads(box.get("proxies") or "{}") if current else {}
            agreement.electorate = self.electorate(agreement.mandate.electorate_id)
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
        return outbox.history(self.db, agreement_id, actors=True)

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
        together); ``ballots`` are the (member, choice) changes the events record (the
        whole box is written whenever the agreement carries one).
        Raises VersionConflict when another change took this sequence number.

        A commit of ballots records its actor as an anonymous elector: the history must not
        say who voted when (one commit may also carry several voters' ballots).
        """
        actor = ELECTOR if ballots else audit.current("agreements")
        if not events:
            raise ValueError("a commit records at least one event")
        traces = trace if isinstance(trace, list) else [trace] * len(events)
        expected = agreement.sequence
        first = expected + 1
        source = f"/regions/{agreement.region_id}/{SOURCE}"
        envelopes = [ev.build(e.type, region=agreement.region_id, subject=agreement.id, sequence=first + i,
                              data=e.data, source=source, traceparent=t)
                     for i, (e, t) in enumerate(zip(events, traces, strict=True))]
        agreement.sequence = first + len(envelopes) - 1
        internal = [e for e in envelopes if ev.is_internal(e)]
        published = [e for e in envelopes if not ev.is_internal(e)]
        head = to_head(agreement)
        box = None
        if agreement.ballots is not None and agreement.mandate is not None:
            box = {"_id": agreement.id, "sequence": agreement.sequence,
                   "ballots": json.dumps(agreement.ballots, separators=(",", ":")),
                   "proxies": json.dumps(agreement.proxies or {}, separators=(",", ":"))}

        def work(s: ClientSession) -> None:
            if expected == 0:
                self.heads.insert_one(head, session=s)
            elif self.heads.replace_one({"_id": agreement.id, "sequence": expected}, head,
                                        session=s).matched_count == 0:
                raise VersionConflict(f"agreement {agreement.id} was changed by someone else; "
                                      "read it again and retry")
            if box is not None:
                self.boxes.replace_one({"_id": agreement.id}, box, upsert=True, session=s)
            if published:
                self.db[outbox.OUTBOX].insert_many(outbox.outbox_entries(published, actor), session=s)
            if internal:
                # A draft's events never leave the service (hecht.events.INTERNAL_TYPES): straight
                # into the history, in the same transaction, never through the outbox and its relay.
                self.db[outbox.ARCHIVE].insert_many(outbox.outbox_entries(internal, actor), session=s)
        try:
            outbox.transaction(self.db, work)
        except DuplicateKeyError:
            agreement.sequence = expected
            raise VersionConflict(f"agreement {agreement.id} already exists") from None
        except BaseException:
            agreement.sequence = expected
            raise
        return agreement

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
        policy = MandatePolicy.from_dict(data.get("mandate_policy") or {})
        return self._put(self.regions, data["region_id"], {
            "name": data.get("name"), "country": data.get("country"),
            "municipalities": list(data.get("municipalities") or []),
            "mandate_policy": {"quorum": policy.quorum, "approval_threshold": policy.approval_threshold,
                               "voting_period_days": policy.voting_period_days, "body": policy.body,
                               "seats": [{"member_id": m, "cluster": c} for m, c in policy.seats],
                               "live_tally": policy.live_tally, "max_proxies": policy.max_proxies,
                               "trainees_vote": policy.trainees_vote, "reverify_months": policy.reverify_months,
                               "unverified_leave_electorate": policy.unverified_leave_electorate,
                               "version": policy.version}}, sequence)

    def put_member(self, data: dict, sequence: int) -> bool:
        # What the body's rule needs (never personal contact data): roles, category, municipality,
        # and when the registration was last verified (None: not known, from an event older than
        # re-verification).
        return self._put(self.members, data["member_id"], {
            "region_id": data["region_id"], "status": data["status"], "roles": list(data.get("roles") or []),
            "category": data.get("category"), "municipality": data.get("municipality"),
            "verified_at": data.get("verified_at")}, sequence)

    def region(self, region_id: str) -> dict | None:
        return self.regions.find_one({"_id": region_id})

    def policy(self, region_id: str) -> MandatePolicy | None:
        doc = self.region(region_id)
        return MandatePolicy.from_dict(doc["mandate_policy"]) if doc else None

    def electorate(self, region_id: str, policy: MandatePolicy, now: datetime | None = None) -> Electorate:
        """The electorate by the body's rule, from this read model, at ``now``."""
        region = self.region(region_id) or {}
        rows = self.members.find({"region_id": region_id, "status": "active"},
                                 {"status": 1, "roles": 1, "category": 1, "municipality": 1, "verified_at": 1})
        return electorate_for(policy, rows, region.get("municipalities") or [], now)

    def active_members(self, region_id: str) -> list[str]:
        return sorted(d["_id"] for d in self.members.find({"region_id": region_id, "status": "active"}, {"_id": 1}))
