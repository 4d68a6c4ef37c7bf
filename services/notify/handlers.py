"""Commands and consumed events → domain → repository. The routing tables at the bottom are
the map of behaviour: ``COMMAND_HANDLERS`` for the API and the delivery engine,
``EVENT_HANDLERS`` for what each consumed event type does besides being copied and fanned
out to the matching webhook subscriptions."""
from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta, timezone

from pymongo.database import Database

from hecht import events as ev
from hecht.config import Settings
from hecht.errors import Conflict, Invalid, PreconditionFailed
from hecht.outbox import EventDraft
from hecht.web import new_id

from . import domain, signing
from .outbound import BlockedDestination, resolve_public
from .repository import (QUEUED, AddressBook, DeliveryRepository, ElectorateBook, EventCopies,
                         NotificationRepository, RegionBook, ReminderRepository, SubscriptionRepository, now)

log = logging.getLogger(__name__)

MAX_ROTATION_GRACE_S = 7 * 24 * 3600
CLOSED_CIRCUIT = {"state": "closed", "consecutive_failures": 0, "opened_at": None, "retry_at": None}
MAX_REPLAY = 10_000


class Repos:
    """The repositories one command or event may use (a unit of work without transactions)."""

    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings
        self.subscriptions = SubscriptionRepository(db)
        self.deliveries = DeliveryRepository(db)
        self.copies = EventCopies(db)
        self.address_book = AddressBook(db)
        self.regions = RegionBook(db)
        self.notifications = NotificationRepository(db)
        self.reminders = ReminderRepository(db)
        self.electorates = ElectorateBook(db)
        self._box: signing.SecretBox | None = None

    @property
    def box(self) -> signing.SecretBox:
        if self._box is None:
            self._box = signing.SecretBox(self.settings)
        return self._box


# =============================================================================================
# Subscriptions (commands)
# =============================================================================================
def _check_url(url: str, settings: Settings) -> str:
    """The shape rules, and the resolved address when the name resolves now (it is checked
    again, authoritatively, at every connection)."""
    domain.check_url_shape(url, settings.webhooks_allow_private)
    if not settings.webhooks_allow_private:
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        try:
            resolve_public(parts.hostname, parts.port or 443)
        except BlockedDestination as e:
            raise Invalid("private addresses are not allowed", errors={"url": [str(e)]}) from None
        except (OSError, socket.gaierror):
            pass  # not resolvable now: the endpoint may not exist yet; checked when delivering
    return url


def create_subscription(cmd: domain.CreateSubscription, repos: Repos, trace: str | None):
    """Returns (document, secret, replayed).

    A retried create with the same Idempotency-Key returns the same subscription and secret.
    The generic ``hecht.web.idempotent`` would keep the response (with the plaintext secret)
    in the idempotency collection; here the key lives on the subscription and the secret
    stays encrypted.
    """
    if cmd.idempotency_key:
        prior = _prior_create(cmd, repos)
        if prior is not None:
            return prior
    url = _check_url(cmd.url, repos.settings)
    patterns = domain.normalize_patterns(cmd.event_types)
    if cmd.allowed_event_types is not None:
        from .integrators import check_within
        check_within(cmd.allowed_event_types, patterns)
    at = now()
    secret, key_entry = _new_signing_key(cmd.signature, repos, at)
    sub_id = new_id("sub")
    doc = {"_id": sub_id, "region": cmd.region, "url": url, "event_types": patterns,
           "description": cmd.description, "enabled": cmd.enabled, "disabled_reason": None, "disabled_at": None,
           "secrets": [key_entry], "signature": cmd.signature, "rate_limit": cmd.rate_limit,
           "consecutive_failures": 0, "circuit": dict(CLOSED_CIRCUIT), "created_at": at, "updated_at": at,
           "created_by": cmd.created_by, "owner": cmd.created_by,
           "idem_key": cmd.idempotency_key or sub_id, "idem_fingerprint": cmd.fingerprint}
    try:
        return repos.subscriptions.add(doc), secret, False
    except Conflict:
        prior = _prior_create(cmd, repos) if cmd.idempotency_key else None
        if prior is None:
            raise
        return prior


