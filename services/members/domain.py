"""Members domain: pure rules, no I/O.

Commands are imperative (``RegisterRegion``); the events they produce are
past tense (``region.registered``) and carry the aggregate's full state, so a
tolerant reader needs no earlier event to understand one.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone

from hecht import emails
from hecht.errors import Invalid, InvalidTransition

COUNTRIES = ("NL", "BE")
REGION_KINDS = ("zorggroep", "huisartsenkring", "regio-organisatie", "eerstelijnszone", "other")


# Who mandates (the region's statutes; the agreements service applies the rule when a vote opens):
# ``assembly`` every active member whose practice lies in the region, ``board`` the members
# holding a board role (board, chair, secretary), ``council`` named seats in clusters, with the
# quorum and a majority needed in each cluster.
MANDATE_BODIES = ("assembly", "board", "council")
MAX_PROXIES = 5
REVERIFY_MONTHS = (1, 60)   # how often a registration must be re-confirmed: the allowed range


@dataclass(frozen=True)
class Seat:
    """A care-council seat: the member who holds it and the cluster it belongs to."""
    member_id: str
    cluster: str


@dataclass(frozen=True)
class MandatePolicy:
    quorum: float = 0.5               # share of the electorate (per cluster in a council) that must vote
    approval_threshold: float = 0.5   # share of votes cast that must be "for"
    voting_period_days: int = 14
    body: str = "assembly"
    seats: tuple[Seat, ...] = ()      # council only
    live_tally: bool = False          # running counts while a vote is open (off: secret ballot)
    max_proxies: int = 0              # proxies one member may carry; 0: no proxies
    trainees_vote: bool = True        # members in training (category gp-in-training) are electors
    reverify_months: int = 12         # a registration is re-confirmed this often
    unverified_leave_electorate: bool = False   # members past due are left out of votes opened meanwhile
    version: int = 1                  # +1 on every change; a vote freezes the version it opened under

    def __post_init__(self):
        object.__setattr__(self, "seats", tuple(s if isinstance(s, Seat) else Seat(**s) for s in self.seats))
        errors = {}
        if not 0 <= self.quorum <= 1:
            errors["quorum"] = ["must be between 0 and 1"]
        if not 0 < self.approval_threshold <= 1:
            errors["approval_threshold"] = ["must be greater than 0 and at most 1"]
        if not 1 <= self.voting_period_days <= 90:
            errors["voting_period_days"] = ["must be between 1 and 90 days"]
        if self.body not in MANDATE_BODIES:
            errors["body"] = [f"one of {', '.join(MANDATE_BODIES)}"]
        elif self.body == "council" and not self.seats:
            errors["seats"] = ["a council needs its seats (member_id and cluster of each)"]
        held = [s.member_id for s in self.seats]
        if len(set(held)) != len(held):
            errors["seats"] = ["a member holds at most one seat"]
        if any(not s.cluster.strip() for s in self.seats):
            errors["seats"] = ["every seat names its cluster"]
        if not 0 <= self.max_proxies <= MAX_PROXIES:
            errors["max_proxies"] = [f"must be between 0 and {MAX_PROXIES}"]
        if not REVERIFY_MONTHS[0] <= self.reverify_months <= REVERIFY_MONTHS[1]:
            errors["reverify_months"] = [f"must be between {REVERIFY_MONTHS[0]} and {REVERIFY_MONTHS[1]} months"]
        if errors:
            raise Invalid("the mandate policy is not valid", errors={"mandate_policy": errors})

    def changed(self, changes: dict) -> "MandatePolicy":
        """The policy with ``changes`` applied: a new version if anything differs."""
        merged = MandatePolicy(**{**self.__dict__, **changes, "version": self.version})
        return merged if merged == self else replace(merged, version=self.version + 1)

    def as_dict(self) -> dict:
        return {"quorum": self.quorum, "approval_threshold": self.approval_threshold,
                "voting_period_days": self.voting_period_days, "body": self.body,
                "seats": [{"member_id": s.member_id, "cluster": s.cluster} for s in self.seats],
                "live_tally": self.live_tally, "max_proxies": self.max_proxies,
                "trainees_vote": self.trainees_vote, "reverify_months": self.reverify_months,
                "unverified_leave_electorate": self.unverified_leave_electorate, "version": self.version}


@dataclass
class Region:
    id: str
    name: str
    country: str
    kind: str
    municipalities: list[str]
    mandate_policy: MandatePolicy = field(default_factory=MandatePolicy)
    # Members' (and integrator contacts') addresses may have a non-ASCII local part
    # (``jürgen@…``): off unless the region opts in (hecht/emails.py).
    unicode_email_local_parts: bool = False

    def __post_init__(self):
        if isinstance(self.mandate_policy, dict):
            self.mandate_policy = MandatePolicy(**self.mandate_policy)
        self.municipalities = _unique(self.municipalities)

    def covers(self, municipality: str) -> bool:
        return municipality.casefold() in {m.casefold() for m in self.municipalities}

    def canonical_municipality(self, municipality: str) -> str | None:
        """The region's own spelling of ``municipality`` (case-insensitive), or None."""
        wanted = " ".join(municipality.split()).casefold()
        return next((m for m in self.municipalities if m.casefold() == wanted), None)

    def event_data(self) -> dict:
        return {"region_id": self.id, "name": self.name, "country": self.country, "kind": self.kind,
                "municipalities": list(self.municipalities), "mandate_policy": self.mandate_policy.as_dict(),
                "unicode_email_local_parts": self.unicode_email_local_parts}

    def removed_municipalities(self, wanted: list[str]) -> list[str]:
        """The region's municipalities (its spelling) that ``wanted`` no longer lists."""
        keep = {m.strip().casefold() for m in wanted}
        return [m for m in self.municipalities if m.casefold() not in keep]


