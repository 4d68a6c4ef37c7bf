"""Integrator applications: who an integrator is, what it may receive, and its client secrets.

An application (``int_…``) belongs to one region. The region's admin invites it (an e-mail to
its contact address through notify's e-mail queue), decides which event-type patterns it may
subscribe to, and may suspend or delete it. The application itself signs in through the portal
(``POST /v1/integrator-sign-ins``, which turns ``invited`` into ``active``) and obtains JWTs
with the OAuth 2.0 client-credentials grant (``oauth.py``) using one of at most two active
client secrets, so a secret can be rotated without downtime.

Client secrets are shown once and stored as SHA-256 hashes: they are 256 random bits, so a
fast hash is enough (no password stretching needed), and a database dump reveals none.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets as _random

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database

from hecht import emails
from hecht.config import Settings
from hecht.errors import Conflict, Invalid, NotFound
from hecht.outbox import AggregateStore, transaction
from hecht.web import new_id

from . import domain
from .repository import QUEUED, RegionBook, now

INVITED, ACTIVE, SUSPENDED, DELETED = "invited", "active", "suspended", "deleted"
STATUSES = (INVITED, ACTIVE, SUSPENDED, DELETED)
SETTABLE_STATUSES = (ACTIVE, SUSPENDED)
MAX_ACTIVE_SECRETS = 2
SECRET_PREFIX = "hcs_"
INVITE_TEMPLATE = "integrator_invited"
ID_PREFIX = "int"


def is_integrator_id(sub: str | None) -> bool:
    return bool(sub) and sub.startswith(ID_PREFIX + "_")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def active_secrets(doc: dict) -> list[dict]:
    return [s for s in doc.get("secrets") or [] if s.get("revoked_at") is None]


# -- event-type limits ------------------------------------------------------------------------
def covered(allowed: list[str], pattern: str) -> bool:
    """Is every event type ``pattern`` matches also matched by one of ``allowed``?"""
    if "*" in allowed:
        return True
    if pattern == "*":
        return False
    return all(domain.matches(allowed, t) for t in domain.EVENT_TYPES if domain.matches([pattern], t))


def check_within(allowed: list[str], patterns: list[str]) -> None:
    """422 with one error per pattern outside what the region allows this application."""
    errors = {str(i): [f"{p!r} is outside the event types this application may receive "
                       f"({', '.join(allowed)})"] for i, p in enumerate(patterns) if not covered(allowed, p)}
    if errors:
        raise Invalid("some event types are not allowed for this integrator application",
                      errors={"event_types": errors}, allowed_event_types=allowed)


# -- contact addresses --------------------------------------------------------------------------
def contact_address(db: Database, region: str, raw: str) -> str:
    """The contact address in the normal form of hecht/emails.py (a non-ASCII local part only if
    the region opts in), or 422 naming the field. ``.test`` domains pass, as test set-ups use them."""
    try:
        return emails.validate(raw, unicode_local=RegionBook(db).unicode_email_local_parts(region),
                               test_environment=True)
    except emails.AddressError as e:
        raise Invalid("the contact address is not valid", errors={"contact_email": [str(e)]}) from None


def rekey_contacts(db: Database) -> int:
    """``contact_email_key`` (hecht/emails.py) for applications stored with the earlier
    ``contact_email_lc`` (``lower()`` of the whole address), or whose address has non-ASCII
    characters. Idempotent; run with the indexes."""
    changed = 0
    query = {"$or": [{"contact_email_key": {"$exists": False}},
                     {"contact_email": {"$regex": "[^\\x00-\\x7F]"}}]}
    for doc in db.integrators.find(query, {"contact_email": 1, "contact_email_key": 1}):
        new = emails.key(doc.get("contact_email") or "")
        if doc.get("contact_email_key") != new:
            changed += db.integrators.update_one({"_id": doc["_id"], "contact_email": doc.get("contact_email")},
                                                 {"$set": {"contact_email_key": new},
                                                  "$unset": {"contact_email_lc": ""}}).modified_count
    return changed


# -- repository -------------------------------------------------------------------------------
class IntegratorRepository:
    def __init__(self, db: Database):
        self.db = db
        self.coll = db.integrators
        self.store = AggregateStore(db.integrators, source="integrators")

    def get(self, region: str, integrator_id: str, *, include_deleted: bool = True) -> dict:
        query: dict = {"_id": integrator_id, "region": region}
        if not include_deleted:
            query["status"] = {"$ne": DELETED}
        doc = self.coll.find_one(query)
        if doc is None:
            raise NotFound(f"integrator application {integrator_id} not found")
        return doc

    def find(self, integrator_id: str) -> dict | None:
        return self.coll.find_one({"_id": integrator_id})

    def update(self, doc: dict, changes: dict) -> dict:
        return self.store.update(doc["_id"], doc["version"], dict(changes, updated_at=now()), [],
                                 region=doc["region"])


def create(db: Database, settings: Settings, *, region: str, name: str, contact_email: str,
           event_types: list[str], language: str, created_by: str) -> dict:
    """The application (status ``invited``) and its invitation e-mail, in one transaction: the
    ``notifications`` collection is notify's e-mail outbox, so the invitation is sent exactly
    when the application exists."""
    patterns = domain.normalize_patterns(event_types)
    contact_email = contact_address(db, region, contact_email)
    at = now()
    doc = {"_id": new_id(ID_PREFIX), "region": region, "name": name.strip(), "contact_email": contact_email,
           "contact_email_key": emails.key(contact_email), "event_types": patterns, "status": INVITED,
           "language": domain.language_of(language), "created_at": at, "updated_at": at, "activated_at": None,
           "created_by": created_by, "secrets": [], "version": 1}
    link = f"{settings.portal_url.rstrip('/')}/integrations/{region}" if settings.portal_url else None
    notification = {
        "_id": new_id("ntf"), "key": f"{doc['_id']}:{INVITE_TEMPLATE}", "region": region, "member_id": None,
        "integrator_id": doc["_id"], "to": contact_email, "language": doc["language"],
        "template": INVITE_TEMPLATE, "channel": "email", "cause_event_id": doc["_id"],
        "cause_type": "integrator.invited",
        "context": {"region_name": RegionBook(db).name(region), "integrator_name": doc["name"],
                    "event_types": patterns, "link": link},
        "status": QUEUED, "attempts": 0, "next_attempt_at": at, "created_at": at, "claim_seq": 0, "version": 1}

    def work(s):
        db.integrators.insert_one(doc, session=s)
        db.notifications.insert_one(notification, session=s)
        return doc
    return transaction(db, work)


def update(db: Database, doc: dict, changes: dict) -> dict:
    """name, contact_email, event_types, status (active | suspended). Narrowing the event types
    below what the application's own subscriptions use is refused (409, naming them)."""
    if doc["status"] == DELETED:
        raise Conflict("the integrator application was deleted", current_status=DELETED)
    out: dict = {}
    if "name" in changes:
        out["name"] = changes["name"].strip()
    if "contact_email" in changes:
        address = contact_address(db, doc["region"], changes["contact_email"])
        out.update(contact_email=address, contact_email_key=emails.key(address))
    if "event_types" in changes:
        patterns = domain.normalize_patterns(changes["event_types"])
        beyond = [s["_id"] for s in db.subscriptions.find(
            {"region": doc["region"], "owner": doc["_id"], "deleted": {"$ne": True}}, {"event_types": 1})
            if not all(covered(patterns, p) for p in s.get("event_types") or [])]
        if beyond:
            raise Conflict("subscriptions of this application use event types outside the new list: narrow or "
                           "delete them first", subscriptions=beyond)
        out["event_types"] = patterns
    if "status" in changes and changes["status"] != doc["status"]:
        out["status"] = changes["status"]
        if changes["status"] == ACTIVE and doc.get("activated_at") is None:
            out["activated_at"] = now()
        if changes["status"] == SUSPENDED:
            out["suspended_at"] = now()
    return IntegratorRepository(db).update(doc, out)