def _new_signing_key(scheme: str, repos: Repos, at: datetime) -> tuple[str | None, dict]:
    """(the secret to show once, or None for v1a; the stored entry). A v1a entry keeps the
    encrypted private key and the public key, which the subscription shows any time."""
    if scheme == signing.V1A:
        private, public = signing.new_keypair()
        return None, {"enc": repos.box.encrypt(private), "public_key": public, "created_at": at, "expires_at": None}
    secret = signing.new_secret()
    return secret, {"enc": repos.box.encrypt(secret), "created_at": at, "expires_at": None}


def _prior_create(cmd: domain.CreateSubscription, repos: Repos):
    doc = repos.db.subscriptions.find_one({"idem_key": cmd.idempotency_key, "region": cmd.region})
    if doc is None:
        return None
    if doc.get("idem_fingerprint") != cmd.fingerprint:
        raise Invalid("this Idempotency-Key was used with a different request body",
                      errors={"Idempotency-Key": ["reused with a different body"]})
    if doc.get("deleted"):
        raise Conflict("the subscription created with this Idempotency-Key was deleted since")
    current = signing.active_secrets(doc.get("secrets", []))
    if doc.get("signature") == signing.V1A:
        return doc, None, True
    return doc, repos.box.decrypt(current[0]["enc"]), True


def _current(repos: Repos, region: str, subscription_id: str, expected_version: int | None = None) -> dict:
    doc = repos.subscriptions.get_doc(region, subscription_id)
    if expected_version is not None and expected_version != doc["version"]:
        raise PreconditionFailed(f"subscription {subscription_id} has changed (current ETag \"{doc['version']}\")")
    return doc


def update_subscription(cmd: domain.UpdateSubscription, repos: Repos, trace: str | None) -> dict:
    doc = _current(repos, cmd.region, cmd.subscription_id, cmd.expected_version)
    changes = {k: v for k, v in cmd.changes.items()
               if k in ("url", "event_types", "description", "enabled", "rate_limit")}
    if "url" in changes:
        changes["url"] = _check_url(changes["url"], repos.settings)
    if "event_types" in changes:
        changes["event_types"] = domain.normalize_patterns(changes["event_types"])
        if cmd.allowed_event_types is not None:
            from .integrators import check_within
            check_within(cmd.allowed_event_types, changes["event_types"])
    if changes.get("enabled") is True and not doc.get("enabled"):
        # Re-enabled by a person: a fresh start (failures, circuit), and the waiting deliveries resume.
        changes.update(consecutive_failures=0, disabled_reason=None, disabled_at=None, circuit=dict(CLOSED_CIRCUIT))
    if changes.get("enabled") is False and doc.get("enabled"):
        changes.update(disabled_reason="disabled by a user", disabled_at=now())
    changes["updated_at"] = now()
    return repos.subscriptions.update(doc, changes, trace=trace)


def delete_subscription(cmd: domain.DeleteSubscription, repos: Repos, trace: str | None) -> None:
    """Soft delete: the document stays until its outbox is relayed, without its secrets."""
    doc = _current(repos, cmd.region, cmd.subscription_id)
    repos.subscriptions.update(doc, {"deleted": True, "enabled": False, "secrets": [], "deleted_at": now()},
                               trace=trace)
    repos.deliveries.delete_for(doc["_id"])


def rotate_secret(cmd: domain.RotateSecret, repos: Repos, trace: str | None):
    """A new secret signs from now on; the previous one keeps signing for the grace period,
    so a receiver can switch without missing a message (both signatures in the header)."""
    if not 0 <= cmd.grace_period_s <= MAX_ROTATION_GRACE_S:
        raise Invalid("the grace period is out of range",
                      errors={"grace_period_s": [f"between 0 and {MAX_ROTATION_GRACE_S} seconds"]})
    doc = _current(repos, cmd.region, cmd.subscription_id)
    at = now()
    secret, entry = _new_signing_key(doc.get("signature") or signing.V1, repos, at)
    kept = []
    for s in signing.active_secrets(doc.get("secrets", []), at):
        expires = s.get("expires_at") or at + timedelta(seconds=cmd.grace_period_s)
        if expires > at:
            kept.append(dict(s, expires_at=min(expires, at + timedelta(seconds=cmd.grace_period_s))))
    secrets = [entry] + kept[:2]
    updated = repos.subscriptions.update(doc, {"secrets": secrets, "rotated_at": at, "updated_at": at}, trace=trace)
    return updated, secret