def _unique(items: list[str]) -> list[str]:
    """Municipalities in the order given, without case-insensitive repeats."""
    seen, out = set(), []
    for m in (i.strip() for i in items):
        if m and m.casefold() not in seen:
            seen.add(m.casefold())
            out.append(m)
    return out


# -- commands -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegisterRegion:
    region: Region


@dataclass(frozen=True)
class UpdateRegion:
    region_id: str
    expected_version: int | None
    changes: dict
    confirm_affected: bool = False  # removing municipalities that members' practices lie in


# ============================================================================================
# Members: GPs enrolled in a region
# ============================================================================================

LANGUAGES = ("nl", "fr", "en")
CATEGORIES = ("practice-owner", "employed", "locum", "gp-in-training")
MEMBER_ROLES = ("member", "board", "chair", "secretary", "care-pathway-promoter", "cra")
CAPACITY_STATUSES = ("open", "limited", "closed")
MEMBER_STATUSES = ("pending", "active", "suspended", "left", "rejected", "erased")
SCHEMES = ("BIG", "AGB", "RIZIV")
SCHEMES_BY_COUNTRY = {"NL": ("BIG", "AGB"), "BE": ("RIZIV",)}


# -- professional registration ---------------------------------------------------------------
_SEPARATORS = re.compile(r"[\s.\-/]")

# RIZIV/INAMI competence codes of general medicine, decided from DOMAIN.md and the sources
# named at ``validate_riziv``: 003/004 recognised GP (004 accredited), 005/006 GP in training,
# 001/002 and 007/008 general practitioners under older (acquired-rights) regimes. They all
# practise general medicine, so they count as GPs of the region.
RIZIV_GP_CODES = {
    "001": "general practitioner",
    "002": "general practitioner (accredited)",
    "003": "recognised GP",
    "004": "recognised GP (accredited)",
    "005": "GP in training",
    "006": "GP in training",
    "007": "general practitioner (acquired rights)",
    "008": "general practitioner (acquired rights, accredited)",
}
# Codes of a physician who is not (yet) a GP: 000 and 009 are "holder of the medical diploma"
# (the RIZIV gives 000 to a doctor whose training plan is still being handled or who works
# outside the nomenclature); they are refused with their own message, not as a specialist.
RIZIV_DIPLOMA_ONLY_CODES = {"000", "009"}


@dataclass(frozen=True)
class Registration:
    scheme: str
    number: str

    @property
    def identity_key(self) -> str:
        """What identifies the person: for RIZIV the first eight digits (the competence code
        at the end changes over a career), otherwise the whole number."""
        number = self.number[:8] if self.scheme == "RIZIV" else self.number
        return f"{self.scheme}:{number}"


def _digits(raw: str) -> str:
    """Spaces, dots, dashes and slashes are how people write these numbers; drop them."""
    return _SEPARATORS.sub("", raw or "")


def validate_big(raw: str) -> str:
    """NL BIG number: 11 digits. It has no public check digit; the authoritative check is a
    lookup in the BIG register, out of reach here, so the format is all we verify."""
    number = _digits(raw)
    if not re.fullmatch(r"[0-9]{11}", number):
        raise ValueError("a BIG number has exactly 11 digits")
    return number


def validate_agb(raw: str) -> str:
    """NL AGB code: 8 digits; the first two are the care-provider type, 01 for GPs
    (Vektis COD016: 0100 GP practice, 0101 GP)."""
    number = _digits(raw)
    if not re.fullmatch(r"[0-9]{8}", number):
        raise ValueError("an AGB code has exactly 8 digits")
    if not number.startswith("01"):
        raise ValueError(f"AGB codes of GPs start with 01 (care-provider type); this one is type {number[:2]}")
    return number


def riziv_check_digits_valid(n6: str, cc: str) -> bool:
    """The RIZIV/INAMI check on the first six digits ``N6``, old or new style.

    Source (official): RIZIV, "Softwareleveranciers — Voor uw ontwikkelingen rond
    RIZIV-nummers" (https://www.inami.fgov.be/nl/professionals/andere-professionals/
    softwareleveranciers): to raise the number of available numbers the RIZIV created new
    numbers "op basis van een andere check digit (modulo 89)"; RIZIV note I 2012/26
    (31/10/2012), applied to physicians from 1 April 2019 (summarised by Infohos,
    https://www.infohos.be/nl/blog/12189). Old numbers: ``CC = 97 − (N6 mod 97)``; new
    numbers: ``CC = 89 − (N6 mod 89)``. Since 2019 the six digits alone no longer identify a
    provider; the first eight (N6 + CC) do.

    Zero remainder (not stated by the sources; our decision): the formula is applied
    literally, so ``N6 mod 97 == 0`` gives ``CC = 97`` and ``N6 mod 89 == 0`` gives
    ``CC = 89``, never ``00``. That is how the other Belgian mod-97 numbers behave (national
    register and enterprise numbers use 97 for a zero remainder), and it keeps every
    check digit in 01–97, so ``00`` is always refused.
    """
    n = int(n6)
    return int(cc) in (97 - n % 97, 89 - n % 89)


