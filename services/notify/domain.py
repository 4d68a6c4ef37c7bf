"""Notify domain: pure rules, no I/O.

What an integrator may subscribe to and what it receives (patterns, redaction),
when a failed delivery is tried again (the retry policy), which outbound
addresses are acceptable, and who gets which e-mail for which event. The
adapters (``outbound``, ``signing``, ``mail``) and the repository do the I/O.
"""
from __future__ import annotations

import copy
import ipaddress
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

from hecht import events as ev
from hecht.errors import Invalid

# -- event types ------------------------------------------------------------------------------
# The public event types (DESIGN.md); patterns are checked against them so a typo such as
# "agrement.*" is refused instead of silently matching nothing. A draft's events
# (``agreement.drafted``, ``agreement.revised``: hecht.events.INTERNAL_TYPES) are not among
# them: drafts never leave the agreements service, so a subscription naming one would match
# nothing and is refused the same way, with a message saying why.
EVENT_TYPES = frozenset({
    "region.registered", "region.updated",
    "member.signed_up", "member.enrolled", "member.rejected", "member.suspended", "member.reinstated",
    "member.left", "member.erased", "member.roles_changed", "member.capacity_changed",
    "member.profile_updated", "member.reverified", "member.reverification_due",
    "agreement.mandate_requested", "agreement.vote_cast",
    "agreement.mandated", "agreement.mandate_rejected", "agreement.signed", "agreement.activated",
    "agreement.review_due", "agreement.expired", "agreement.terminated", "agreement.superseded",
    "agreement.proxy_recorded", "agreement.proxy_revoked",
    "notification.sent", "notification.failed", "subscription.disabled",
})
PING_TYPE = "subscription.ping"   # a test event: sent to one subscription on request, never on Kafka
_PATTERN = re.compile(r"^(\*|[a-z_]+\.\*|[a-z_]+\.[a-z_]+)$")
MAX_PATTERNS = 50


def normalize_patterns(patterns: list[str], known: set[str] | frozenset[str] = EVENT_TYPES) -> list[str]:
    """Validated, de-duplicated event-type patterns: ``*``, ``agreement.*`` or an exact short type.

    A full type (``hecht.member.enrolled.v1``) is accepted and reduced to its short form.
    """
    out: list[str] = []
    errors: dict[str, list[str]] = {}
    kinds = {t.split(".", 1)[0] for t in known}
    if not patterns:
        raise Invalid("name at least one event type", errors={"event_types": ["must not be empty"]})
    if len(patterns) > MAX_PATTERNS:
        raise Invalid("too many event types", errors={"event_types": [f"at most {MAX_PATTERNS}"]})
    for i, raw in enumerate(patterns):
        p = raw.strip()
        if p.startswith("hecht.") and re.search(r"\.v[0-9]+$", p):
            p = p[len("hecht."):].rsplit(".v", 1)[0]
        if not _PATTERN.match(p):
            errors[str(i)] = [f"{raw!r} is not a pattern: use '*', 'agreement.*' or 'member.capacity_changed'"]
        elif p != "*" and p.endswith(".*") and p[:-2] not in kinds:
            errors[str(i)] = [f"no event types start with {p[:-2]!r}; known: {', '.join(sorted(kinds))}"]
        elif p != "*" and not p.endswith(".*") and p not in known and p in ev.INTERNAL_TYPES:
            errors[str(i)] = [f"{p!r} is not delivered: a draft never leaves the agreements service; "
                              "an agreement's first event is agreement.mandate_requested, with its full content"]
        elif p != "*" and not p.endswith(".*") and p not in known:
            errors[str(i)] = [f"unknown event type {p!r}"]
        elif p not in out:
            out.append(p)
    if errors:
        raise Invalid("some event types are not valid", errors={"event_types": errors})
    return out


