"""Commands → domain → repository, and members-service events → read model.

The routing tables at the bottom are the map of behaviour: the HTTP API and
the scheduler issue the same commands, the consumer feeds ``EVENT_HANDLERS``.

Every change goes through :func:`_change`: read the latest state, let the
domain decide, commit; when another writer committed first, read again and
decide again (unless the caller pinned a version with ``If-Match``: then the
conflict is the answer, 412). A dated transition is therefore applied exactly
once however many schedulers race for it: the loser re-reads, finds it no
longer due, and does nothing.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from hecht import events as ev
from hecht.errors import Conflict, HechtError, Invalid, NotFound, PreconditionFailed, Unavailable
from hecht.web import new_id

from . import domain
from .domain import Agreement, Event
from .repository import AgreementRepository, ReadModel, VersionConflict

MAX_ATTEMPTS = 80  # concurrent voters on one agreement take turns; this bounds one request's patience


class Unit:
    """What one command may use, and the time it runs at (each commit is its own transaction)."""

    def __init__(self, db, now: datetime):
        self.agreements = AgreementRepository(db)
        self.views = ReadModel(db)
        self.now = now


@dataclass
class Change:
    """What a decision commits: events, the ballots they record, and each event's trace."""
    events: list[Event]
    ballots: list[tuple[str, str]] = field(default_factory=list)
    traces: list[str | None] | None = None


def _change(uow: Unit, agreement_id: str, region_id: str | None,
            decide: Callable[[Agreement], list[Event] | Change], *,
            expected: int | None = None, ballots: bool = False,
            trace: str | None = None) -> tuple[Agreement, bool]:
    """Read, decide, commit; retried on a concurrent commit. Returns (agreement, changed)."""
    for attempt in range(MAX_ATTEMPTS):
        agreement = uow.agreements.get(agreement_id, region_id, ballots=ballots)
        if expected is not None and agreement.sequence != expected:
            raise PreconditionFailed(f"agreement {agreement_id} has changed (current ETag \"{agreement.sequence}\"); "
                                     "read it again")
        decision = decide(agreement)
        change = decision if isinstance(decision, Change) else Change(decision)
        if not change.events:
            return agreement, False
        try:
            return uow.agreements.commit(agreement, change.events, change.traces or trace, change.ballots), True
        except VersionConflict:
            if expected is not None:
                raise
            time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
    raise Unavailable(f"agreement {agreement_id} is changing too often right now; retry shortly")


def _check_municipalities(uow: Unit, region_id: str, municipalities) -> None:
    """Municipalities in scope must lie in the region (checked once the region is known here)."""
    region = uow.views.region(region_id)
    if region is None:
        return
    known = {m.casefold() for m in region.get("municipalities") or []}
    outside = [m for m in municipalities if m.casefold() not in known]
    if outside:
        raise Invalid("municipalities outside the region",
                      errors={"municipalities": [f"{m} is not in region {region_id}" for m in outside]})


def _known_region(uow: Unit, region_id: str) -> None:
    """Agreements are made only in a region the members service announced (its ``region.*`` events)."""
    if uow.views.region(region_id) is None:
        raise NotFound(f"region {region_id} not found (no region event from the members service names it)")


# -- drafting --------------------------------------------------------------------------------
def draft_agreement(cmd: domain.DraftAgreement, uow: Unit, trace: str | None) -> Agreement:
    _known_region(uow, cmd.region_id)
    _check_municipalities(uow, cmd.region_id, cmd.terms.municipalities)
    agreement, events = Agreement.draft(new_id("a"), cmd.region_id, cmd.terms, uow.now)
    return uow.agreements.commit(agreement, events, trace)


def revise_agreement(cmd: domain.ReviseAgreement, uow: Unit, trace: str | None) -> Agreement:
    def decide(a: Agreement):
        events = a.revise(cmd.changes, uow.now)
        _check_municipalities(uow, a.region_id, cmd.changes.get("municipalities", ()))
        return events
    return _change(uow, cmd.agreement_id, cmd.region_id, decide, expected=cmd.expected_sequence, trace=trace)[0]