def validate_riziv(raw: str) -> str:
    """BE RIZIV/INAMI number ``P NNNNN CC QQQ`` of a GP (see ``riziv_check_digits_valid``)."""
    number = _digits(raw)
    if not re.fullmatch(r"[0-9]{11}", number):
        raise ValueError("a RIZIV/INAMI number has exactly 11 digits (P NNNNN CC QQQ)")
    if not riziv_check_digits_valid(number[:6], number[6:8]):
        raise ValueError("the check digits (7th and 8th) do not match the first six digits; "
                         "please check the number for a typing error")
    if number[0] != "1":
        raise ValueError(f"this RIZIV/INAMI number is not a physician's (profession digit {number[0]}, "
                         "physicians have 1)")
    code = number[8:]
    if code in RIZIV_DIPLOMA_ONLY_CODES:
        raise ValueError(f"competence code {code} means 'holder of the medical diploma', not a GP; "
                         "sign up with your number ending in a general-medicine code (001–008)")
    if code not in RIZIV_GP_CODES:
        raise ValueError(f"competence code {code} is a specialist's; only general-medicine codes "
                         "(001–008) can enrol as a GP")
    return number


_VALIDATORS = {"BIG": validate_big, "AGB": validate_agb, "RIZIV": validate_riziv}


def validate_registration(scheme: str, number: str, country: str) -> Registration:
    """A normalised registration, or Invalid with a field error under ``registration``."""
    if scheme not in SCHEMES:
        raise Invalid("the registration is not valid",
                      errors={"registration": {"scheme": [f"one of {', '.join(SCHEMES)}"]}})
    if scheme not in SCHEMES_BY_COUNTRY.get(country, ()):
        allowed = " or ".join(SCHEMES_BY_COUNTRY.get(country, ()))
        raise Invalid("the registration is not valid", errors={"registration": {"scheme": [
            f"{scheme} numbers are not used in {country} regions; use {allowed}"]}})
    try:
        return Registration(scheme, _VALIDATORS[scheme](number))
    except ValueError as e:
        raise Invalid("the registration is not valid",
                      errors={"registration": {"number": [str(e)]}}) from None


# -- postcode, email, names -----------------------------------------------------------------
_NL_POSTCODE = re.compile(r"([1-9][0-9]{3})\s?([A-Za-z]{2})")


def validate_postcode(raw: str, country: str) -> str:
    """NL ``1234 AB`` (no leading 0; PostNL never issues the letter pairs SA, SD, SS);
    BE four digits 1000–9999. Returns the normalised form."""
    value = (raw or "").strip()
    if country == "NL":
        m = _NL_POSTCODE.fullmatch(value)
        if not m:
            raise ValueError("a Dutch postcode looks like 1234 AB")
        letters = m.group(2).upper()
        if letters in ("SA", "SD", "SS"):
            raise ValueError(f"Dutch postcodes do not use the letters {letters}")
        return f"{m.group(1)} {letters}"
    if country == "BE":
        if not re.fullmatch(r"[1-9][0-9]{3}", value):
            raise ValueError("a Belgian postcode has four digits, 1000–9999")
        return value
    raise ValueError(f"no postcode rule for country {country}")


def normalise_email(raw: str, *, unicode_local: bool = False) -> str:
    """Syntax-checked and in the normal form of hecht/emails.py (the domain's lower-case
    A-labels, the local part as given: ASCII unless ``unicode_local``); no DNS lookups.
    Raises ValueError (``emails.AddressError``)."""
    return emails.validate(raw, unicode_local=unicode_local)


def email_key(email: str) -> str:
    """The uniqueness and matching key (hecht/emails.py): addresses differing only in the case
    of ASCII letters reach the same person; nothing else is folded (``ß`` is not ``ss``)."""
    return emails.key(email)


def clean_name(raw: str) -> str:
    value = unicodedata.normalize("NFC", " ".join((raw or "").split()))
    if not value:
        raise ValueError("must not be empty")
    return value


# -- capacity ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capacity:
    status: str
    since: date
    note: str | None = None

    def __post_init__(self):
        if self.status not in CAPACITY_STATUSES:
            raise Invalid("the capacity is not valid",
                          errors={"status": [f"one of {', '.join(CAPACITY_STATUSES)}"]})

    def to_dict(self) -> dict:
        return {"status": self.status, "since": self.since.isoformat(), "note": self.note}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Capacity | None":
        if not d:
            return None
        since = d["since"] if isinstance(d["since"], date) else date.fromisoformat(d["since"])
        return cls(d["status"], since, d.get("note"))


# -- the state machine ----------------------------------------------------------------------
# Periodic re-verification concerns the members whose registration counts, active and
# suspended; a sign-up is verified by its approval. Kept apart from the lifecycle table below:
# it changes no status.
REVERIFY_STATUSES = ("active", "suspended")

# action → the statuses it is allowed from. One table: the tests walk every cell of it.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "approve": ("pending",),
    "reject": ("pending",),
    "suspend": ("active",),
    "reinstate": ("suspended",),
    # A suspended GP may still end the membership; a pending one withdraws by erasure.
    "leave": ("active", "suspended"),
    "erase": ("pending", "active", "suspended", "left", "rejected"),
    # Roles belong to the body's members; a suspension pauses them, it does not take them.
    "set_roles": ("active", "suspended"),
    "set_capacity": ("pending", "active", "suspended"),
    "update_profile": ("pending", "active", "suspended"),
    # Proving the address (a used sign-in link) is a fact about the person, whatever the status.
    "verify_email": ("pending", "active", "suspended", "left", "rejected"),
}
# The status an action leads to (actions not listed keep the status).
RESULT_STATUS = {"approve": "active", "reject": "rejected", "suspend": "suspended",
                 "reinstate": "active", "leave": "left", "erase": "erased"}
