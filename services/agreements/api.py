"""HTTP ↔ commands for the agreements service. Views translate; handlers decide.

Reading is open to every role of the region (GPs read what they vote on);
changes need ``region-admin``; a vote needs ``gp`` and the caller's own member id.
The ``portal`` reads the agreements of every region for its public pages, never drafts.
An ``integrator`` (without a staff role) reads what the README's "Personal data" table
gives integrators: no drafts (404, and absent from lists and version chains), no staff
free text (``termination_reason``, an event's ``reason``) and no actors in the history.
"""
from __future__ import annotations

import re
from datetime import datetime

from flask import current_app, g, request
from flask_smorest import Blueprint

from hecht import events as ev
from hecht.errors import Forbidden, Invalid, NotFound
from hecht.auth import PORTAL, REGION_ROLES
from hecht.web import allow, check_if_match, ctx, etag, idempotent, paginate, require

from . import domain, handlers
from .domain import Agreement, Mandate
from .repository import AgreementRepository, from_head, parse_day
from .schemas import (AgreementChangesSchema, AgreementPageSchema, AgreementQuerySchema, AgreementSchema,
                      BallotSchema, HistorySchema, ProxySchema, TallySchema, TerminateSchema, VoteSchema)

agreements = Blueprint("agreements", __name__, url_prefix="/v1/regions/<region_id>/agreements",
                       description="Mandated collaboration agreements, their mandate votes and lifecycle")

FILTERS = ("status", "theme", "partner", "municipality", "active_on")
REGION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")  # as in the event schemas (common.v1 region_id)


@agreements.before_request
def _region_id_well_formed():
    """A malformed region id names no region: 404 (it could never be put in an event; a 500 before)."""
    region_id = (request.view_args or {}).get("region_id")
    if region_id is not None and not REGION_ID.fullmatch(region_id):
        raise NotFound(f"region {region_id!r} not found")


def _now() -> datetime:
    """The app's clock (tests inject one through ``create_app({"HECHT_CLOCK": …})``)."""
    return current_app.config.get("HECHT_CLOCK", handlers.utcnow)()


def _repo() -> AgreementRepository:
    return AgreementRepository(ctx().db)


def _run(cmd):
    return handlers.handle(cmd, ctx().db, now=_now(), trace=g.traceparent)


def _tally(m: Mandate | None, your_vote: str | None = None, *, for_gp: bool = False) -> dict | None:
    if m is None:
        return None
    t = m.tally
    out = {"status": m.status, "electorate_size": m.electorate_size, "cast": t.cast,
           "turnout": round(t.turnout, 6), "quorum": m.quorum, "approval_threshold": m.approval_threshold,
           "quorum_met": m.quorum_met, "opened_at": m.opened_at, "deadline": m.deadline,
           "closed_at": m.closed_at, "close_reason": m.close_reason, **m.policy_data()}
    if m.body == "council":
        out["clusters"] = m.cluster_data()
    if not m.secret:  # revealed when the vote closes, to everyone at once (or live, by the frozen policy)
        out.update({"for_": t.for_, "against": t.against, "abstain": t.abstain, "threshold_met": m.threshold_met})
    if for_gp:
        out["your_vote"] = your_vote
    return out


# What region staff write about an agreement for each other: never shown to integrators.
STAFF_TEXT = ("termination_reason",)
STAFF_ROLES = ("platform-admin", "region-admin")


def _out(a: Agreement, versions: list[dict] | None = None, *, public: bool = False) -> dict:
    out = {"id": a.id, "region_id": a.region_id, "status": a.status, "version": a.version,
           "previous_id": a.previous_id, "sequence": a.sequence, **a.terms.as_dict(),
           "mandate": _tally(a.mandate), "signed_at": a.signed_at, "activated_on": a.activated_on,
           "ended_on": a.ended_on, "termination_reason": a.termination_reason, "review_due_on": a.review_due_on,
           "created_at": a.created_at, "updated_at": a.updated_at}
    if versions is not None:
        out["versions"] = [{"id": v["_id"], "version": v["version"], "status": v["status"],
                            "activated_on": parse_day(v.get("activated_on")), "ended_on": parse_day(v.get("ended_on"))}
                           for v in versions]
    if public:
        for key in STAFF_TEXT:
            out.pop(key, None)
    return out


def _done(a: Agreement, status: int = 200):
    headers = {"ETag": etag(a.sequence)}
    if status == 201:
        headers["Location"] = f"/v1/regions/{a.region_id}/agreements/{a.id}"
    return _out(a), status, headers


def _expected(region_id: str, agreement_id: str) -> int | None:
    """The version an optional If-Match pins (412 at once if it is already stale)."""
    if request.headers.get("If-Match") is None:
        return None
    current = _repo().get(agreement_id, region_id)
    check_if_match(current.sequence)
    return current.sequence


