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

from hecht.errors import Conflict, Forbidden, Invalid, InvalidTransition, NotFound

STATUSES = ("draft", "in_consultation", "mandated", "rejected", "active", "expired", "terminated",
            "superseded")
OPEN_STATUSES = ("draft", "in_consultation", "mandated")  # a version that may still become active
THEMES = ("chronic-care", "frail-elderly", "out-of-hours", "mental-health", "data-exchange", "labour-market",
          "prevention", "medication", "other")
PARTNER_KINDS = ("hospital", "municipality", "home-nursing", "pharmacy", "mental-health", "social-domain",
                 "out-of-hours-post", "nursing-home", "other")
CHOICES = ("for", "against", "abstain")
CLOSE_REASONS = ("deadline", "everyone-voted", "closed-early")
# Who mandates (the region's statutes): every active member whose practice lies in the region,
# the board, or a care council of named seats in clusters (a majority needed in each cluster).
BODIES = ("assembly", "board", "council")
# The roles that sit on the board: the chair and the secretary are board offices.
BOARD_ROLES = ("board", "chair", "secretary")
TRAINEE = "gp-in-training"  # the member category that votes only where the policy allows trainees

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


def majority_holds(for_: int, cast: int, approval_threshold: float) -> bool:
    """A council cluster's majority: more than half of its votes cast are *for* (a tie is no
    majority), and at least the approval threshold where the statutes set a higher one."""
    if cast <= 0:
        return False
    share = Fraction(for_, cast)
    return share > Fraction(1, 2) and share >= _share(approval_threshold)


@dataclass(frozen=True)
class ClusterTally:
    """One cluster of a care council: its seats and the votes cast in it."""
    cluster: str
    seats: int
    for_: int = 0
    against: int = 0
    abstain: int = 0

    @property
    def cast(self) -> int:
        return self.for_ + self.against + self.abstain

    def quorum_met(self, quorum: float) -> bool:
        return self.cast > 0 and Fraction(self.cast, self.seats) >= _share(quorum)

    def majority(self, approval_threshold: float) -> bool:
        return majority_holds(self.for_, self.cast, approval_threshold)

    def passed(self, quorum: float, approval_threshold: float) -> bool:
        return self.quorum_met(quorum) and self.majority(approval_threshold)


def count_clusters(seats: dict[str, str], ballots: dict[str, str]) -> tuple[ClusterTally, ...]:
    """Per cluster (in name order), the seats and the choices of the seats' holders."""
    out = []
    for cluster in sorted(set(seats.values())):
        holders = [m for m, c in seats.items() if c == cluster]
        choices = [ballots[m] for m in holders if m in ballots]
        out.append(ClusterTally(cluster, len(holders), choices.count("for"), choices.count("against"),
                                choices.count("abstain")))
    return tuple(out)