def amend_agreement(cmd: domain.AmendAgreement, uow: Unit, trace: str | None) -> Agreement:
    current = uow.agreements.get(cmd.agreement_id, cmd.region_id)
    amendment, events = current.amend(new_id("a"), cmd.changes, uow.now)
    pending = uow.agreements.open_amendment(current.id)
    if pending is not None:
        raise Conflict(f"amendment {pending['_id']} of this agreement is already {pending['status']}; "
                       "finish or replace that one first", amendment_id=pending["_id"])
    _check_municipalities(uow, cmd.region_id, cmd.changes.get("municipalities", ()))
    return uow.agreements.commit(amendment, events, trace)


# -- the mandate vote ------------------------------------------------------------------------
def open_mandate(cmd: domain.OpenMandate, uow: Unit, trace: str | None) -> Agreement:
    current = uow.agreements.get(cmd.agreement_id, cmd.region_id)
    domain.next_status(current.status, "open_mandate")  # a clear 409 before anything else
    policy = uow.views.policy(cmd.region_id)
    if policy is None:
        raise Conflict(f"region {cmd.region_id} is not known to the agreements service yet "
                       "(no region event has arrived from the members service)", reason="unknown-region")
    # The body's rule, applied now; the policy and the electorate are frozen into the vote.
    electorate = uow.views.electorate(cmd.region_id, policy, uow.now)
    electorate_id: list[str] = []

    def decide(a: Agreement):
        if not electorate_id:
            electorate_id.append(f"{a.id}:{new_id('e')}")
        events = a.open_mandate(electorate, electorate_id[0], policy, uow.now)
        uow.agreements.save_electorate(electorate_id[0], a.id, list(electorate.members))
        return events
    return _change(uow, cmd.agreement_id, cmd.region_id, decide, expected=cmd.expected_sequence, trace=trace)[0]


class _Ticket:
    """One vote waiting for its process's committer."""

    def __init__(self, cmd: domain.CastVote, trace: str | None):
        self.cmd, self.trace = cmd, trace
        self.wake = threading.Event()
        self.lead = self.finished = False
        self.result: Agreement | None = None
        self.error: BaseException | None = None


class VoteBatcher:
    """Group commit: votes on one agreement arriving together in one process share one commit.

    Every vote is a commit on its agreement (the ballot, the new tally and its
    ``agreement.vote_cast`` event in one transaction), so concurrent voters must
    take turns. Instead of colliding with each other, the votes that arrive while
    a commit is in flight queue up and the next leader commits them all at once:
    still one ``vote_cast`` event per vote, each with the tally after that vote,
    and still one transaction. Processes (gunicorn workers) still collide with
    each other, and retry as any writer does.
    """

    WAIT_S = 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self._queues: dict[str, list[_Ticket]] = {}
        self._busy: set[str] = set()

    def submit(self, cmd: domain.CastVote, uow: Unit, trace: str | None) -> Agreement:
        ticket = _Ticket(cmd, trace)
        key = cmd.agreement_id
        with self._lock:
            self._queues.setdefault(key, []).append(ticket)
            if key not in self._busy:
                self._busy.add(key)
                ticket.lead = True
        while not ticket.lead:
            if not ticket.wake.wait(self.WAIT_S):
                raise Unavailable("the vote could not be recorded in time; send it again")
            ticket.wake.clear()
            if ticket.finished:
                return self._outcome(ticket)
        with self._lock:
            batch = self._queues.pop(key, [])
        try:
            self._commit(batch, uow)
        except BaseException as e:  # noqa: BLE001 - every vote of the batch gets the same answer
            for t in batch:
                t.error = t.error or e
        finally:
            for t in batch:
                t.finished = True
                t.wake.set()
            with self._lock:
                waiting = self._queues.get(key)
                if waiting:
                    waiting[0].lead = True  # hand over: the next batch is already queued
                    waiting[0].wake.set()
                else:
                    self._busy.discard(key)
        return self._outcome(ticket)

    @staticmethod
    def _outcome(ticket: _Ticket) -> Agreement:
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    @staticmethod
    def _commit(batch: list[_Ticket], uow: Unit) -> None:
        def decide(a: Agreement) -> Change:
            change = Change([], [], [])
            for t in batch:
                t.error = None
                try:
                    if a.region_id != t.cmd.region_id:
                        raise NotFound(f"agreement {a.id} not found")
                    events = a.cast_vote(t.cmd.member_id, t.cmd.choice, uow.now)
                except HechtError as e:
                    t.error = e
                    continue
                change.events += events
                # No request trace on a ballot's events: the voter's client chooses it, and it
                # would tie an event to one person's request (the ballot is secret).
                change.traces += [None] * len(events)
                if events:
                    change.ballots.append((t.cmd.member_id, t.cmd.choice))
            return change
        agreement, _ = _change(uow, batch[0].cmd.agreement_id, None, decide, ballots=True)
        for t in batch:
            t.result = agreement


