"""Agreements domain: pure rules, no I/O.

An agreement is one *version* of a mandated collaboration agreement between
the region and its partners. Its lifecycle is the table :data:`LIFECYCLE`;
every method that changes an agreement checks it first (an illegal step is
:class:`~hecht.errors.InvalidTransition`, 409 naming the current status) and
returns the events it produced, each carrying the agreement's full state at
that moment (``docs/CONTRACTS.md``). Time is always passed in (``now``), so
the scheduler and the tests decide what "now" is.

The mandate vote: the electorate is frozen when the vote opens; each elector
may vote ``for``, ``against`` or ``abstain`` and change the vote until the
deadline. It passes when turnout reaches the quorum *and* the ``for`` share
of the votes cast reaches the approval threshold. Abstentions are votes cast:
they count towards turnout (the quorum) and in the denominator of the
approval share, so an abstention weighs like "not for". With no votes cast a
vote never passes, whatever the policy says.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from fractions import Fraction
from typing import Iterable

from hecht.errors import Conflict, Forbidden, Invalid, InvalidTransition

STATUSES = ("draft", "in_consultation", "mandated", "rejected", "active", "expired", "terminated",
            "superseded")
OPEN_STATUSES = ("draft", "in_consultation", "mandated")  # a version that may still become active
THEMES = ("chronic-care", "frail-elderly", "out-of-hours", "mental-health", "data-exchange", "labour-market",
          "prevention", "medication", "other")
PARTNER_KINDS = ("hospital", "municipality", "home-nursing", "pharmacy", "mental-health", "social-domain",
                 "out-of-hours-post", "nursing-home", "other")
CHOICES = ("for", "against", "abstain")
CLOSE_REASONS = ("deadline", "everyone-voted", "closed-early")

# action -> {status it may start from: statuses it may lead to}. Everything else is illegal.
LIFECYCLE: dict[str, dict[str, tuple[str, ...]]] = {
    "revise": {"draft": ("draft",)},
    "open_mandate": {"draft": ("in_consultation",)},
    "vote": {"in_consultation": ("in_consultation",)},
    "close_mandate": {"in_consultation": ("mandated", "rejected")},
    "sign": {"mandated": ("mandated",)},
    "activate": {"mandated": ("active",)},
    "amend": {"active": ("active",)},
    "mark_review_due": {"active": ("active",)},
    "expire": {"active": ("expired",)},
    "terminate": {"active": ("terminated",)},
    "supersede": {"active": ("superseded",)},
}
# How an action reads in "cannot … an agreement that is …".
PHRASES = {
    "revise": "revise", "open_mandate": "open a mandate vote on", "vote": "vote on",
    "close_mandate": "close the mandate vote of", "sign": "sign", "activate": "activate",
    "amend": "amend", "mark_review_due": "mark the review due of", "expire": "expire",
    "terminate": "terminate", "supersede": "supersede",
}


def next_status(current: str, action: str, outcome: str | None = None) -> str:
    """The status after ``action`` (``outcome`` picks one where an action has several)."""
    targets = LIFECYCLE[action].get(current)
    if targets is None:
        raise InvalidTransition("agreement", current, PHRASES[action])
    if outcome is None:
        if len(targets) != 1:
            raise ValueError(f"{action} needs an outcome, one of {targets}")
        return targets[0]
    if outcome not in targets:
        raise ValueError(f"{action} cannot lead to {outcome}")
    return outcome


def utc_ms(moment: datetime) -> datetime:
    """UTC, to the millisecond: what MongoDB stores, so a round trip changes nothing."""
    moment = moment.astimezone(timezone.utc)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return utc_ms(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


# -- terms -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Partner:
    name: str
    kind: str
    identifier: str | None = None

    def as_dict(self) -> dict:
        out = {"name": self.name, "kind": self.kind}
        if self.identifier:
            out["identifier"] = self.identifier
        return out


@dataclass(frozen=True)
class Commitment:
    party: str
    text: str


@dataclass(frozen=True)
class Document:
    title: str
    url: str


@dataclass(frozen=True)
class Terms:
    """What the parties agree on: the part of an agreement a revision or amendment may change."""
    title: str
    theme: str
    partners: tuple[Partner, ...]
    commitments: tuple[Commitment, ...]
    effective_from: date
    summary: str = ""
    municipalities: tuple[str, ...] = ()
    effective_until: date | None = None
    review_date: date | None = None
    documents: tuple[Document, ...] = ()

    FIELDS = ("title", "theme", "summary", "partners", "commitments", "municipalities", "effective_from",
              "effective_until", "review_date", "documents")

    def __post_init__(self):
        object.__setattr__(self, "partners", tuple(_as(Partner, p) for p in self.partners))
        object.__setattr__(self, "commitments", tuple(_as(Commitment, c) for c in self.commitments))
        object.__setattr__(self, "documents", tuple(_as(Document, d) for d in self.documents))
        object.__setattr__(self, "municipalities", tuple(_unique(self.municipalities)))
        errors: dict[str, list[str]] = {}
        if self.theme not in THEMES:
            errors["theme"] = [f"one of {', '.join(THEMES)}"]
        if not self.partners:
            errors["partners"] = ["an agreement needs at least one partner"]
        elif any(p.kind not in PARTNER_KINDS for p in self.partners):
            errors["partners"] = [f"a partner's kind is one of {', '.join(PARTNER_KINDS)}"]
        if not self.commitments:
            errors["commitments"] = ["an agreement needs at least one commitment"]
        if any(not d.url.lower().startswith("https://") for d in self.documents):
            errors["documents"] = ["document URLs must use https"]
        if self.effective_until is not None and self.effective_until < self.effective_from:
            errors["effective_until"] = ["must not be before effective_from"]
        if self.review_date is not None:
            if self.review_date < self.effective_from:
                errors["review_date"] = ["must not be before effective_from"]
            elif self.effective_until is not None and self.review_date > self.effective_until:
                errors["review_date"] = ["must not be after effective_until"]
        if errors:
            raise Invalid("the agreement's terms are not valid", errors=errors)

    def revised(self, changes: dict) -> "Terms":
        unknown = set(changes) - set(self.FIELDS)
        if unknown:
            raise Invalid("unknown fields", errors={k: ["unknown field"] for k in sorted(unknown)})
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return {
            "title": self.title, "theme": self.theme, "summary": self.summary,
            "partners": [p.as_dict() for p in self.partners],
            "commitments": [{"party": c.party, "text": c.text} for c in self.commitments],
            "municipalities": list(self.municipalities),
            "effective_from": self.effective_from, "effective_until": self.effective_until,
            "review_date": self.review_date,
            "documents": [{"title": d.title, "url": d.url} for d in self.documents],
        }


def _as(cls, value):
    return value if isinstance(value, cls) else cls(**value)


def _unique(items: Iterable[str]) -> list[str]:
    """In the order given, without case-insensitive repeats or blanks."""
    seen, out = set(), []
    for item in (i.strip() for i in items):
        if item and item.casefold() not in seen:
            seen.add(item.casefold())
            out.append(item)
    return out


# -- the mandate vote ------------------------------------------------------------------------
def _share(value: float) -> Fraction:
    """A policy share as an exact fraction of its decimal spelling (0.6 is 3/5, not 0.59999…)."""
    return Fraction(repr(float(value)))


@dataclass(frozen=True)
class Tally:
    electorate_size: int
    for_: int
    against: int
    abstain: int
    quorum: float
    approval_threshold: float

    @property
    def cast(self) -> int:
        return self.for_ + self.against + self.abstain

    @property
    def turnout(self) -> float:
        return self.cast / self.electorate_size if self.electorate_size else 0.0

    @property
    def quorum_met(self) -> bool:
        # Exact arithmetic: "turnout ≥ quorum" at the boundary must not depend on float rounding.
        return self.cast > 0 and Fraction(self.cast, self.electorate_size) >= _share(self.quorum)

    @property
    def threshold_met(self) -> bool:
        return self.cast > 0 and Fraction(self.for_, self.cast) >= _share(self.approval_threshold)

    @property
    def passed(self) -> bool:
        return self.quorum_met and self.threshold_met

    @classmethod
    def count(cls, ballots: dict[str, str], electorate_size: int, quorum: float,
              approval_threshold: float) -> "Tally":
        choices = list(ballots.values())
        return cls(electorate_size, choices.count("for"), choices.count("against"), choices.count("abstain"),
                   quorum, approval_threshold)


@dataclass(frozen=True)
class Mandate:
    """The vote on one agreement version; counts only, never who chose what."""
    status: str                 # open | passed | rejected
    electorate_id: str          # where the frozen list of electors is stored
    electorate_size: int
    quorum: float
    approval_threshold: float
    opened_at: datetime
    deadline: datetime
    ballots_since: int = 0      # the aggregate sequence at which the ballot box started empty
    for_: int = 0
    against: int = 0
    abstain: int = 0
    closed_at: datetime | None = None
    close_reason: str | None = None

    @property
    def tally(self) -> Tally:
        return Tally(self.electorate_size, self.for_, self.against, self.abstain, self.quorum,
                     self.approval_threshold)

    def counted(self, ballots: dict[str, str]) -> "Mandate":
        t = Tally.count(ballots, self.electorate_size, self.quorum, self.approval_threshold)
        return replace(self, for_=t.for_, against=t.against, abstain=t.abstain)

    @property
    def secret(self) -> bool:
        """The ballot is secret while the vote is open: only turnout may be seen. With the
        running for/against, whoever knows in which order colleagues voted (in a small
        electorate a "just voted" in a chat is enough) learns each choice."""
        return self.status == "open"

    def event_data(self) -> dict:
        t = self.tally
        data = {"status": self.status, "electorate_size": self.electorate_size, "cast": t.cast,
                "turnout": round(t.turnout, 6), "quorum": self.quorum,
                "approval_threshold": self.approval_threshold, "quorum_met": t.quorum_met,
                "opened_at": iso(self.opened_at), "deadline": iso(self.deadline),
                "closed_at": iso(self.closed_at)}
        if not self.secret:  # revealed when the vote closes
            data.update({"for": t.for_, "against": t.against, "abstain": t.abstain,
                         "threshold_met": t.threshold_met})
        return data


@dataclass(frozen=True)
class MandatePolicy:
    """The region's policy as this service learnt it from ``region.*`` events."""
    quorum: float
    approval_threshold: float
    voting_period_days: int