def matches(patterns: list[str], short_type: str) -> bool:
    """Does an event of ``short_type`` (e.g. ``agreement.activated``) match any pattern?"""
    for p in patterns:
        if p == "*" or p == short_type or (p.endswith(".*") and short_type.startswith(p[:-1])):
            return True
    return False


# -- redaction --------------------------------------------------------------------------------
_CONTACT_KEY = re.compile(r"(e[-_]?mail|phone|mobile|fax)", re.IGNORECASE)
_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
REDACTED = "[redacted]"


# Free text written by staff or a mail server, per event type (``kind.*`` for a whole kind): never
# in a webhook payload nor in notify's copy of the event. Dotted names reach into an object.
# Member events carry none any more; the entries stay for events written before.
STAFF_TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "member.*": ("reason", "capacity.note"),
    "agreement.terminated": ("reason",),
    "notification.failed": ("error",),
}


def staff_text_fields(short_type: str) -> tuple[str, ...]:
    kind = short_type.split(".", 1)[0]
    return STAFF_TEXT_FIELDS.get(short_type, ()) + STAFF_TEXT_FIELDS.get(f"{kind}.*", ())


def redact(event: dict) -> dict:
    """The event as integrators may see it: no ``data.personal``, no contact data anywhere, and
    none of the type's free-text fields (``STAFF_TEXT_FIELDS``).

    Applied to every event, not only member events, so a future field that carries an
    address cannot leak by accident; e-mail addresses inside any other text are masked too.
    """
    out = copy.deepcopy(event)
    data = out.get("data")
    if isinstance(data, dict):
        data.pop("personal", None)
        short = str(out.get("type") or "")
        short = short[len("hecht."):].rsplit(".v", 1)[0] if short.startswith("hecht.") else short
        for path in staff_text_fields(short):
            *parents, leaf = path.split(".")
            holder = data
            for p in parents:
                holder = holder.get(p) if isinstance(holder, dict) else None
            if isinstance(holder, dict):
                holder.pop(leaf, None)
        out["data"] = _scrub(data)
    return out


def mask_addresses(text: str) -> str:
    """``text`` with every e-mail address in it replaced by ``[redacted]``."""
    return _EMAIL_IN_TEXT.sub(REDACTED, text) if "@" in text else text


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if not _CONTACT_KEY.search(k)}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str) and "@" in value:
        return _EMAIL_IN_TEXT.sub(REDACTED, value)
    return value