VOTES = VoteBatcher()  # one per process


def cast_vote(cmd: domain.CastVote, uow: Unit, trace: str | None) -> Agreement:
    return VOTES.submit(cmd, uow, trace)


def give_proxy(cmd: domain.GiveProxy, uow: Unit, trace: str | None) -> Agreement:
    return _change(uow, cmd.agreement_id, cmd.region_id, lambda a: a.give_proxy(cmd.giver, cmd.holder, uow.now),
                   ballots=True, trace=trace)[0]


def revoke_proxy(cmd: domain.RevokeProxy, uow: Unit, trace: str | None) -> Agreement:
    return _change(uow, cmd.agreement_id, cmd.region_id, lambda a: a.revoke_proxy(cmd.giver, uow.now),
                   ballots=True, trace=trace)[0]


def close_mandate(cmd: domain.CloseMandate, uow: Unit, trace: str | None) -> Agreement:
    def decide(a: Agreement):
        reason = "deadline" if a.vote_overdue(uow.now) else "closed-early"
        return a.close_mandate(uow.now, reason)
    return _change(uow, cmd.agreement_id, cmd.region_id, decide, expected=cmd.expected_sequence, trace=trace)[0]


# -- after the mandate -----------------------------------------------------------------------
def sign_agreement(cmd: domain.SignAgreement, uow: Unit, trace: str | None) -> Agreement:
    def decide(a: Agreement):
        events = a.sign(uow.now, cmd.signed_by)
        if a.previous_id:
            previous = uow.agreements.get(a.previous_id)
            if previous.status != "active":
                raise Conflict(f"the version it amends ({previous.id}) is {previous.status}, no longer active",
                               reason="previous-not-active")
        return events
    agreement, _ = _change(uow, cmd.agreement_id, cmd.region_id, decide, expected=cmd.expected_sequence,
                           trace=trace)
    if agreement.status == "active" and agreement.previous_id:
        _supersede_previous(uow, agreement, trace)
    return agreement


def terminate_agreement(cmd: domain.TerminateAgreement, uow: Unit, trace: str | None) -> Agreement:
    return _change(uow, cmd.agreement_id, cmd.region_id, lambda a: a.terminate(cmd.reason, uow.now),
                   expected=cmd.expected_sequence, trace=trace)[0]


def _supersede_previous(uow: Unit, successor: Agreement, trace: str | None) -> bool:
    """The second step of an amendment's activation (repeated by the scheduler if a crash cut it off)."""
    def decide(previous: Agreement):
        return previous.supersede(successor, uow.now) if previous.status == "active" else []
    return _change(uow, successor.previous_id, None, decide, trace=trace)[1]