# -- the aggregate ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    type: str
    data: dict


@dataclass
class Agreement:
    id: str
    region_id: str
    terms: Terms
    created_at: datetime
    status: str = "draft"
    version: int = 1                  # place in the version chain (1, 2, … per amendment)
    previous_id: str | None = None    # the version this one amends
    chain_id: str = ""                # the first version's id: the whole chain shares it
    sequence: int = 0                 # events so far (CloudEvents `sequence`, the ETag)
    updated_at: datetime | None = None
    mandate: Mandate | None = None
    signed_at: datetime | None = None
    signed_by: str | None = None
    activated_on: date | None = None  # first day in force
    ended_on: date | None = None      # first day no longer in force
    termination_reason: str | None = None
    review_due_on: date | None = None
    # Loaded only for a vote: the frozen electorate and the ballot box (member -> choice).
    electorate: frozenset[str] | None = None
    ballots: dict[str, str] | None = None
    _events: list[Event] = field(default_factory=list, repr=False)

    def __post_init__(self):
        self.chain_id = self.chain_id or self.id
        self.updated_at = self.updated_at or self.created_at

    # -- bookkeeping ----------------------------------------------------------------------
    def _step(self, action: str, now: datetime, outcome: str | None = None) -> None:
        self.status = next_status(self.status, action, outcome)
        self.updated_at = utc_ms(now)

    def _emit(self, short_type: str, **extra) -> list[Event]:
        event = Event(short_type, {**self.event_data(), **extra})
        return [event]

    def event_data(self) -> dict:
        t = self.terms
        return {"agreement_id": self.id, "region_id": self.region_id, "version": self.version,
                "previous_id": self.previous_id, "status": self.status, "title": t.title, "theme": t.theme,
                "partners": [p.as_dict() for p in t.partners], "municipalities": list(t.municipalities),
                "effective_from": _day(t.effective_from), "effective_until": _day(t.effective_until),
                "review_date": _day(t.review_date),
                "mandate": self.mandate.event_data() if self.mandate else None}

    # -- drafting -------------------------------------------------------------------------
    @classmethod
    def draft(cls, agreement_id: str, region_id: str, terms: Terms, now: datetime) -> tuple["Agreement", list[Event]]:
        agreement = cls(id=agreement_id, region_id=region_id, terms=terms, created_at=utc_ms(now))
        return agreement, agreement._emit("agreement.drafted")

    def revise(self, changes: dict, now: datetime) -> list[Event]:
        self._step("revise", now)
        self.terms = self.terms.revised(changes)
        return self._emit("agreement.revised")

    def amend(self, new_id: str, changes: dict, now: datetime) -> tuple["Agreement", list[Event]]:
        """A new version in draft, linked to this (active) one; it needs its own mandate."""
        next_status(self.status, "amend")
        amendment = Agreement(id=new_id, region_id=self.region_id, terms=self.terms.revised(changes),
                              created_at=utc_ms(now), version=self.version + 1, previous_id=self.id,
                              chain_id=self.chain_id)
        return amendment, amendment._emit("agreement.drafted")

    # -- the mandate vote -----------------------------------------------------------------
    def open_mandate(self, electorate: Iterable[str], electorate_id: str, policy: MandatePolicy,
                     now: datetime) -> list[Event]:
        next_status(self.status, "open_mandate")
        electors = sorted(set(electorate))
        if not electors:
            raise Conflict(f"region {self.region_id} has no active members: nobody could vote",
                           reason="empty-electorate")
        now = utc_ms(now)
        self._step("open_mandate", now)
        self.mandate = Mandate(status="open", electorate_id=electorate_id, electorate_size=len(electors),
                               quorum=policy.quorum, approval_threshold=policy.approval_threshold,
                               opened_at=now, deadline=now + timedelta(days=policy.voting_period_days),
                               ballots_since=self.sequence + 1)
        self.electorate, self.ballots = frozenset(electors), {}
        return self._emit("agreement.mandate_requested", electorate=electors)

    def cast_vote(self, member_id: str, choice: str, now: datetime) -> list[Event]:
        """Record or change one elector's vote; closes the vote once everyone has voted."""
        next_status(self.status, "vote")
        if choice not in CHOICES:
            raise Invalid("not a choice", errors={"choice": [f"one of {', '.join(CHOICES)}"]})
        if self.electorate is None or self.ballots is None:
            raise RuntimeError("cast_vote needs the electorate and the ballot box loaded")
        if member_id not in self.electorate:
            raise Forbidden(f"member {member_id} is not in this vote's electorate "
                            "(it was frozen when the vote opened)")
        if now >= self.mandate.deadline:
            raise Conflict(f"the vote closed at its deadline {iso(self.mandate.deadline)}", reason="deadline-passed")
        if self.ballots.get(member_id) == choice:
            return []  # the same vote again changes nothing
        self.ballots[member_id] = choice
        self.mandate = self.mandate.counted(self.ballots)
        self.updated_at = utc_ms(now)
        events = self._emit("agreement.vote_cast")
        if self.mandate.tally.cast == self.mandate.electorate_size:
            events += self.close_mandate(now, "everyone-voted")
        return events

    def vote_of(self, member_id: str) -> str | None:
        return (self.ballots or {}).get(member_id)

    def close_mandate(self, now: datetime, reason: str) -> list[Event]:
        next_status(self.status, "close_mandate", "mandated")  # the check: only an open vote closes
        passed = self.mandate.tally.passed
        self._step("close_mandate", now, "mandated" if passed else "rejected")
        self.mandate = replace(self.mandate, status="passed" if passed else "rejected",
                               closed_at=utc_ms(now), close_reason=reason)
        return self._emit("agreement.mandated" if passed else "agreement.mandate_rejected")

    def vote_overdue(self, now: datetime) -> bool:
        return self.status == "in_consultation" and now >= self.mandate.deadline

    # -- after the mandate ----------------------------------------------------------------
    def sign(self, now: datetime, signed_by: str) -> list[Event]:
        """Signed on behalf of the region; in force at once if its start date has come."""
        next_status(self.status, "sign")
        if self.signed_at is not None:
            raise Conflict(f"agreement {self.id} was already signed at {iso(self.signed_at)}")
        until = self.terms.effective_until
        if until is not None and until < now.date():
            raise Conflict(f"its effective period ended on {until.isoformat()}; amend the dates first",
                           reason="period-ended")
        self._step("sign", now)
        self.signed_at, self.signed_by = utc_ms(now), signed_by
        events = self._emit("agreement.signed")
        if self.due_for_activation(now):
            events += self.activate(now)
        return events

    def due_for_activation(self, now: datetime) -> bool:
        return (self.status == "mandated" and self.signed_at is not None
                and self.terms.effective_from <= now.date())

    def activate(self, now: datetime) -> list[Event]:
        next_status(self.status, "activate")
        if self.signed_at is None:
            raise Conflict(f"agreement {self.id} must be signed before it becomes active")
        self._step("activate", now)
        # In force from its start date, or from the signature if that came later, not from
        # whenever a worker got round to it.
        self.activated_on = max(self.terms.effective_from, self.signed_at.date())
        return self._emit("agreement.activated")

    def due_for_expiry(self, now: datetime) -> bool:
        until = self.terms.effective_until
        return self.status == "active" and until is not None and until < now.date()

    def expire(self, now: datetime) -> list[Event]:
        next_status(self.status, "expire")
        if self.terms.effective_until is None:
            raise Conflict(f"agreement {self.id} has no end date: it does not expire")
        self._step("expire", now)
        self.ended_on = self.terms.effective_until + timedelta(days=1)  # in force through its last day
        return self._emit("agreement.expired")

    def due_for_review(self, now: datetime) -> bool:
        review = self.terms.review_date
        return (self.status == "active" and review is not None and review <= now.date()
                and self.review_due_on is None)

    def mark_review_due(self, now: datetime) -> list[Event]:
        next_status(self.status, "mark_review_due")
        if self.review_due_on is not None:
            raise Conflict(f"agreement {self.id}'s review was already marked due")
        self._step("mark_review_due", now)
        self.review_due_on = now.date()
        return self._emit("agreement.review_due")

    def terminate(self, reason: str, now: datetime) -> list[Event]:
        reason = (reason or "").strip()
        if not reason:
            raise Invalid("a termination needs a reason", errors={"reason": ["required"]})
        self._step("terminate", now)
        self.termination_reason = reason
        self.ended_on = now.date()
        return self._emit("agreement.terminated", reason=reason)

    def supersede(self, successor: "Agreement", now: datetime) -> list[Event]:
        if successor.previous_id != self.id or successor.status != "active":
            raise Conflict(f"agreement {successor.id} is not an active amendment of {self.id}")
        self._step("supersede", now)
        self.ended_on = successor.activated_on
        return self._emit("agreement.superseded")