def ping_subscription(cmd: domain.PingSubscription, repos: Repos, trace: str | None) -> dict:
    doc = _current(repos, cmd.region, cmd.subscription_id)
    if not doc.get("enabled"):
        raise Conflict("the subscription is disabled; enable it before sending a test event")
    event = ev.build(domain.PING_TYPE, region=doc["region"], subject=doc["_id"], sequence=doc["version"],
                     source=f"/regions/{doc['region']}/subscriptions",
                     data={"subscription_id": doc["_id"], "region_id": doc["region"],
                           "message": "test event from hecht"}, traceparent=trace)
    at = now()
    repos.copies.add(event, domain.PING_TYPE, at, pinned=True)
    delivery = repos.deliveries.new_doc(doc, _meta(event, domain.PING_TYPE, at), at)
    repos.deliveries.add_many([delivery])
    return delivery


def retry_delivery(cmd: domain.RetryDelivery, repos: Repos, trace: str | None) -> dict:
    _current(repos, cmd.region, cmd.subscription_id)
    current = repos.deliveries.get(cmd.subscription_id, cmd.delivery_id)
    reopened = repos.deliveries.reopen({"_id": current["_id"]}, now())
    if reopened is None:
        raise Conflict(f"delivery {cmd.delivery_id} is still {current['status']}; it will be tried again "
                       "on its schedule", current_status=current["status"])
    return reopened


def replay_deliveries(cmd: domain.ReplayDeliveries, repos: Repos, trace: str | None) -> dict:
    """Every event since ``since`` that the subscription matches now, from notify's own copy:
    new deliveries where there were none, a fresh round for the ones that had finished."""
    doc = _current(repos, cmd.region, cmd.subscription_id)
    if cmd.until is not None and cmd.until <= cmd.since:
        raise Invalid("the replay window is empty", errors={"until": ["must be after since"]})
    at = now()
    created = reopened = 0
    new_docs = []
    matched_ids = []
    for copy in repos.copies.since(doc["region"], cmd.since, cmd.until, MAX_REPLAY):
        if copy["type"] == domain.PING_TYPE or copy["type"] in ev.INTERNAL_TYPES \
                or not domain.matches(doc["event_types"], copy["type"]):
            continue  # a draft's event copied before drafts stayed internal is never replayed
        matched_ids.append(copy["_id"])
        new_docs.append(repos.deliveries.new_doc(doc, _meta_from_copy(copy), at))
    if new_docs:
        existing = {d["event_id"] for d in repos.db.deliveries.find(
            {"subscription_id": doc["_id"], "event_id": {"$in": matched_ids}}, {"event_id": 1})}
        new_docs = [d for d in new_docs if d["event_id"] not in existing]
        repos.copies.pin([d["event_id"] for d in new_docs])  # before the deliveries: never an unpinned wait
        created = repos.deliveries.add_many(new_docs)
        for event_id in existing:
            if repos.deliveries.reopen({"subscription_id": doc["_id"], "event_id": event_id}, at):
                reopened += 1
    return {"matched": len(matched_ids), "created": created, "reopened": reopened,
            "truncated": len(matched_ids) >= MAX_REPLAY}


def disable_subscription(cmd: domain.DisableSubscription, repos: Repos, trace: str | None) -> dict | None:
    """Issued by the delivery engine; emits ``subscription.disabled`` with the change."""
    for _ in range(5):
        doc = repos.subscriptions.find(cmd.subscription_id)
        if doc is None or not doc.get("enabled"):
            return None
        data = {"subscription_id": doc["_id"], "region_id": doc["region"], "reason": cmd.reason[:500],
                "failed_deliveries": cmd.failed_deliveries}
        try:
            return repos.subscriptions.update(
                doc, {"enabled": False, "disabled_reason": cmd.reason[:500], "disabled_at": now()},
                [EventDraft("subscription.disabled", data)], trace=trace)
        except PreconditionFailed:
            continue  # changed meanwhile (a PATCH): look again
    return None