# -- dated transitions (the scheduler) -------------------------------------------------------
def close_overdue_vote(cmd: domain.CloseOverdueVote, uow: Unit, trace: str | None) -> Agreement | None:
    agreement, changed = _change(uow, cmd.agreement_id, None, lambda a: (
        a.close_mandate(uow.now, "deadline") if a.vote_overdue(uow.now) else []), trace=trace)
    return agreement if changed else None


def activate_due(cmd: domain.ActivateDue, uow: Unit, trace: str | None) -> Agreement | None:
    agreement, changed = _change(uow, cmd.agreement_id, None, lambda a: (
        a.activate(uow.now) if a.due_for_activation(uow.now) else []), trace=trace)
    if changed and agreement.previous_id:
        _supersede_previous(uow, agreement, trace)
    return agreement if changed else None


def expire_due(cmd: domain.ExpireDue, uow: Unit, trace: str | None) -> Agreement | None:
    agreement, changed = _change(uow, cmd.agreement_id, None, lambda a: (
        a.expire(uow.now) if a.due_for_expiry(uow.now) else []), trace=trace)
    return agreement if changed else None


def mark_review_due(cmd: domain.MarkReviewDue, uow: Unit, trace: str | None) -> Agreement | None:
    agreement, changed = _change(uow, cmd.agreement_id, None, lambda a: (
        a.mark_review_due(uow.now) if a.due_for_review(uow.now) else []), trace=trace)
    return agreement if changed else None


def supersede_previous(cmd: domain.SupersedePrevious, uow: Unit, trace: str | None) -> Agreement | None:
    successor = uow.agreements.get(cmd.agreement_id)
    if successor.status != "active" or not successor.previous_id:
        return None
    return successor if _supersede_previous(uow, successor, trace) else None


# -- the read model (events from the members service) ----------------------------------------
def apply_region(event: dict, views: ReadModel) -> None:
    views.put_region(event["data"], event["sequence"])


def apply_member(event: dict, views: ReadModel) -> None:
    views.put_member(event["data"], event["sequence"])


# Every member.* event carries the member's state, so each one keeps the read model current
# (email_verified changes no status; applying it just moves the sequence on).
MEMBER_EVENT_TYPES = ("signed_up", "enrolled", "rejected", "suspended", "reinstated", "left", "erased",
                      "roles_changed", "capacity_changed", "profile_updated", "email_verified", "reverified",
                      "reverification_due")

EVENT_HANDLERS: dict[str, Callable[[dict, ReadModel], None]] = {
    "region.registered": apply_region,
    "region.updated": apply_region,
    **{f"member.{t}": apply_member for t in MEMBER_EVENT_TYPES},
}

COMMAND_HANDLERS = {
    domain.DraftAgreement: draft_agreement,
    domain.ReviseAgreement: revise_agreement,
    domain.AmendAgreement: amend_agreement,
    domain.OpenMandate: open_mandate,
    domain.CastVote: cast_vote,
    domain.GiveProxy: give_proxy,
    domain.RevokeProxy: revoke_proxy,
    domain.CloseMandate: close_mandate,
    domain.SignAgreement: sign_agreement,
    domain.TerminateAgreement: terminate_agreement,
    domain.CloseOverdueVote: close_overdue_vote,
    domain.ActivateDue: activate_due,
    domain.ExpireDue: expire_due,
    domain.MarkReviewDue: mark_review_due,
    domain.SupersedePrevious: supersede_previous,
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def handle(cmd, db, *, now: datetime | None = None, trace: str | None = None):
    return COMMAND_HANDLERS[type(cmd)](cmd, Unit(db, now or utcnow()), trace)


def event_handler(db) -> Callable[[dict], None]:
    """The consumer's handler: tolerant of event types it does not need."""
    views = ReadModel(db)

    def handle_event(event: dict) -> None:
        apply = EVENT_HANDLERS.get(ev.short_type(event["type"]))
        if apply is not None:
            apply(event, views)
    return handle_event