# -- retry policy -----------------------------------------------------------------------------
RETRY_AFTER_STATUSES = (429, 503)
MAX_RETRY_AFTER_S = 24 * 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """First attempt at once, then one retry after each delay of the schedule.

    The schedule is exponential in spirit (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h by
    default); each delay gets ±``jitter`` so endpoints that failed together do not all come
    back at the same instant. ``Retry-After`` on 429/503 can only lengthen a delay (capped).
    """
    schedule: tuple[float, ...]
    jitter: float = 0.2

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.schedule)

    def delay_after(self, attempt: int, retry_after_s: float | None = None,
                    rng: random.Random | None = None) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); None: give up."""
        if attempt >= self.max_attempts:
            return None
        base = self.schedule[attempt - 1]
        delay = base * (1 + (rng or random).uniform(-self.jitter, self.jitter))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        return max(0.0, delay)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or garbage."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


SUCCESS, RETRY, GONE = "success", "retry", "gone"


def classify(status: int | None) -> str:
    """2xx succeeds; 410 Gone means the endpoint asked to be removed; anything else (3xx too,
    timeouts and connection errors, ``status`` None) is retried."""
    if status is not None and 200 <= status < 300:
        return SUCCESS
    if status == 410:
        return GONE
    return RETRY


# -- outbound URLs ----------------------------------------------------------------------------
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")      # RFC 6052: last 32 bits are IPv4
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")      # RFC 8215: a site's own translator
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")               # RFC 4291, deprecated
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")     # RFC 2765 (SIIT)


def address_is_public(ip: str) -> bool:
    """Only globally routable unicast addresses: no private, loopback, link-local (cloud metadata
    at 169.254.169.254), CGNAT (100.64/10, e.g. 100.100.100.200), multicast or reserved ranges.

    An IPv6 address that carries an IPv4 one is judged by what it reaches. Python's ``is_global``
    calls ``64:ff9b::a9fe:a9fe`` global, yet a NAT64 gateway turns it into 169.254.169.254, so:
    IPv4-mapped and well-known-prefix NAT64 addresses are unwrapped and their IPv4 judged; the
    local-use NAT64 prefix, IPv4-compatible and -translated forms (no public use), 6to4 and
    Teredo (tunnels to an IPv4 endpoint) are refused outright.
    """
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        elif addr in NAT64_WELL_KNOWN:
            addr = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        elif (addr in NAT64_LOCAL_USE or addr in IPV4_COMPATIBLE or addr in IPV4_TRANSLATED
              or addr.sixtofour is not None or addr.teredo is not None):
            return False
    return addr.is_global and not addr.is_multicast


def check_url_shape(url: str, allow_private: bool) -> str:
    """Reject what no DNS answer can make acceptable: wrong scheme, credentials, literal
    non-public addresses, ``localhost``. The resolved address is checked again at connect time."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Invalid("the URL is not valid", errors={"url": ["not a URL"]}) from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Invalid("the URL is not valid", errors={"url": ["use an https:// URL with a host name"]})
    if parts.username or parts.password:
        raise Invalid("the URL is not valid", errors={"url": ["credentials in the URL are not allowed; "
                                                              "verify the signature instead"]})
    if port == 0:
        raise Invalid("the URL is not valid", errors={"url": ["port 0 is not a port"]})
    if allow_private:
        return url
    if parts.scheme != "https":
        raise Invalid("webhook URLs must use https", errors={"url": ["must start with https://"]})
    host = parts.hostname.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local") \
            or host.endswith(".internal"):
        raise Invalid("private addresses are not allowed", errors={"url": [f"{host} is not a public host"]})
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return url
    if not address_is_public(str(literal)):
        raise Invalid("private addresses are not allowed", errors={"url": [f"{host} is not a public address"]})
    return url


# -- e-mail -----------------------------------------------------------------------------------
LANGUAGES = ("nl", "fr", "en")
DEFAULT_LANGUAGE = "en"
BOARD_ROLES = ("chair", "secretary", "board")
REMINDER_BEFORE = timedelta(hours=48)

# Who hears about what. ``recipients`` names a rule the handler resolves against the
# address book: the member the event is about, the frozen electorate, every active member
# of the region, or its active board (chair, secretary, board: the people who act on a
# review; DESIGN.md says "region admins", who are platform users without member records,
# so the board stands in for them).
EMAIL_RULES: dict[str, tuple[str, str]] = {
    "member.enrolled": ("enrolment_approved", "subject_member"),
    "member.rejected": ("enrolment_rejected", "subject_member"),
    "agreement.mandate_requested": ("vote_opened", "electorate"),
    "agreement.mandated": ("mandate_passed", "active_members"),
    "agreement.mandate_rejected": ("mandate_rejected", "active_members"),
    "agreement.activated": ("agreement_activated", "active_members"),
    "agreement.review_due": ("review_due", "board"),
    "member.reverification_due": ("reverification_due", "subject_member"),
}
VOTE_CLOSING = "vote_closing"
INTEGRATOR_INVITED = "integrator_invited"   # to an integrator application's contact address, not a member
# Notices members asks for on a member's contact record (contacts.py): the kind → the
# template. The public sign-up's answer never tells whether the address was enrolled; these
# e-mails tell the person instead. No notification.* event is published for them (PRIVATE_TEMPLATES).
NOTICE_TEMPLATES = {"sign_up_confirm": "sign_up_confirm", "sign_up_attempt": "sign_up_attempted"}
PRIVATE_TEMPLATES = tuple(NOTICE_TEMPLATES.values())
TEMPLATES = tuple(t for t, _ in EMAIL_RULES.values()) + (VOTE_CLOSING, INTEGRATOR_INVITED) + PRIVATE_TEMPLATES