COMMAND_HANDLERS = {
    domain.CreateSubscription: create_subscription,
    domain.UpdateSubscription: update_subscription,
    domain.DeleteSubscription: delete_subscription,
    domain.RotateSecret: rotate_secret,
    domain.PingSubscription: ping_subscription,
    domain.RetryDelivery: retry_delivery,
    domain.ReplayDeliveries: replay_deliveries,
    domain.DisableSubscription: disable_subscription,
}


def handle(cmd, db: Database, settings: Settings, trace: str | None = None):
    return COMMAND_HANDLERS[type(cmd)](cmd, Repos(db, settings), trace)


# =============================================================================================
# Consumed events
# =============================================================================================
def _meta(event: dict, short: str, at: datetime) -> dict:
    return {"id": event["id"], "type": short, "subject": event["subject"], "sequence": event["sequence"],
            "time": at}


def _meta_from_copy(copy: dict) -> dict:
    return {"id": copy["_id"], "type": copy["type"], "subject": copy["subject"], "sequence": copy["sequence"],
            "time": copy["time"]}


# Staff accounts (``staff.*`` on hecht.members) are the platform's own business: no region's
# subscriptions see them and nobody is mailed about them, so notify keeps no copy either.
IGNORED_PREFIXES = ("staff.",)


def handle_event(event: dict, db: Database, settings: Settings) -> None:
    """What notify does with every consumed event (idempotent: a redelivery changes nothing).

    1. keep a redacted copy (for replays); 2. create a delivery for every enabled
    subscription of the event's region whose patterns match; 3. the type's own handlers.
    """
    short = ev.short_type(event["type"])
    if short.startswith(IGNORED_PREFIXES):
        return
    if ev.is_internal(event):
        # A draft's event (agreements never publishes one; an older version of it did): no
        # copy, no delivery, no replay. Drafts never reach integrators.
        log.warning("internal event ignored", extra={"event_id": event.get("id"), "type": short})
        return
    repos = Repos(db, settings)
    at = domain.parse_datetime(event.get("time")) or now()
    fan_out(repos, domain.redact(event), short, at)
    for fn in EVENT_HANDLERS.get(short, ()):
        fn(event, repos)


def fan_out(repos: Repos, event: dict, short: str, at: datetime) -> int:
    """Keep the (redacted) copy, then one delivery per matching subscription; the number made.

    The copy is pinned (kept while deliveries of it are pending) from the start when any
    subscription matches. A redelivered event makes only the deliveries it did not make the
    first time (a subscription created since may match)."""
    region = event.get("region")
    docs = []
    if region and short != domain.PING_TYPE:
        created = now()
        docs = [repos.deliveries.new_doc(sub, _meta(event, short, at), created)
                for sub in repos.subscriptions.enabled_in_region(region) if domain.matches(sub["event_types"], short)]
    if not repos.copies.add(event, short, at, pinned=bool(docs)):
        docs = repos.deliveries.missing(docs)
        if docs:
            repos.copies.pin([event["id"]])
        else:
            # e.g. a crash between the copy and its deliveries, and nothing matches now
            repos.copies.release([event["id"]], now())
    return repos.deliveries.add_many(docs)


# -- read models --------------------------------------------------------------------------------
def remember_region(event: dict, repos: Repos) -> None:
    data = event["data"]
    repos.regions.apply(data.get("region_id") or event["subject"], event["sequence"], data.get("name"),
                        data.get("country"), bool(data.get("unicode_email_local_parts")))


def remember_member(event: dict, repos: Repos) -> None:
    """Who is in which region with which status and roles. The address and the language come
    from the contacts topic (services/notify/contacts.py), never from member events."""
    data = event["data"]
    fields = {"region": data.get("region_id") or event.get("region"), "status": data.get("status"),
              "roles": list(data.get("roles") or [])}
    repos.address_book.apply(data.get("member_id") or event["subject"], event["sequence"], fields)