def delete(db: Database, settings: Settings, doc: dict) -> dict:
    """Kept for audit as ``deleted``: secrets revoked, its subscriptions disabled (each with its
    ``subscription.disabled`` event, through the outbox, as when the delivery engine disables one)."""
    from . import handlers
    at = now()
    secrets = [dict(s, revoked_at=s.get("revoked_at") or at) for s in doc.get("secrets") or []]
    updated = IntegratorRepository(db).update(doc, {"status": DELETED, "deleted_at": at, "secrets": secrets})
    for sub in db.subscriptions.find({"region": doc["region"], "owner": doc["_id"], "deleted": {"$ne": True},
                                      "enabled": True}, {"_id": 1}):
        handlers.handle(domain.DisableSubscription(sub["_id"], "the integrator application was deleted", 0),
                        db, settings)
    return updated


# -- client secrets ---------------------------------------------------------------------------
def add_secret(db: Database, doc: dict) -> tuple[dict, dict, str]:
    """(application, secret entry, plaintext): at most two active secrets (409 beyond)."""
    if doc["status"] == DELETED:
        raise Conflict("the integrator application was deleted", current_status=DELETED)
    if len(active_secrets(doc)) >= MAX_ACTIVE_SECRETS:
        raise Conflict(f"an application has at most {MAX_ACTIVE_SECRETS} active client secrets: revoke one first",
                       active_secrets=[s["id"] for s in active_secrets(doc)])
    plain = SECRET_PREFIX + _random.token_urlsafe(32)
    entry = {"id": new_id("cs"), "hash": _hash(plain), "hint": plain[-4:], "created_at": now(),
             "last_used_at": None, "revoked_at": None}
    updated = IntegratorRepository(db).update(doc, {"secrets": list(doc.get("secrets") or []) + [entry]})
    return updated, entry, plain