# -- agreements ------------------------------------------------------------------------------
@agreements.post("")
@allow("region-admin")
@agreements.arguments(AgreementSchema)
@agreements.response(201, AgreementSchema)
@idempotent
def draft_agreement(body, region_id):
    """Draft an agreement (region-admin)."""
    require("region-admin", region=region_id)
    return _done(_run(domain.DraftAgreement(region_id, domain.Terms(**body))), 201)


def _is_integrator() -> bool:
    """An integrator's token (no staff role beside it): it reads only what integrators may."""
    p = require()
    return p.has("integrator") and not p.has(*STAFF_ROLES)


def _hides_drafts() -> bool:
    """The portal shows agreements to the public and to GPs, integrators read them into their own
    systems: a draft is the region's work in progress, for its staff (and GPs) only."""
    return require().is_portal or _is_integrator()


@agreements.get("")
@allow(*REGION_ROLES, PORTAL)
@agreements.arguments(AgreementQuerySchema, location="query")
@agreements.response(200, AgreementPageSchema)
def list_agreements(args, region_id):
    """List the region's agreements, filtered by status, theme, partner, municipality or a date in force
    (the portal: all but drafts)."""
    require(region=region_id)
    query = AgreementRepository.list_query(region_id, **{k: args.get(k) for k in FILTERS})
    if _hides_drafts():
        query = {"$and": [query, {"status": {"$ne": "draft"}}]}
    docs, next_url = paginate(ctx().db.agreements, query, limit=args["limit"], after=args["after"])
    public = _is_integrator()
    return {"items": [_out(from_head(d), public=public) for d in docs], "next": next_url}


@agreements.get("/<agreement_id>")
@allow(*REGION_ROLES, PORTAL)
@agreements.response(200, AgreementSchema)
def get_agreement(region_id, agreement_id):
    """One agreement version, with the whole version chain it belongs to (the portal: not a draft)."""
    require(region=region_id)
    repo = _repo()
    a = repo.get(agreement_id, region_id)
    if a.status == "draft" and _hides_drafts():
        raise NotFound(f"agreement {agreement_id} not found")
    versions = repo.chain(a.chain_id)
    if _hides_drafts():
        versions = [v for v in versions if v["status"] != "draft"]
    return _out(a, versions=versions, public=_is_integrator()), 200, {"ETag": etag(a.sequence)}


@agreements.patch("/<agreement_id>")
@allow("region-admin")
@agreements.arguments(AgreementChangesSchema)
@agreements.response(200, AgreementSchema)
def revise_agreement(body, region_id, agreement_id):
    """Revise a draft (region-admin; If-Match with the ETag you read is required)."""
    require("region-admin", region=region_id)
    current = _repo().get(agreement_id, region_id)
    check_if_match(current.sequence, required=True)
    if not body:
        raise Invalid("nothing to change", errors={"_schema": ["send at least one field to change"]})
    return _done(_run(domain.ReviseAgreement(region_id, agreement_id, current.sequence, body)))


@agreements.get("/<agreement_id>/history")
@allow("region-admin", "integrator")
@agreements.response(200, HistorySchema)
def agreement_history(region_id, agreement_id):
    """The agreement's events, oldest first (votes appear as tallies only)."""
    require("region-admin", "integrator", region=region_id)
    repo = _repo()
    a = repo.get(agreement_id, region_id)
    items = repo.history(agreement_id)
    if not _is_integrator():
        # The reason stays with the agreement, not in the event (README "Personal data"): staff see it here.
        for e in items:
            if ev.short_type(e["type"]) == "agreement.terminated" and a.termination_reason:
                e["data"].setdefault("reason", a.termination_reason)
        return {"items": items}
    if a.status == "draft":
        raise NotFound(f"agreement {agreement_id} not found")
    return {"items": [_public_event(e) for e in items if e["data"].get("status") != "draft"]}


def _public_event(event: dict) -> dict:
    """An event as an integrator may read it: as on Kafka, without staff free text (events
    written before the reason left ``agreement.terminated`` still carry one) and the actor."""
    out = {k: v for k, v in event.items() if k != "actor"}
    out["data"] = {k: v for k, v in event["data"].items() if k not in ("reason", *STAFF_TEXT)}
    return out


@agreements.post("/<agreement_id>/amendments")
@allow("region-admin")
@agreements.arguments(AgreementChangesSchema)
@agreements.response(201, AgreementSchema)
@idempotent
def amend_agreement(body, region_id, agreement_id):
    """Start an amendment of an active agreement: a new version in draft, needing its own mandate."""
    require("region-admin", region=region_id)
    return _done(_run(domain.AmendAgreement(region_id, agreement_id, body)), 201)


@agreements.post("/<agreement_id>/sign")
@allow("region-admin")
@agreements.response(200, AgreementSchema)
def sign_agreement(region_id, agreement_id):
    """Sign a mandated agreement on behalf of the region; it becomes active on its start date."""
    p = require("region-admin", region=region_id)
    return _done(_run(domain.SignAgreement(region_id, agreement_id, p.sub, _expected(region_id, agreement_id))))