def forget_member(event: dict, repos: Repos) -> None:
    """GDPR: the address book keeps a tombstone, and no notification keeps free text about them."""
    data = event["data"]
    member_id = data.get("member_id") or event["subject"]
    repos.address_book.erase(member_id, data.get("region_id") or event.get("region"), event["sequence"])
    repos.db.notifications.update_many({"member_id": member_id, "context.reason": {"$exists": True}},
                                       {"$unset": {"context.reason": ""}})
    # copies kept before personal data left the events could hold the member's free text (redaction now drops it)
    repos.db.event_copies.update_many({"subject": member_id, "type": {"$regex": "^member\\."}},
                                      {"$unset": {"event.data.reason": "", "event.data.capacity.note": "",
                                                  "event.data.language": ""}})


# -- e-mail ---------------------------------------------------------------------------------------
def _context(event: dict, repos: Repos, template: str) -> dict:
    """What the templates may show: business facts, never personal data; and the portal page
    the message is about (``link``)."""
    data = event["data"]
    region = data.get("region_id") or event.get("region")
    is_agreement = ev.short_type(event.get("type") or "").startswith("agreement.")
    agreement = data.get("agreement_id") or (event.get("subject") if is_agreement else None)
    mandate = data.get("mandate") or {}
    return {
        "region_name": repos.regions.name(region),
        "title": data.get("title"),
        "theme": data.get("theme"),
        "partners": [p.get("name") for p in data.get("partners") or [] if isinstance(p, dict) and p.get("name")],
        "reason": data.get("reason"),
        "effective_from": data.get("effective_from"),
        "effective_until": data.get("effective_until"),
        "review_date": data.get("review_date"),
        "deadline": mandate.get("deadline"),
        "quorum": mandate.get("quorum"),
        "approval_threshold": mandate.get("approval_threshold"),
        "votes_for": mandate.get("for", 0),
        "votes_against": mandate.get("against", 0),
        "votes_abstain": mandate.get("abstain", 0),
        "turnout": mandate.get("turnout"),
        "quorum_met": mandate.get("quorum_met"),
        "threshold_met": mandate.get("threshold_met"),
        "link": domain.portal_link(repos.settings.portal_url, template, region, agreement),
    }


def _recipients(rule: str, event: dict, repos: Repos) -> list[str]:
    data = event["data"]
    region = data.get("region_id") or event.get("region")
    if rule == "subject_member":
        return [data.get("member_id") or event["subject"]]
    if rule == "electorate":
        return [m for m in data.get("electorate") or [] if isinstance(m, str)]
    if rule == "active_members":
        return _active_members(region, event, repos)
    if rule == "board":
        return repos.address_book.active_ids(region, domain.BOARD_ROLES)
    raise ValueError(f"unknown recipient rule {rule!r}")


GONE = {"left", "suspended", "erased", "rejected"}


def _active_members(region: str, event: dict, repos: Repos) -> list[str]:
    """The region's active members, as the address book knows them, plus the agreement's electorate.

    The members and agreements topics are consumed independently, so after an outage
    notify can see ``agreement.mandated`` before the enrolments of GPs whose partition is
    still catching up (seen in the kill -9 story: 6 of 9 voters got no e-mail). The
    electorate frozen at the vote fills that gap, minus members known to have gone since;
    one not yet in the address book is queued anyway and sent once their address arrives.
    """
    known = set(repos.address_book.active_ids(region))
    electorate = repos.electorates.members(event["data"].get("agreement_id") or event["subject"])
    gone = repos.address_book.with_status(electorate - known, GONE)
    return sorted(known | (electorate - gone))


def remember_electorate(event: dict, repos: Repos) -> None:
    """The electorate of the agreement's latest vote (newest sequence wins)."""
    data = event["data"]
    repos.electorates.apply(data.get("agreement_id") or event["subject"], event["sequence"],
                            [m for m in data.get("electorate") or [] if isinstance(m, str)])


def queue_notifications(repos: Repos, *, region: str, template: str, member_ids: list[str], cause_event_id: str,
                        cause_type: str, context: dict) -> int:
    """Record one notification per (event, member, template) before anything is sent."""
    at = now()
    docs, seen = [], set()
    for member_id in member_ids:
        if member_id in seen:
            continue
        seen.add(member_id)
        docs.append({"_id": new_id("ntf"), "key": domain.notification_key(cause_event_id, member_id, template),
                     "region": region, "member_id": member_id, "template": template, "channel": "email",
                     "cause_event_id": cause_event_id, "cause_type": cause_type, "context": context,
                     "status": QUEUED, "attempts": 0, "next_attempt_at": at, "created_at": at,
                     "claim_seq": 0})
    return repos.notifications.queue_many(docs)