def revoke_secret(db: Database, doc: dict, secret_id: str) -> dict:
    entry = next((s for s in active_secrets(doc) if s["id"] == secret_id), None)
    if entry is None:
        raise NotFound(f"client secret {secret_id} not found")
    at = now()
    secrets = [dict(s, revoked_at=at) if s["id"] == secret_id else s for s in doc.get("secrets") or []]
    return IntegratorRepository(db).update(doc, {"secrets": secrets})


def authenticate(db: Database, client_id: str, secret: str) -> dict | None:
    """The active application whose active secret this is (and note its use), else None."""
    doc = db.integrators.find_one({"_id": client_id, "status": ACTIVE})
    if doc is None or not isinstance(secret, str):
        return None
    digest = _hash(secret)
    for s in active_secrets(doc):
        if hmac.compare_digest(s["hash"], digest):
            # Not a configuration change: no version bump, so an admin's ETag stays valid.
            db.integrators.update_one({"_id": doc["_id"], "secrets.id": s["id"]},
                                      {"$set": {"secrets.$.last_used_at": now()}})
            return doc
    return None


# -- portal sign-in ---------------------------------------------------------------------------
def _contact_of(db: Database, email: str):
    """The invited or active applications whose contact address has the key of ``email``
    (hecht/emails.py), or 422 for something that is not an address."""
    try:
        wanted = emails.lookup_key(email)
    except emails.AddressError as e:
        raise Invalid("the email address is not valid", errors={"email": [str(e)]}) from None
    return db.integrators.find({"contact_email_key": wanted,
                                "status": {"$in": [INVITED, ACTIVE]}}).sort("_id", ASCENDING)


def sign_in_addresses(db: Database, email: str) -> list[dict]:
    """The stored contact addresses (and languages) of the applications ``email`` names: where
    the portal may send a sign-in link. Nothing changes."""
    found: dict[str, str | None] = {}
    for doc in _contact_of(db, email):
        found.setdefault(doc["contact_email"], doc.get("language"))
    return [{"email": e, "language": lang} for e, lang in found.items()]


def sign_in(db: Database, email: str) -> list[dict]:
    """The invited or active applications whose contact address this is (by its key);
    ``invited`` → ``active``."""
    at = now()
    out = []
    for doc in _contact_of(db, email):
        if doc["status"] == INVITED:
            doc = db.integrators.find_one_and_update(
                {"_id": doc["_id"], "status": INVITED},
                {"$set": {"status": ACTIVE, "activated_at": at, "updated_at": at}, "$inc": {"version": 1}},
                return_document=ReturnDocument.AFTER) or db.integrators.find_one({"_id": doc["_id"]})
        out.append(doc)
    return out


def status_of(db: Database, sub: str) -> str | None:
    """The application's status when ``sub`` names one, else None (not an application)."""
    if not is_integrator_id(sub):
        return None
    doc = db.integrators.find_one({"_id": sub}, {"status": 1})
    return doc["status"] if doc else None


def out(doc: dict) -> dict:
    """The API's view: never a hash."""
    return {"id": doc["_id"], "region": doc["region"], "name": doc["name"], "contact_email": doc["contact_email"],
            "event_types": doc["event_types"], "status": doc["status"], "language": doc.get("language"),
            "created_at": doc["created_at"], "updated_at": doc["updated_at"],
            "activated_at": doc.get("activated_at"), "suspended_at": doc.get("suspended_at"),
            "deleted_at": doc.get("deleted_at"), "version": doc["version"],
            "secrets": [secret_out(s) for s in active_secrets(doc)]}


def secret_out(s: dict) -> dict:
    return {"id": s["id"], "created_at": s["created_at"], "last_used_at": s.get("last_used_at"), "hint": s["hint"]}