def council_passed(clusters: Iterable[ClusterTally], quorum: float, approval_threshold: float) -> bool:
    """The care council's rule: every cluster reaches its quorum and holds a majority; a cluster
    without its quorum fails the whole vote."""
    clusters = list(clusters)
    return bool(clusters) and all(c.passed(quorum, approval_threshold) for c in clusters)


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
    # The policy in force when the vote opened, frozen with it (a later change never applies).
    body: str = "assembly"
    policy_version: int | None = None
    live_tally: bool = False
    max_proxies: int = 0
    trainees_vote: bool = True
    seats: tuple[tuple[str, str], ...] = ()       # council: (member, cluster) of each elector
    clusters: tuple[ClusterTally, ...] = ()        # council: the count per cluster
    outside_region: tuple[str, ...] = ()           # active members left out: practice outside the region
    unverified: tuple[str, ...] = ()               # left out: registration past its re-confirmation

    @property
    def tally(self) -> Tally:
        return Tally(self.electorate_size, self.for_, self.against, self.abstain, self.quorum,
                     self.approval_threshold)

    def counted(self, ballots: dict[str, str]) -> "Mandate":
        t = Tally.count(ballots, self.electorate_size, self.quorum, self.approval_threshold)
        clusters = count_clusters(dict(self.seats), ballots) if self.body == "council" else ()
        return replace(self, for_=t.for_, against=t.against, abstain=t.abstain, clusters=clusters)

    @property
    def quorum_met(self) -> bool:
        if self.body == "council":
            return bool(self.clusters) and all(c.quorum_met(self.quorum) for c in self.clusters)
        return self.tally.quorum_met

    @property
    def threshold_met(self) -> bool:
        if self.body == "council":
            return bool(self.clusters) and all(c.majority(self.approval_threshold) for c in self.clusters)
        return self.tally.threshold_met

    @property
    def passed(self) -> bool:
        """The body's rule: the assembly's or board's quorum and threshold, or a council's
        quorum and majority in every cluster."""
        if self.body == "council":
            return council_passed(self.clusters, self.quorum, self.approval_threshold)
        return self.tally.passed

    @property
    def secret(self) -> bool:
        """The ballot is secret while the vote is open: only turnout may be seen. With the
        running for/against, whoever knows in which order colleagues voted (in a small
        electorate a "just voted" in a chat is enough) learns each choice. A region whose
        statutes want a live tally opts in (``live_tally``, frozen when the vote opens)."""
        return self.status == "open" and not self.live_tally

    def policy_data(self) -> dict:
        """The frozen policy and body, as the tally and the events show them."""
        return {"body": self.body, "policy_version": self.policy_version, "live_tally": self.live_tally,
                "max_proxies": self.max_proxies, "trainees_vote": self.trainees_vote}

    def cluster_data(self) -> list[dict] | None:
        if self.body != "council":
            return None
        out = []
        for c in self.clusters:
            row = {"cluster": c.cluster, "seats": c.seats, "cast": c.cast, "quorum_met": c.quorum_met(self.quorum)}
            if not self.secret:
                row.update({"for": c.for_, "against": c.against, "abstain": c.abstain,
                            "majority": c.majority(self.approval_threshold)})
            out.append(row)
        return out

    def event_data(self) -> dict:
        t = self.tally
        data = {"status": self.status, "electorate_size": self.electorate_size, "cast": t.cast,
                "turnout": round(t.turnout, 6), "quorum": self.quorum,
                "approval_threshold": self.approval_threshold, "quorum_met": self.quorum_met,
                "opened_at": iso(self.opened_at), "deadline": iso(self.deadline),
                "closed_at": iso(self.closed_at), **self.policy_data()}
        if self.body == "council":
            data["clusters"] = self.cluster_data()
        if not self.secret:  # revealed when the vote closes (or live, where the policy says so)
            data.update({"for": t.for_, "against": t.against, "abstain": t.abstain,
                         "threshold_met": self.threshold_met})
        return data


@dataclass(frozen=True)
class MandatePolicy:
    """The region's policy as this service learnt it from ``region.*`` events (the members
    service validates it; defaults are today's behaviour for regions announced before)."""
    quorum: float
    approval_threshold: float
    voting_period_days: int
    body: str = "assembly"
    seats: tuple[tuple[str, str], ...] = ()   # council: (member, cluster)
    live_tally: bool = False
    max_proxies: int = 0
    trainees_vote: bool = True
    reverify_months: int = 12
    unverified_leave_electorate: bool = False
    version: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> "MandatePolicy":
        seats = tuple((s["member_id"], s["cluster"]) for s in d.get("seats") or ())
        return cls(quorum=d["quorum"], approval_threshold=d["approval_threshold"],
                   voting_period_days=d["voting_period_days"], body=d.get("body") or "assembly", seats=seats,
                   live_tally=bool(d.get("live_tally", False)), max_proxies=int(d.get("max_proxies") or 0),
                   trainees_vote=bool(d.get("trainees_vote", True)),
                   reverify_months=int(d.get("reverify_months") or 12),
                   unverified_leave_electorate=bool(d.get("unverified_leave_electorate", False)),
                   version=int(d.get("version") or 1))


@dataclass(frozen=True)
class Electorate:
    """Who may vote, by the body's rule, at the moment a vote opens."""
    members: tuple[str, ...]
    seats: tuple[tuple[str, str], ...] = ()      # council only
    outside_region: tuple[str, ...] = ()         # active members whose practice is outside the region
    unverified: tuple[str, ...] = ()             # electors left out: registration past its re-confirmation


def _add_months(day: date, months: int) -> date:
    """Calendar months; a day the target month lacks becomes its last (the members service's rule)."""
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    nxt = date(year + (month + 1) // 12, (month + 1) % 12 + 1, 1)
    return date(year, month + 1, min(day.day, (nxt - timedelta(days=1)).day))


def reverify_due(verified_at: datetime | str | None, months: int, now: datetime) -> bool:
    """Is a registration verified at ``verified_at`` past its re-confirmation at ``now``? Due from
    00:00 UTC of the day ``months`` calendar months later, as the members service computes it
    (``services.members.domain.reverify_due_at``). Unknown (a read-model row from events older than
    re-verification): not due, a vote is never taken from someone on a guess."""
    if not verified_at:
        return False
    if isinstance(verified_at, str):
        verified_at = datetime.fromisoformat(verified_at.replace("Z", "+00:00"))
    if verified_at.tzinfo is None:
        verified_at = verified_at.replace(tzinfo=timezone.utc)
    day = _add_months(verified_at.astimezone(timezone.utc).date(), months)
    now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) <= now