EVENT_TYPE = {"approve": "member.enrolled", "reject": "member.rejected", "suspend": "member.suspended",
              "reinstate": "member.reinstated", "leave": "member.left", "erase": "member.erased",
              "set_roles": "member.roles_changed", "set_capacity": "member.capacity_changed",
              "update_profile": "member.profile_updated", "verify_email": "member.email_verified",
              "reconfirm": "member.reverified", "reverification_due": "member.reverification_due"}


def check_reverifiable(status: str, action: str) -> None:
    """Re-verification applies to active and suspended members (InvalidTransition, 409, otherwise)."""
    if status not in REVERIFY_STATUSES:
        raise InvalidTransition("member", status, action.replace("_", " "))


def next_status(current: str, action: str) -> str:
    """The status after ``action``, or InvalidTransition (409) naming the current one."""
    if current not in ALLOWED_FROM[action]:
        raise InvalidTransition("member", current, action.replace("_", " "))
    return RESULT_STATUS.get(action, current)


def normalise_roles(roles: list[str]) -> list[str]:
    """Roles in canonical order, without repeats; ``member`` is implied by enrolment."""
    unknown = sorted(set(roles) - set(MEMBER_ROLES))
    if unknown:
        raise Invalid("the roles are not valid", errors={"roles": [f"unknown role(s): {', '.join(unknown)}"]})
    wanted = set(roles) | {"member"}
    return [r for r in MEMBER_ROLES if r in wanted]