@agreements.post("/<agreement_id>/terminate")
@allow("region-admin")
@agreements.arguments(TerminateSchema)
@agreements.response(200, AgreementSchema)
def terminate_agreement(body, region_id, agreement_id):
    """End an active agreement early, with a reason."""
    require("region-admin", region=region_id)
    return _done(_run(domain.TerminateAgreement(region_id, agreement_id, body["reason"],
                                                _expected(region_id, agreement_id))))


# -- the mandate vote ------------------------------------------------------------------------
@agreements.post("/<agreement_id>/mandate")
@allow("region-admin")
@agreements.response(201, AgreementSchema)
def open_mandate(region_id, agreement_id):
    """Open the mandate vote: the electorate is frozen to the region's active members now."""
    require("region-admin", region=region_id)
    a = _run(domain.OpenMandate(region_id, agreement_id, _expected(region_id, agreement_id)))
    return _out(a), 201, {"ETag": etag(a.sequence)}


@agreements.get("/<agreement_id>/mandate")
@allow(*REGION_ROLES)
@agreements.response(200, TallySchema)
def get_tally(region_id, agreement_id):
    """The tally: electorate, counts, turnout, quorum and threshold, status and deadline."""
    p = require(region=region_id)
    gp = p.has("gp") and p.member is not None
    a = _repo().get(agreement_id, region_id, ballots=gp)
    if a.status == "draft" and _hides_drafts():
        raise NotFound(f"agreement {agreement_id} not found")
    if a.mandate is None:
        raise NotFound(f"no mandate vote has been opened for agreement {agreement_id}")
    return _tally(a.mandate, a.vote_of(p.member) if gp else None, for_gp=gp), 200, {"ETag": etag(a.sequence)}


def _own_ballot(region_id: str, member_id: str):
    p = require("gp", region=region_id)
    if p.member != member_id:
        raise Forbidden("a GP may only cast or read their own vote")
    return p


@agreements.put("/<agreement_id>/mandate/votes/<member_id>")
@allow("gp")
@agreements.arguments(VoteSchema)
@agreements.response(200, BallotSchema)
def cast_vote(body, region_id, agreement_id, member_id):
    """Cast or change your own vote (gp; until the deadline)."""
    _own_ballot(region_id, member_id)
    a = _run(domain.CastVote(region_id, agreement_id, member_id, body["choice"]))
    return _ballot(a, member_id)


@agreements.get("/<agreement_id>/mandate/votes/<member_id>")
@allow("gp")
@agreements.response(200, BallotSchema)
def get_vote(region_id, agreement_id, member_id):
    """Your own vote (gp): nobody else can read it."""
    _own_ballot(region_id, member_id)
    a = _repo().get(agreement_id, region_id, ballots=True)
    if a.mandate is None:
        raise NotFound(f"no mandate vote has been opened for agreement {agreement_id}")
    return _ballot(a, member_id)


def _ballot(a, member_id: str) -> dict:
    """A GP's own ballot, with their own proxies: whom they gave theirs to, and whose they carry
    (ids only: agreements holds no names). Nobody else's are shown."""
    return {"member_id": member_id, "choice": a.vote_of(member_id),
            "proxy_to": (a.proxies or {}).get(member_id), "proxies_for": a.carried_by(member_id),
            "mandate": _tally(a.mandate, a.vote_of(member_id), for_gp=True)}


@agreements.post("/<agreement_id>/mandate/proxies")
@allow("gp")
@agreements.arguments(ProxySchema)
@agreements.response(201, ProxySchema)
def give_proxy(body, region_id, agreement_id):
    """Give your proxy to another elector (gp, the giver themself; only where the vote's frozen policy
    allows proxies, ``max_proxies`` > 0). Revocable until you or the holder votes for your share."""
    _own_ballot(region_id, body["giver"])
    a = _run(domain.GiveProxy(region_id, agreement_id, body["giver"], body["holder"]))
    return {"giver": body["giver"], "holder": body["holder"], "mandate": _tally(a.mandate)}, 201


@agreements.delete("/<agreement_id>/mandate/proxies/<member_id>")
@allow("gp")
@agreements.response(200, ProxySchema)
def revoke_proxy(region_id, agreement_id, member_id):
    """Revoke the proxy you gave (gp, the giver themself), until the share has been cast."""
    _own_ballot(region_id, member_id)
    holder = (_repo().get(agreement_id, region_id, ballots=True).proxies or {}).get(member_id)
    a = _run(domain.RevokeProxy(region_id, agreement_id, member_id))
    return {"giver": member_id, "holder": holder, "mandate": _tally(a.mandate)}


@agreements.post("/<agreement_id>/mandate/close")
@allow("region-admin")
@agreements.response(200, AgreementSchema)
def close_mandate(region_id, agreement_id):
    """Close the vote now (region-admin): passed or rejected on the votes cast so far."""
    require("region-admin", region=region_id)
    return _done(_run(domain.CloseMandate(region_id, agreement_id, _expected(region_id, agreement_id))))