# -- commands --------------------------------------------------------------------------------
@dataclass(frozen=True)
class DraftAgreement:
    region_id: str
    terms: Terms


@dataclass(frozen=True)
class ReviseAgreement:
    region_id: str
    agreement_id: str
    expected_sequence: int
    changes: dict


@dataclass(frozen=True)
class AmendAgreement:
    region_id: str
    agreement_id: str
    changes: dict


@dataclass(frozen=True)
class OpenMandate:
    region_id: str
    agreement_id: str
    expected_sequence: int | None = None


@dataclass(frozen=True)
class CastVote:
    region_id: str
    agreement_id: str
    member_id: str
    choice: str


@dataclass(frozen=True)
class CloseMandate:
    region_id: str
    agreement_id: str
    expected_sequence: int | None = None


@dataclass(frozen=True)
class SignAgreement:
    region_id: str
    agreement_id: str
    signed_by: str
    expected_sequence: int | None = None


@dataclass(frozen=True)
class TerminateAgreement:
    region_id: str
    agreement_id: str
    reason: str
    expected_sequence: int | None = None


# Dated transitions, issued by the scheduler (no region: it works across all of them).
@dataclass(frozen=True)
class CloseOverdueVote:
    agreement_id: str


@dataclass(frozen=True)
class ActivateDue:
    agreement_id: str


@dataclass(frozen=True)
class ExpireDue:
    agreement_id: str


@dataclass(frozen=True)
class MarkReviewDue:
    agreement_id: str


@dataclass(frozen=True)
class SupersedePrevious:
    """Finish an amendment's activation: its previous version becomes superseded."""
    agreement_id: str