@dataclass
class Member:
    id: str
    region: str
    status: str
    category: str | None
    given_name: str | None
    family_name: str | None
    email: str | None
    language: str | None
    registration: Registration | None
    practice: dict | None            # {"name", "postcode", "municipality"}
    capacity: Capacity | None = None
    roles: list[str] = field(default_factory=list)
    reason: str | None = None
    signed_up_at: datetime | None = None
    updated_at: datetime | None = None
    email_verified_at: datetime | None = None
    # When the registration was last confirmed valid: approval, a registration correction, a
    # re-confirmation. None on documents from before re-verification existed: see ``effective_verified_at``.
    verified_at: datetime | None = None
    # The due moment the worker's sweep last announced (``member.reverification_due``): once per period.
    reverify_notified_for: datetime | None = None

    # -- transitions: each returns the event type to record -----------------------------------
    def _apply(self, action: str, reason: str | None = None) -> str:
        self.status = next_status(self.status, action)
        if action in RESULT_STATUS:  # a status change replaces the reason for the old one
            self.reason = reason
        self.updated_at = _now()
        return EVENT_TYPE[action]

    def approve(self) -> str:
        event = self._apply("approve")
        self.roles = ["member"]
        self.verified_at = self.updated_at   # the region checked the registration to approve it
        return event

    def reject(self, reason: str) -> str:
        return self._apply("reject", reason)

    def suspend(self, reason: str) -> str:
        return self._apply("suspend", reason)

    def reinstate(self) -> str:
        return self._apply("reinstate")

    def leave(self, reason: str | None = None) -> str:
        event = self._apply("leave", reason)
        self.roles = []  # no longer in the body: any seat (e.g. the chair) is free again
        return event

    def set_roles(self, roles: list[str]) -> str:
        event = self._apply("set_roles")
        self.roles = normalise_roles(roles)
        return event

    def set_capacity(self, capacity: Capacity) -> str:
        event = self._apply("set_capacity")
        self.capacity = capacity
        return event

    def update_profile(self, changes: dict, region: Region) -> str:
        merged = profile_fields(changes, region, partial=True)
        registration = None
        if "registration" in changes:
            # A correction (a new RIZIV competence code, a renewed BIG number) passes the sign-up's
            # checks; the region's uniqueness of registrations is enforced when it is stored.
            reg = changes["registration"] or {}
            registration = validate_registration(reg.get("scheme", ""), reg.get("number", ""), region.country)
        event = self._apply("update_profile")
        if registration is not None:
            self.registration = registration
            if self.status in REVERIFY_STATUSES:
                self.verified_at = self.updated_at   # a corrected registration is a confirmed one
        if "email" in merged and email_key(merged["email"]) != email_key(self.email or ""):
            self.email_verified_at = None  # a new address is not proven by the old one's sign-in
        for key in ("given_name", "family_name", "email", "language", "category"):
            if key in merged:
                setattr(self, key, merged[key])
        if "practice" in merged:
            self.practice = {**(self.practice or {}), **merged["practice"]}
        return event

    def reconfirm(self, changes: dict, region: Region) -> str:
        """The GP (or staff) confirms the registration is still valid, optionally correcting it
        (the correction's checks apply): verified from now on."""
        check_reverifiable(self.status, "reconfirm")
        if "registration" in changes:
            reg = changes["registration"] or {}
            self.registration = validate_registration(reg.get("scheme", ""), reg.get("number", ""),
                                                      region.country)
        self.updated_at = self.verified_at = _now()
        return EVENT_TYPE["reconfirm"]

    @property
    def effective_verified_at(self) -> datetime | None:
        """``verified_at``, or for a member approved before it was recorded (no migration) the
        sign-up time: the approval time is not stored on those documents, and the sign-up, earlier,
        errs towards asking sooner. None for a member never approved (pending, rejected)."""
        if self.verified_at is not None:
            return self.verified_at
        return self.signed_up_at if self.status in ("active", "suspended", "left") else None

    def reverify_due_at(self, months: int) -> datetime | None:
        """When the registration must be re-confirmed (None: not a member it applies to)."""
        if self.status not in REVERIFY_STATUSES:
            return None
        return reverify_due_at(self.effective_verified_at, months)

    def mark_reverification_due(self, due_at: datetime) -> str | None:
        """The sweep found the member past ``due_at``: announce it once per period (None: this
        period was announced already)."""
        check_reverifiable(self.status, "reverification_due")
        if self.reverify_notified_for is not None and _aware(self.reverify_notified_for) == due_at:
            return None
        self.reverify_notified_for, self.updated_at = due_at, _now()
        return EVENT_TYPE["reverification_due"]

    def erase(self) -> str:
        """GDPR erasure: keep a tombstone (id, region, status) and nothing personal."""
        event = self._apply("erase")
        self.category = self.given_name = self.family_name = self.email = self.language = None
        self.registration = self.practice = self.capacity = None
        self.roles = []
        self.signed_up_at = self.email_verified_at = self.verified_at = self.reverify_notified_for = None
        return event

    def verify_email(self, at: datetime | None = None) -> str | None:
        """The person used a sign-in link sent to this address: it is theirs. The first proof
        counts; later sign-ins change nothing (None: no event to record)."""
        next_status(self.status, "verify_email")
        if self.email_verified_at is not None:
            return None
        self.email_verified_at = at or _now()
        self.updated_at = self.email_verified_at
        return EVENT_TYPE["verify_email"]

    def is_stale(self, now: datetime, confirm_days: int) -> bool:
        return is_stale_sign_up(self.status, self.email_verified_at, self.signed_up_at, now, confirm_days)

    @property
    def holds_chair(self) -> bool:
        return "chair" in self.roles and self.status in ("active", "suspended")

    @property
    def municipality(self) -> str | None:
        return (self.practice or {}).get("municipality")

    def event_data(self) -> dict:
        """The member's state after the change, as ``hecht.members`` carries it (integrators may
        read that topic): ids, status, category, roles, municipality and capacity status only.
        Nothing personal and no free text (names, address, language, reasons, capacity notes):
        what notify needs of those travels on the internal contacts topic (``contact_data``)."""
        return {"member_id": self.id, "region_id": self.region, "status": self.status,
                "category": self.category, "roles": list(self.roles), "municipality": self.municipality,
                "capacity": {"status": self.capacity.status, "since": self.capacity.since.isoformat()}
                if self.capacity else None,
                # when the registration was last confirmed: agreements leaves members past due out
                # of a vote where the region says so. A moment, nothing personal.
                "verified_at": _iso(self.effective_verified_at)}

    def contact_data(self) -> dict | None:
        """The record of ``hecht.members.contacts`` (key = member id; only notify reads it): how
        to reach the member, and the rejection reason their e-mail quotes. None once erased
        (the relay then publishes a tombstone)."""
        if self.status == "erased":
            return None
        data = {"member_id": self.id, "region_id": self.region, "email": self.email, "language": self.language}
        if self.status == "rejected" and self.reason:
            data["reason"] = self.reason
        return data

    def verified_event_data(self) -> dict:
        """``member.email_verified``: the state, plus when the address was proven."""
        at = self.email_verified_at
        return {**self.event_data(), "email_verified_at": at.isoformat().replace("+00:00", "Z") if at else None}