def send_emails(event: dict, repos: Repos) -> None:
    short = ev.short_type(event["type"])
    template, rule = domain.EMAIL_RULES[short]
    region = event["data"].get("region_id") or event.get("region")
    context = _context(event, repos, template)
    if short in CONTACT_CHANGING_TYPES:
        # The reason this e-mail quotes is on the member's contact record written with this
        # event: the sender waits until the address book has that record (or a newer one).
        context["contact_sequence"] = event["sequence"]
    queue_notifications(repos, region=region, template=template, member_ids=_recipients(rule, event, repos),
                        cause_event_id=event["id"], cause_type=short, context=context)


def schedule_vote_reminder(event: dict, repos: Repos) -> None:
    data = event["data"]
    mandate = data.get("mandate") or {}
    deadline = domain.parse_datetime(mandate.get("deadline"))
    opened = domain.parse_datetime(mandate.get("opened_at")) or domain.parse_datetime(event.get("time"))
    due = domain.reminder_due_at(opened, deadline)
    if due is None:
        return
    repos.reminders.schedule({
        "_id": f"{event['id']}:{domain.VOTE_CLOSING}", "agreement_id": data.get("agreement_id") or event["subject"],
        "region": data.get("region_id") or event.get("region"), "cause_event_id": event["id"],
        "electorate": [m for m in data.get("electorate") or [] if isinstance(m, str)],
        "deadline": deadline, "due_at": due, "status": "scheduled",
        "context": _context(event, repos, domain.VOTE_CLOSING),
        "created_at": now()})


def close_vote_reminders(event: dict, repos: Repos) -> None:
    """Any later state of the agreement in which the vote is no longer open cancels its reminder."""
    data = event["data"]
    mandate = data.get("mandate") or {}
    if data.get("status") == "in_consultation" and mandate.get("status") == "open":
        return
    repos.reminders.cancel_for(data.get("agreement_id") or event["subject"],
                               f"{ev.short_type(event['type'])}: the vote is no longer open")


def fire_due_reminders(db: Database, settings: Settings, at: datetime | None = None) -> int:
    """The scheduler's tick: e-mail the electorate of votes closing within 48 h."""
    repos = Repos(db, settings)
    at = at or now()
    fired = 0
    for r in repos.reminders.due(at):
        deadline = r["deadline"] if r["deadline"].tzinfo else r["deadline"].replace(tzinfo=timezone.utc)
        if deadline <= at:
            repos.reminders.mark(r["_id"], "expired")  # too late to remind: the vote has closed
            continue
        queue_notifications(repos, region=r["region"], template=domain.VOTE_CLOSING, member_ids=r["electorate"],
                            cause_event_id=r["cause_event_id"], cause_type="agreement.mandate_requested",
                            context=r["context"])
        repos.reminders.mark(r["_id"], "sent")
        fired += 1
    return fired


# Member events whose e-mail needs the contact record written with them (the rejection reason).
CONTACT_CHANGING_TYPES = ("member.rejected",)
MEMBER_TYPES = ("member.signed_up", "member.enrolled", "member.rejected", "member.suspended", "member.reinstated",
                "member.left", "member.roles_changed", "member.capacity_changed", "member.profile_updated",
                "member.email_verified", "member.reverified", "member.reverification_due")
VOTE_ENDING_TYPES = ("agreement.mandated", "agreement.mandate_rejected", "agreement.signed", "agreement.activated",
                     "agreement.expired", "agreement.terminated", "agreement.superseded",
                     "agreement.vote_cast")

EVENT_HANDLERS: dict[str, list] = {
    "region.registered": [remember_region],
    "region.updated": [remember_region],
    **{t: [remember_member] for t in MEMBER_TYPES},
    "member.erased": [forget_member],
    "agreement.mandate_requested": [remember_electorate, schedule_vote_reminder],
    **{t: [close_vote_reminders] for t in VOTE_ENDING_TYPES},
}
# E-mails after the read models are up to date (member.enrolled: the address first).
for _type in domain.EMAIL_RULES:
    EVENT_HANDLERS.setdefault(_type, []).append(send_emails)