def electorate_for(policy: MandatePolicy, members: Iterable[dict], municipalities: Iterable[str],
                   now: datetime | None = None) -> Electorate:
    """The electorate by the body's rule, then, where the policy says ``unverified_leave_electorate``,
    without the electors whose registration is past its re-confirmation at ``now`` (listed in
    ``unverified``, never silently dropped; they are back in the next vote once they re-confirm)."""
    members = list(members)
    electorate = _by_body(policy, members, municipalities)
    if now is None or not policy.unverified_leave_electorate:
        return electorate
    verified = {m["_id"]: m.get("verified_at") for m in members}
    due = {k for k in electorate.members if reverify_due(verified.get(k), policy.reverify_months, now)}
    if not due:
        return electorate
    return Electorate(tuple(k for k in electorate.members if k not in due),
                      tuple(s for s in electorate.seats if s[0] not in due), electorate.outside_region,
                      tuple(sorted(due)))


def _by_body(policy: MandatePolicy, members: Iterable[dict], municipalities: Iterable[str]) -> Electorate:
    """The electorate by the body's rule, from the region's active members.

    ``members`` are the read model's rows (``_id``, ``status``, ``roles``, ``category``,
    ``municipality``); only ``active`` ones count.
    - assembly: every active member whose practice lies in one of the region's municipalities;
      the others are listed in ``outside_region`` (flagged, never silently dropped);
    - board: active members holding a board role (:data:`BOARD_ROLES`);
    - council: the holders of the named seats who are active members.
    A member in training (:data:`TRAINEE`) votes only if the policy says trainees vote.
    """
    active = {m["_id"]: m for m in members if m.get("status") == "active"}
    eligible = {k: m for k, m in active.items() if policy.trainees_vote or m.get("category") != TRAINEE}
    if policy.body == "council":
        seats = tuple(sorted((mid, c) for mid, c in policy.seats if mid in eligible))
        return Electorate(tuple(m for m, _ in seats), seats)
    if policy.body == "board":
        return Electorate(tuple(sorted(k for k, m in eligible.items()
                                       if set(m.get("roles") or ()) & set(BOARD_ROLES))))
    inside = {m.casefold() for m in municipalities}

    def practises_inside(m: dict) -> bool:
        if "municipality" not in m:
            return True   # a read-model row from before the rule (no municipality known): counted as before
        return (m["municipality"] or "").casefold() in inside
    within = sorted(k for k, m in eligible.items() if practises_inside(m))
    outside = sorted(k for k, m in eligible.items() if not practises_inside(m))
    return Electorate(tuple(within), (), tuple(outside))


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
    proxies: dict[str, str] | None = None   # giver -> holder (loaded with the ballot box)
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
    def open_mandate(self, electorate: Iterable[str] | Electorate, electorate_id: str, policy: MandatePolicy,
                     now: datetime) -> list[Event]:
        """Open the vote with the electorate and the policy in force now, both frozen into it."""
        next_status(self.status, "open_mandate")
        if not isinstance(electorate, Electorate):
            electorate = Electorate(tuple(electorate))
        electors = sorted(set(electorate.members))
        if not electors:
            raise Conflict(f"region {self.region_id} has no active members who may vote in its {policy.body}: "
                           "nobody could vote", reason="empty-electorate")
        now = utc_ms(now)
        self._step("open_mandate", now)
        self.mandate = Mandate(status="open", electorate_id=electorate_id, electorate_size=len(electors),
                               quorum=policy.quorum, approval_threshold=policy.approval_threshold,
                               opened_at=now, deadline=now + timedelta(days=policy.voting_period_days),
                               ballots_since=self.sequence + 1, body=policy.body, policy_version=policy.version,
                               live_tally=policy.live_tally, max_proxies=policy.max_proxies,
                               trainees_vote=policy.trainees_vote, seats=tuple(sorted(electorate.seats)),
                               outside_region=tuple(electorate.outside_region),
                               unverified=tuple(electorate.unverified))
        self.mandate = self.mandate.counted({})
        self.electorate, self.ballots, self.proxies = frozenset(electors), {}, {}
        return self._emit("agreement.mandate_requested", electorate=electors,
                          outside_region=list(electorate.outside_region), unverified=list(electorate.unverified))

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
        proxies = self.proxies if self.proxies is not None else {}
        if member_id in proxies:
            if member_id in self.ballots:
                raise Conflict(f"your share was cast by {proxies[member_id]}, who holds your proxy",
                               reason="proxy-used")
            del proxies[member_id]  # voting yourself withdraws the proxy: your own vote counts, once
        if self.ballots.get(member_id) == choice:
            return []  # the same vote again changes nothing
        self.ballots[member_id] = choice
        for giver in self.carried_by(member_id):
            self.ballots[giver] = choice   # the holder's vote casts each share they carry
        self.mandate = self.mandate.counted(self.ballots)
        self.updated_at = utc_ms(now)
        events = self._emit("agreement.vote_cast")
        if self.mandate.tally.cast == self.mandate.electorate_size:
            events += self.close_mandate(now, "everyone-voted")
        return events

    def vote_of(self, member_id: str) -> str | None:
        return (self.ballots or {}).get(member_id)

    # -- proxies ----------------------------------------------------------------------------
    def carried_by(self, holder: str) -> list[str]:
        return sorted(g for g, h in (self.proxies or {}).items() if h == holder)

    def _proxy_checks(self, action: str, now: datetime) -> None:
        next_status(self.status, "vote")
        if self.electorate is None or self.ballots is None:
            raise RuntimeError(f"{action} needs the electorate and the ballot box loaded")
        if now >= self.mandate.deadline:
            raise Conflict(f"the vote closed at its deadline {iso(self.mandate.deadline)}", reason="deadline-passed")
        if self.proxies is None:
            self.proxies = {}

    def give_proxy(self, giver: str, holder: str, now: datetime) -> list[Event]:
        """``giver`` lets ``holder`` vote for their share. Both are electors who have not voted;
        no chains (a holder gives none, a giver carries none); a holder carries at most the
        frozen ``max_proxies``. Each share still counts once: it is the giver's ballot."""
        self._proxy_checks("give_proxy", now)
        limit = self.mandate.max_proxies
        if limit <= 0:
            raise Conflict("this vote allows no proxies (the region's policy when it opened)",
                           reason="proxies-not-allowed")
        if giver == holder:
            raise Invalid("a proxy goes to another elector", errors={"holder": ["not yourself"]})
        for who, role in ((giver, "giver"), (holder, "holder")):
            if who not in self.electorate:
                raise Forbidden(f"member {who} ({role}) is not in this vote's electorate")
            if who in self.ballots:
                raise Conflict(f"member {who} ({role}) has already voted", reason="already-voted")
        if giver in self.proxies:
            raise Conflict(f"you already gave your proxy to {self.proxies[giver]}; revoke it first",
                           reason="proxy-exists")
        if holder in self.proxies or self.carried_by(giver):
            raise Conflict("a proxy cannot be passed on: the holder gave one, or you carry one",
                           reason="proxy-chain")
        if len(self.carried_by(holder)) >= limit:
            raise Conflict(f"member {holder} already carries {limit} proxies, the most allowed",
                           reason="too-many-proxies")
        self.proxies[giver] = holder
        self.updated_at = utc_ms(now)
        return self._emit("agreement.proxy_recorded", proxy={"giver": giver, "holder": holder})

    def revoke_proxy(self, giver: str, now: datetime) -> list[Event]:
        """Withdraw a proxy, until the share has been cast."""
        self._proxy_checks("revoke_proxy", now)
        holder = self.proxies.get(giver)
        if holder is None:
            raise NotFound(f"member {giver} has given no proxy in this vote")
        if giver in self.ballots:
            raise Conflict(f"{holder} has already voted for your share", reason="proxy-used")
        del self.proxies[giver]
        self.updated_at = utc_ms(now)
        return self._emit("agreement.proxy_revoked", proxy={"giver": giver, "holder": holder})

    def close_mandate(self, now: datetime, reason: str) -> list[Event]:
        next_status(self.status, "close_mandate", "mandated")  # the check: only an open vote closes
        passed = self.mandate.passed
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
        # The reason is staff free text: it stays with the agreement (staff read it in the API),
        # never in the event that integrators read on Kafka (README "Personal data").
        return self._emit("agreement.terminated")

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
class GiveProxy:
    region_id: str
    agreement_id: str
    giver: str
    holder: str


@dataclass(frozen=True)
class RevokeProxy:
    region_id: str
    agreement_id: str
    giver: str


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