def _aware(moment: datetime) -> datetime:
    """Mongo returns naive UTC datetimes; compare them as aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return _aware(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


# -- periodic re-verification ------------------------------------------------------
def add_months(day: date, months: int) -> date:
    """``day`` plus calendar months; a day the target month lacks becomes its last day
    (31 January + 1 month = 28 or 29 February)."""
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    month += 1
    return date(year, month, min(day.day, _month_days(year, month)))


def _month_days(year: int, month: int) -> int:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


def reverify_due_at(verified_at: datetime | None, months: int) -> datetime | None:
    """The start (00:00 UTC) of the day ``months`` calendar months after the verification day:
    verified on 3 December 2025, due from 3 December 2026 (12 months). Whole UTC days keep the
    rule monotonic (a later verification is never due earlier), so a list can query it."""
    if verified_at is None:
        return None
    day = add_months(_aware(verified_at).date(), months)
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def is_reverify_due(verified_at: datetime | None, months: int, now: datetime) -> bool:
    due = reverify_due_at(verified_at, months)
    return due is not None and due <= _aware(now)


def reverify_cutoff(now: datetime, months: int) -> datetime:
    """Registrations verified before this moment are due at ``now``: the inverse of
    ``reverify_due_at`` (a query bound). ``now`` on the last day of a month also catches the
    days of the earlier month that it lacks (30 and 31 January are due on 28 February)."""
    today = _aware(now).date()
    back = add_months(today, -months)
    if today.day == _month_days(today.year, today.month):
        back = back.replace(day=_month_days(back.year, back.month))
    nxt = back + timedelta(days=1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=timezone.utc)


def stale_cutoff(now: datetime, confirm_days: int) -> datetime:
    """Sign-ups from before this moment have had their time to confirm the address."""
    return now - timedelta(days=confirm_days)


def is_stale_sign_up(status: str, email_verified_at: datetime | None, signed_up_at: datetime | None,
                     now: datetime, confirm_days: int) -> bool:
    """A pending sign-up whose address nobody proved within ``confirm_days``: probably typed by
    someone else, or abandoned. It is hidden from lists, counted nowhere and purged."""
    if status != "pending" or email_verified_at is not None or signed_up_at is None:
        return False
    if signed_up_at.tzinfo is None:
        signed_up_at = signed_up_at.replace(tzinfo=timezone.utc)
    return signed_up_at < stale_cutoff(now, confirm_days)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def profile_fields(data: dict, region: Region, *, partial: bool = False) -> dict:
    """Validate and normalise the personal and practice fields of a sign-up or an update.

    Every broken rule is reported at once, field by field (422).
    """
    errors: dict = {}
    out: dict = {}
    for key in ("given_name", "family_name"):
        if key in data:
            try:
                out[key] = clean_name(data[key])
            except ValueError as e:
                errors[key] = [str(e)]
    if "email" in data:
        try:
            out["email"] = normalise_email(data["email"], unicode_local=region.unicode_email_local_parts)
        except ValueError as e:
            errors["email"] = [str(e)]
    for key, allowed in (("language", LANGUAGES), ("category", CATEGORIES)):
        if key in data:
            if data[key] not in allowed:
                errors[key] = [f"one of {', '.join(allowed)}"]
            else:
                out[key] = data[key]
    if "practice" in data:
        practice, perrors = {}, {}
        p = data["practice"] or {}
        if "name" in p:
            try:
                practice["name"] = clean_name(p["name"])
            except ValueError as e:
                perrors["name"] = [str(e)]
        if "postcode" in p:
            try:
                practice["postcode"] = validate_postcode(p["postcode"], region.country)
            except ValueError as e:
                perrors["postcode"] = [str(e)]
        if "municipality" in p:
            canonical = region.canonical_municipality(p["municipality"] or "")
            if canonical is None:
                perrors["municipality"] = [f"not one of the municipalities of region {region.id}: "
                                           f"{', '.join(region.municipalities)}"]
            else:
                practice["municipality"] = canonical
        if not partial:
            for key in ("name", "postcode", "municipality"):
                if key not in p:
                    perrors.setdefault(key, ["required"])
        if perrors:
            errors["practice"] = perrors
        else:
            out["practice"] = practice
    if errors:
        raise Invalid("the request has fields that break a rule", errors=errors)
    return out


def sign_up(member_id: str, region: Region, data: dict) -> Member:
    """A new pending member from a sign-up; every field error is reported in one 422."""
    errors: dict = {}
    fields_ = {}
    try:
        fields_ = profile_fields(data, region)
    except Invalid as e:
        errors.update(e.errors or {})
    reg = data.get("registration") or {}
    registration = None
    try:
        registration = validate_registration(reg.get("scheme", ""), reg.get("number", ""), region.country)
    except Invalid as e:
        errors.update(e.errors or {})
    if errors:
        raise Invalid("the sign-up has fields that break a rule", errors=errors)
    now = _now()
    return Member(id=member_id, region=region.id, status="pending",
                  category=data.get("category") or "practice-owner",
                  given_name=fields_["given_name"], family_name=fields_["family_name"],
                  email=fields_["email"], language=fields_["language"], registration=registration,
                  practice=fields_["practice"], capacity=None, roles=[], signed_up_at=now, updated_at=now)


# -- capacity overview (pure arithmetic) ------------------------------------------------------
CAPACITY_BUCKETS = ("open", "limited", "closed", "unknown")


def capacity_overview(municipalities: list[str], counts) -> dict:
    """Per municipality, the active members' practices by capacity, and the share closed.

    ``counts`` yields ``(municipality, capacity status or None, n)`` for ACTIVE members.
    Every municipality of the region gets a row (zero rows show where nobody reports);
    a municipality no longer in the region but still on a member's practice follows them.
    ``closed_share`` = closed / active members in that municipality (``unknown`` counts
    in the denominator: a practice that did not report is not known to be closed), rounded
    to 4 decimals, ``None`` when there are no active members.
    """
    rows: dict[str, dict] = {}

    def row(name: str) -> dict:
        key = name.casefold()
        if key not in rows:
            rows[key] = {"municipality": name, **{b: 0 for b in CAPACITY_BUCKETS}}
        return rows[key]

    for m in municipalities:
        row(m)
    for municipality, status, n in counts:
        bucket = status if status in CAPACITY_STATUSES else "unknown"
        row(municipality or "unknown")[bucket] += int(n)
    totals = {b: 0 for b in CAPACITY_BUCKETS}
    out = []
    for r in rows.values():
        r["active"] = sum(r[b] for b in CAPACITY_BUCKETS)
        r["closed_share"] = _share(r["closed"], r["active"])
        for b in CAPACITY_BUCKETS:
            totals[b] += r[b]
        out.append(r)
    totals["active"] = sum(totals[b] for b in CAPACITY_BUCKETS)
    totals["closed_share"] = _share(totals["closed"], totals["active"])
    return {"municipalities": out, "totals": totals}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# -- member commands --------------------------------------------------------------------------
@dataclass(frozen=True)
class SignUp:
    region_id: str
    data: dict
    # Who asks: "public" (no token: nothing may tell whether the address or the
    # registration is enrolled; notify mails the confirmation), "portal" (it mints its own
    # confirmation link and hides the outcome) or "staff" (a region-admin of the region, who may
    # list the members anyway: the id, and a 409 on a duplicate).
    caller: str = "public"


@dataclass(frozen=True)
class MemberCommand:
    """A change to one existing member; ``expected_version`` comes from If-Match."""
    region_id: str
    member_id: str
    expected_version: int | None = None


@dataclass(frozen=True)
class ApproveMember(MemberCommand):
    pass


@dataclass(frozen=True)
class RejectMember(MemberCommand):
    reason: str = ""


@dataclass(frozen=True)
class SuspendMember(MemberCommand):
    reason: str = ""


@dataclass(frozen=True)
class ReinstateMember(MemberCommand):
    pass


@dataclass(frozen=True)
class LeaveRegion(MemberCommand):
    reason: str | None = None


@dataclass(frozen=True)
class SetRoles(MemberCommand):
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetCapacity(MemberCommand):
    capacity: Capacity | None = None


@dataclass(frozen=True)
class UpdateProfile(MemberCommand):
    changes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EraseMember(MemberCommand):
    """``only_if_stale``: (now, confirm days) — erase only a sign-up still stale on fresh state
    (the purge: a GP who confirms meanwhile is kept)."""
    only_if_stale: tuple[datetime, int] | None = None


@dataclass(frozen=True)
class Reconfirm(MemberCommand):
    """The registration is still valid (optionally corrected: ``changes['registration']``)."""
    changes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SignIn:
    """A sign-in link sent to ``email`` was used: every membership with that address is proven."""
    email: str


def sign_in_email(raw: str) -> str:
    """The address in its normal form (hecht/emails.py), or Invalid (422) naming the field: the
    shape only, as a look-up needs it. A non-ASCII local part passes (a region may allow them);
    it matches only an account that stored it."""
    try:
        return emails.normalise(raw, unicode_local=True)
    except ValueError as e:
        raise Invalid("the email address is not valid", errors={"email": [str(e)]}) from None


# ============================================================================================
# Staff accounts: the people who run a region (region-admin) or the platform (platform-admin)
# ============================================================================================
STAFF_STATUSES = ("invited", "active", "revoked")
# The pseudo-region of staff events: accounts belong to no region, and the CloudEvents envelope
# needs one. A region can never have this id (``RESERVED_REGION_IDS``), so no tenant's
# subscriptions or views ever match a staff event.
STAFF_EVENT_REGION = "platform"
RESERVED_REGION_IDS = (STAFF_EVENT_REGION,)
_DEV_TLD = ".local"


def _now_ms() -> datetime:
    """Now, to the millisecond the database keeps: an answer equals a later read of it."""
    now = _now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def normalise_staff_email(raw: str) -> str:
    """As ``normalise_email``, but also accepting development addresses under ``.local`` (the
    demo's ``admin@demo.hecht.local``), which the e-mail validator refuses as a special-use
    name. Their syntax is checked as if the domain ended in ``.org``."""
    value = emails.normalise(raw)   # staff belong to no region: ASCII local parts only
    local, at, domain = value.rpartition("@")
    if domain.endswith(_DEV_TLD) and len(domain) > len(_DEV_TLD):
        stand_in = normalise_email(f"{local}@{domain[:-len(_DEV_TLD)]}.org")
        return stand_in[:-len(".org")] + _DEV_TLD
    return normalise_email(value)


def staff_roles(platform_admin, admin_of) -> tuple[bool, list[str]]:
    """Validated roles: a flag and the regions administered (order kept, no repeats). An account
    must hold at least one role; one without any is revoked instead (422 here)."""
    if not isinstance(platform_admin, bool):
        raise Invalid("the roles are not valid", errors={"platform_admin": ["must be true or false"]})
    regions: list[str] = []
    for r in admin_of or []:
        if not isinstance(r, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,62}", r):
            raise Invalid("the roles are not valid", errors={"admin_of": [f"{r!r} is not a region id"]})
        if r not in regions:
            regions.append(r)
    if not platform_admin and not regions:
        raise Invalid("an account needs a role",
                      errors={"admin_of": ["name a region, or make the account platform_admin "
                                           "(an account without a role is revoked instead)"]})
    return platform_admin, regions


@dataclass
class Staff:
    id: str
    email: str
    name: str
    language: str
    platform_admin: bool
    admin_of: list[str]
    status: str
    invited_at: datetime | None = None
    activated_at: datetime | None = None
    revoked_at: datetime | None = None

    def _not_revoked(self, action: str) -> None:
        if self.status == "revoked":
            raise InvalidTransition("staff account", self.status, action)

    def activate(self, at: datetime | None = None) -> str | None:
        """The person used a sign-in link: an invitation becomes an account. Once only (None:
        already active, nothing to record); a revoked account stays revoked."""
        self._not_revoked("activate")
        if self.status == "active":
            return None
        self.status, self.activated_at = "active", at or _now_ms()
        return "staff.activated"

    def revoke(self, at: datetime | None = None) -> str:
        self._not_revoked("revoke")
        self.status, self.revoked_at = "revoked", at or _now_ms()
        return "staff.revoked"

    def update(self, changes: dict) -> str:
        """Name, language and roles (PATCH semantics); every broken rule in one 422."""
        self._not_revoked("update")
        errors: dict = {}
        name, language = self.name, self.language
        if "name" in changes:
            try:
                name = clean_name(changes["name"])
            except ValueError as e:
                errors["name"] = [str(e)]
        if "language" in changes:
            if changes["language"] not in LANGUAGES:
                errors["language"] = [f"one of {', '.join(LANGUAGES)}"]
            else:
                language = changes["language"]
        roles = (self.platform_admin, self.admin_of)
        try:
            roles = staff_roles(changes.get("platform_admin", self.platform_admin),
                                changes.get("admin_of", self.admin_of))
        except Invalid as e:
            errors.update(e.errors or {})
        if errors:
            raise Invalid("the request has fields that break a rule", errors=errors)
        self.name, self.language = name, language
        self.platform_admin, self.admin_of = roles
        return "staff.updated"

    def make_exactly(self, wanted: "Staff") -> str | None:
        """``hecht staff add`` on an existing address: active, with ``wanted``'s name, language and
        roles (None: it already was exactly that). A revoked account comes back."""
        before = (self.name, self.language, self.platform_admin, list(self.admin_of), self.status)
        self.name, self.language = wanted.name, wanted.language
        self.platform_admin, self.admin_of = wanted.platform_admin, list(wanted.admin_of)
        if (self.name, self.language, self.platform_admin, self.admin_of, "active") == before:
            return None
        if self.status != "active":
            self.status, self.activated_at, self.revoked_at = "active", _now_ms(), None
            return "staff.activated"
        return "staff.updated"

    def grant_region(self, region_id: str) -> str | None:
        """A region-admin invites this address: the account gains the region (None: it had it).
        A revoked account is invited afresh, with this region only."""
        if self.status == "revoked":
            self.status, self.platform_admin, self.admin_of = "invited", False, [region_id]
            self.invited_at, self.activated_at, self.revoked_at = _now_ms(), None, None
            return "staff.invited"
        if region_id in self.admin_of:
            return None
        self.admin_of = [*self.admin_of, region_id]
        return "staff.updated"

    def drop_region(self, region_id: str) -> str:
        """No longer admin of the region; an account left without any role is revoked."""
        self._not_revoked("remove from a region")
        self.admin_of = [r for r in self.admin_of if r != region_id]
        if not self.admin_of and not self.platform_admin:
            return self.revoke()
        return "staff.updated"

    def event_data(self) -> dict:
        """Roles and status only: never the address or the name (docs/PORTAL.md)."""
        return {"staff_id": self.id, "platform_admin": self.platform_admin, "admin_of": list(self.admin_of),
                "status": self.status}


def invite_staff(staff_id: str, data: dict, *, active: bool = False) -> Staff:
    """A new account from an invitation (``active``: created by the CLI, no sign-in needed)."""
    errors: dict = {}
    email = name = None
    try:
        email = normalise_staff_email(data.get("email", ""))
    except ValueError as e:
        errors["email"] = [str(e)]
    try:
        name = clean_name(data.get("name", ""))
    except ValueError as e:
        errors["name"] = [str(e)]
    language = data.get("language") or "nl"
    if language not in LANGUAGES:
        errors["language"] = [f"one of {', '.join(LANGUAGES)}"]
    roles = (False, [])
    try:
        roles = staff_roles(data.get("platform_admin", False), data.get("admin_of") or [])
    except Invalid as e:
        errors.update(e.errors or {})
    if errors:
        raise Invalid("the request has fields that break a rule", errors=errors)
    now = _now_ms()
    return Staff(id=staff_id, email=email, name=name, language=language, platform_admin=roles[0],
                 admin_of=roles[1], status="active" if active else "invited", invited_at=now,
                 activated_at=now if active else None)


@dataclass(frozen=True)
class InviteStaff:
    data: dict


@dataclass(frozen=True)
class StaffCommand:
    staff_id: str
    expected_version: int | None = None


@dataclass(frozen=True)
class UpdateStaff(StaffCommand):
    changes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RevokeStaff(StaffCommand):
    pass


@dataclass(frozen=True)
class InviteRegionAdmin:
    """A region-admin invites someone to administer their region (an existing account gains it)."""
    region_id: str
    data: dict


@dataclass(frozen=True)
class RemoveRegionAdmin:
    region_id: str
    staff_id: str


@dataclass(frozen=True)
class AddStaffDirectly:
    """``hecht staff add``: an active account with exactly these roles, created or updated."""
    data: dict


# -- capacity over time -------------------------------------------------------------------------
HISTORY_DEFAULT_DAYS = 90
HISTORY_MAX_DAYS = 400


def snapshot_rows(municipalities: list[str], counts) -> list[dict]:
    """One day's counts per municipality (the overview's rows, without derived figures)."""
    rows = capacity_overview(municipalities, counts)["municipalities"]
    return [{"municipality": r["municipality"], **{b: r[b] for b in CAPACITY_BUCKETS}} for r in rows]


def history_range(start: date | None, end: date | None, today: date) -> tuple[date, date]:
    """The days a history request covers: default the last 90 days up to today; at most 400
    days, and ``from`` not after ``to`` (422 otherwise)."""
    end = end or today
    start = start or end - timedelta(days=HISTORY_DEFAULT_DAYS - 1)
    if start > end:
        raise Invalid("the range is empty", errors={"from": ["must not be after 'to'"]})
    if (end - start).days + 1 > HISTORY_MAX_DAYS:
        raise Invalid("the range is too long",
                      errors={"to": [f"at most {HISTORY_MAX_DAYS} days from 'from' (both included)"]})
    return start, end