# The portal page each e-mail is about (docs/PORTAL.md, "Page URLs"): {r} region, {a} agreement.
LINKS = {
    "enrolment_approved": "/r/{r}/membership",
    "enrolment_rejected": "/r/{r}/membership",
    "vote_opened": "/r/{r}/votes/{a}",
    VOTE_CLOSING: "/r/{r}/votes/{a}",
    "mandate_passed": "/r/{r}/agreements/{a}",
    "mandate_rejected": "/r/{r}/agreements/{a}",
    "agreement_activated": "/r/{r}/agreements/{a}",
    "review_due": "/r/{r}/agreements/{a}",
    "reverification_due": "/r/{r}/membership",
    "integrator_invited": "/integrations/{r}",
    "sign_up_confirm": "/r/{r}/membership",     # through sign-in: using the link proves the address
    "sign_up_attempted": "/r/{r}/membership",
}


def portal_link(portal_url: str, template: str, region: str | None, agreement: str | None = None) -> str | None:
    """The absolute URL of the page an e-mail is about; None when the page cannot be named
    (no portal URL, an unknown template, or an id the page needs is missing). A page that needs
    a session sends the reader through sign-in and back, so the link works signed out too."""
    pattern = LINKS.get(template)
    if not portal_url or pattern is None or not region or ("{a}" in pattern and not agreement):
        return None
    path = pattern.format(r=quote(region, safe=""), a=quote(agreement or "", safe=""))
    return portal_url.rstrip("/") + path


def notification_key(cause_event_id: str, member_id: str, template: str) -> str:
    """One event never yields two e-mails to the same person: this key is unique."""
    return f"{cause_event_id}:{member_id}:{template}"


def language_of(language: str | None) -> str:
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def reminder_due_at(opened_at: datetime | None, deadline: datetime | None) -> datetime | None:
    """When to remind the electorate that the vote closes within 48 h.

    None when there is no deadline, or when the vote was opened less than 48 h before it
    (the opening e-mail already says when it closes: a second one at once would be noise).
    """
    if deadline is None:
        return None
    due = deadline - REMINDER_BEFORE
    if opened_at is not None and opened_at >= due:
        return None
    return due


def parse_datetime(value) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# -- commands ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CreateSubscription:
    region: str
    url: str
    event_types: list[str]
    description: str = ""
    enabled: bool = True
    created_by: str | None = None
    idempotency_key: str | None = None   # already scoped to the caller and hashed
    fingerprint: str | None = None       # of the request body, to refuse a key reused for another body
    rate_limit: float | None = None      # deliveries per second; None: unlimited
    signature: str = "v1"                # v1 (HMAC) or v1a (ed25519)
    allowed_event_types: list[str] | None = None  # the owner application's limits, when it is one


@dataclass(frozen=True)
class UpdateSubscription:
    region: str
    subscription_id: str
    expected_version: int | None
    changes: dict = field(default_factory=dict)
    allowed_event_types: list[str] | None = None  # the owner application's limits, when it is one


@dataclass(frozen=True)
class DeleteSubscription:
    region: str
    subscription_id: str


@dataclass(frozen=True)
class RotateSecret:
    region: str
    subscription_id: str
    grace_period_s: int = 24 * 3600


@dataclass(frozen=True)
class PingSubscription:
    region: str
    subscription_id: str


@dataclass(frozen=True)
class RetryDelivery:
    region: str
    subscription_id: str
    delivery_id: str


@dataclass(frozen=True)
class ReplayDeliveries:
    region: str
    subscription_id: str
    since: datetime
    until: datetime | None = None


@dataclass(frozen=True)
class DisableSubscription:
    """Issued by the delivery engine, not by a person: the endpoint kept failing or is gone."""
    subscription_id: str
    reason: str
    failed_deliveries: int
