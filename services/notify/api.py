"""HTTP ↔ commands for the notify service. Views translate; handlers decide."""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from flask import g, request
from flask_smorest import Blueprint

from hecht.auth import Principal
from hecht.errors import Forbidden, Invalid, NotFound
from hecht.web import allow, check_if_match, ctx, etag, paginate, public, require

from . import catalogue, domain, handlers, integrators
from .repository import (AddressBook, DeliveryRepository, NotificationRepository, RegionBook,
                         SubscriptionRepository)
from .schemas import (ClientSecretListSchema, DeliveryArgsSchema, DeliveryDetailSchema, DeliveryPageSchema,
                      DeliverySchema, EventTypeListSchema, IntegratorArgsSchema, IntegratorPageSchema, IntegratorSchema,
                      IntegratorSignInAddressesSchema, IntegratorSignInResultSchema, IntegratorSignInSchema,
                      IntegratorUpdateSchema,
                      MemberExportSchema, NewClientSecretSchema, NotificationArgsSchema, NotificationPageSchema,
                      NotificationSchema, PingResultSchema, ReplayResultSchema, ReplaySchema, RotateSecretSchema,
                      SubscriptionArgsSchema, SubscriptionPageSchema, SubscriptionSchema, SubscriptionUpdateSchema,
                      SubscriptionWithSecretSchema)
from .signing import V1A, active_secrets

SUBSCRIBERS = ("integrator", "region-admin")

subscriptions = Blueprint("subscriptions", __name__, url_prefix="/v1/regions/<region_id>/subscriptions",
                          description="Webhook subscriptions of integrators, their deliveries and replays")
notifications = Blueprint("notifications", __name__, url_prefix="/v1/regions/<region_id>/notifications",
                          description="E-mails sent to members: to whom (member id), which template, status")


def _handle(cmd):
    return handlers.handle(cmd, ctx().db, ctx().settings, g.traceparent)


CLOSED_CIRCUIT = {"state": "closed", "consecutive_failures": 0, "opened_at": None, "retry_at": None}


def _sub_out(doc: dict, secret: str | None = None) -> dict:
    out = {k: v for k, v in doc.items() if k not in ("secrets", "idem_key", "idem_fingerprint")}
    out["id"] = doc["_id"]
    active = active_secrets(doc.get("secrets", []))
    out["signing_secrets"] = len(active)
    out["owner"] = owner_of(doc)
    out["signature"] = doc.get("signature") or "v1"
    out["circuit"] = dict(CLOSED_CIRCUIT, **{k: v for k, v in (doc.get("circuit") or {}).items()
                                             if k in CLOSED_CIRCUIT})
    if out["signature"] == V1A:
        out["public_keys"] = [s["public_key"] for s in active if s.get("public_key")]
        out["public_key"] = out["public_keys"][0] if out["public_keys"] else None
    slot = doc.get("rl_next_at")
    if slot is not None and slot.tzinfo is None:
        slot = slot.replace(tzinfo=timezone.utc)
    out["throttled_until"] = slot if doc.get("rate_limit") and slot and slot > datetime.now(timezone.utc) else None
    if secret:
        out["secret"] = secret
    return out


def owner_of(doc: dict) -> str | None:
    return doc.get("owner") or doc.get("created_by")


def _manages_all(p: Principal) -> bool:
    return p.is_platform_admin or p.has("region-admin")


def _subscription(p: Principal, region_id: str, subscription_id: str) -> dict:
    """The subscription, if the caller may see it: a region-admin every one of the region, an
    integrator only its own. Another's answers 404, exactly like one that does not exist
    (OWASP API1: no object-level access by guessing ids, and no telling which ids exist)."""
    doc = SubscriptionRepository(ctx().db).get_doc(region_id, subscription_id)
    if not _manages_all(p) and owner_of(doc) != p.sub:
        raise NotFound(f"subscription {subscription_id} not found")
    return doc


def _allowed_for(owner: str | None, region_id: str) -> list[str] | None:
    """The event-type patterns a known integrator application may use; None for anyone else."""
    if not integrators.is_integrator_id(owner):
        return None
    app = ctx().db.integrators.find_one({"_id": owner, "region": region_id}, {"event_types": 1})
    return app["event_types"] if app else None


def _location(doc: dict) -> str:
    return f"/v1/regions/{doc['region']}/subscriptions/{doc['_id']}"


def _known_region(region_id: str) -> None:
    """Subscriptions and integrator applications are made only in a region notify has learned
    from the members service's ``region.*`` events (its read model ``regions``): 404 otherwise."""
    if not RegionBook(ctx().db).known(region_id):
        raise NotFound(f"region {region_id!r} not found (no region event from the members service names it)")


def _json_object_body() -> None:
    """The request carries a JSON object (``{}`` is one). webargs reads a missing body, or one
    sent as another media type, as ``{}``: such a request would act on defaults unasked."""
    raw = request.get_data(cache=True)
    if not request.is_json or not raw.strip():
        raise Invalid("the body must be a JSON object (application/json)",
                      errors={"_schema": ["send a JSON object, e.g. {}"]})
    if not isinstance(request.get_json(silent=True), dict):
        raise Invalid("the body must be a JSON object", errors={"_schema": ["send a JSON object, e.g. {}"]})


# -- subscriptions ----------------------------------------------------------------------------
@subscriptions.post("")
@allow("integrator", "region-admin")
@subscriptions.arguments(SubscriptionSchema)
@subscriptions.response(201, SubscriptionWithSecretSchema)
def create_subscription(body, region_id):
    """Subscribe a webhook endpoint to event types (integrator or region-admin).

    The answer holds the signing secret, once: it is stored encrypted and never shown again
    (except to a retry of this very request with the same ``Idempotency-Key``).
    """
    p = require(*SUBSCRIBERS, region=region_id)
    _known_region(region_id)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 255:
        raise Invalid("Idempotency-Key must be 1-255 characters", errors={"Idempotency-Key": ["1-255 characters"]})
    scoped = hashlib.sha256(f"{p.sub}\0{key}".encode()).hexdigest() if key else None
    fingerprint = hashlib.sha256(request.get_data() or b"").hexdigest()
    doc, secret, replayed = _handle(domain.CreateSubscription(
        region=region_id, url=body["url"], event_types=body["event_types"], description=body["description"],
        enabled=body["enabled"], created_by=p.sub, idempotency_key=scoped, fingerprint=fingerprint,
        rate_limit=body.get("rate_limit"), signature=body.get("signature") or "v1",
        allowed_event_types=_allowed_for(p.sub, region_id)))
    headers = {"ETag": etag(doc["version"]), "Location": _location(doc)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return _sub_out(doc, secret), 201, headers


@subscriptions.get("")
@allow("integrator", "region-admin")
@subscriptions.arguments(SubscriptionArgsSchema, location="query")
@subscriptions.response(200, SubscriptionPageSchema)
def list_subscriptions(args, region_id):
    """The region's subscriptions, oldest first: a region-admin sees all (filter ``owner``), an
    integrator its own."""
    p = require(*SUBSCRIBERS, region=region_id)
    query: dict = {"region": region_id, "deleted": {"$ne": True}}
    owner = args.get("owner") if _manages_all(p) else p.sub
    if owner:
        query["$or"] = [{"owner": owner}, {"owner": {"$exists": False}, "created_by": owner}]
    docs, next_url = paginate(ctx().db.subscriptions, query, limit=args["limit"], after=args["after"])
    return {"items": [_sub_out(d) for d in docs], "next": next_url}


@subscriptions.get("/<subscription_id>")
@allow("integrator", "region-admin")
@subscriptions.response(200, SubscriptionSchema)
def get_subscription(region_id, subscription_id):
    p = require(*SUBSCRIBERS, region=region_id)
    doc = _subscription(p, region_id, subscription_id)
    return _sub_out(doc), 200, {"ETag": etag(doc["version"])}


@subscriptions.patch("/<subscription_id>")
@allow("integrator", "region-admin")
@subscriptions.arguments(SubscriptionUpdateSchema)
@subscriptions.response(200, SubscriptionSchema)
def update_subscription(body, region_id, subscription_id):
    """Change the URL, event types, description, rate limit, or enable / disable (If-Match honoured).
    The body is a JSON object with at least one of these fields: 422 otherwise, nothing changes."""
    p = require(*SUBSCRIBERS, region=region_id)
    _json_object_body()
    current = _subscription(p, region_id, subscription_id)
    check_if_match(current["version"])
    doc = _handle(domain.UpdateSubscription(region_id, subscription_id, current["version"], body,
                                            allowed_event_types=_allowed_for(owner_of(current), region_id)))
    return _sub_out(doc), 200, {"ETag": etag(doc["version"])}


@subscriptions.delete("/<subscription_id>")
@allow("integrator", "region-admin")
@subscriptions.response(204)
def delete_subscription(region_id, subscription_id):
    """Delete the subscription and its deliveries."""
    p = require(*SUBSCRIBERS, region=region_id)
    current = _subscription(p, region_id, subscription_id)
    check_if_match(current["version"])
    _handle(domain.DeleteSubscription(region_id, subscription_id))
    return "", 204


@subscriptions.post("/<subscription_id>/rotate-secret")
@allow("integrator", "region-admin")
@subscriptions.arguments(RotateSecretSchema)
@subscriptions.response(200, SubscriptionWithSecretSchema)
def rotate_secret(body, region_id, subscription_id):
    """A new signing secret (shown once) or, for v1a, a new key pair; the previous one keeps
    signing for the grace period. The body is a JSON object: ``{}`` for the default grace period
    (24 h), or ``grace_period_s``; no body, or one that is not a JSON object, is 422."""
    p = require(*SUBSCRIBERS, region=region_id)
    _json_object_body()
    _subscription(p, region_id, subscription_id)
    doc, secret = _handle(domain.RotateSecret(region_id, subscription_id, body["grace_period_s"]))
    return _sub_out(doc, secret), 200, {"ETag": etag(doc["version"])}


@subscriptions.post("/<subscription_id>/ping")
@allow("integrator", "region-admin")
@subscriptions.response(202, PingResultSchema)
def ping(region_id, subscription_id):
    """Send a test event (``hecht.subscription.ping.v1``) to this endpoint; follow its delivery."""
    p = require(*SUBSCRIBERS, region=region_id)
    _subscription(p, region_id, subscription_id)
    d = _handle(domain.PingSubscription(region_id, subscription_id))
    return {"delivery_id": d["_id"], "event_id": d["event_id"], "status": d["status"]}, 202, {
        "Location": f"{_location({'region': region_id, '_id': subscription_id})}/deliveries/{d['_id']}"}


# -- deliveries -------------------------------------------------------------------------------
def _delivery_out(doc: dict) -> dict:
    return dict(doc, id=doc["_id"])


@subscriptions.get("/<subscription_id>/deliveries")
@allow("integrator", "region-admin")
@subscriptions.arguments(DeliveryArgsSchema, location="query")
@subscriptions.response(200, DeliveryPageSchema)
def list_deliveries(args, region_id, subscription_id):
    """The subscription's deliveries, oldest first; filter by status and event type."""
    p = require(*SUBSCRIBERS, region=region_id)
    _subscription(p, region_id, subscription_id)
    query: dict = {"subscription_id": subscription_id}
    if args.get("status"):
        query["status"] = args["status"]
    if args.get("event_type"):
        et = args["event_type"]
        query["event_type"] = {"$regex": "^" + re.escape(et[:-1])} if et.endswith(".*") else et
    docs, next_url = paginate(ctx().db.deliveries, query, limit=args["limit"], after=args["after"])
    return {"items": [_delivery_out(d) for d in docs], "next": next_url}


@subscriptions.get("/<subscription_id>/deliveries/<delivery_id>")
@allow("integrator", "region-admin")
@subscriptions.response(200, DeliveryDetailSchema)
def get_delivery(region_id, subscription_id, delivery_id):
    """One delivery with every attempt: time, HTTP status, latency, first bytes of the reply, and
    whether it was the circuit breaker's probe or waited for the rate limit."""
    p = require(*SUBSCRIBERS, region=region_id)
    _subscription(p, region_id, subscription_id)
    repo = DeliveryRepository(ctx().db)
    return dict(_delivery_out(repo.get(subscription_id, delivery_id)), attempts=repo.attempts(delivery_id))


@subscriptions.post("/<subscription_id>/deliveries/<delivery_id>/retry")
@allow("integrator", "region-admin")
@subscriptions.response(202, DeliverySchema)
def retry_delivery(region_id, subscription_id, delivery_id):
    """Queue a finished (failed or succeeded) delivery for a fresh round of attempts."""
    p = require(*SUBSCRIBERS, region=region_id)
    _subscription(p, region_id, subscription_id)
    return _delivery_out(_handle(domain.RetryDelivery(region_id, subscription_id, delivery_id)))


@subscriptions.post("/<subscription_id>/replay")
@allow("integrator", "region-admin")
@subscriptions.arguments(ReplaySchema)
@subscriptions.response(202, ReplayResultSchema)
def replay(body, region_id, subscription_id):
    """Deliver again every matching event since a time, from notify's own copy of the events."""
    p = require(*SUBSCRIBERS, region=region_id)
    _subscription(p, region_id, subscription_id)
    return _handle(domain.ReplayDeliveries(region_id, subscription_id, body["since"], body.get("until")))


# -- notifications ----------------------------------------------------------------------------
def _notification_out(doc: dict) -> dict:
    return dict(doc, id=doc["_id"])


@notifications.get("")
@allow("region-admin")
@notifications.arguments(NotificationArgsSchema, location="query")
@notifications.response(200, NotificationPageSchema)
def list_notifications(args, region_id):
    """What was sent to which member, with which template, and its status (region-admin)."""
    require("region-admin", region=region_id)
    query: dict = {"region": region_id}
    for arg, field in (("member", "member_id"), ("template", "template"), ("status", "status")):
        if args.get(arg):
            query[field] = args[arg]
    docs, next_url = paginate(ctx().db.notifications, query, limit=args["limit"], after=args["after"],
                              projection={"context": 0})
    return {"items": [_notification_out(d) for d in docs], "next": next_url}


@notifications.get("/<notification_id>")
@allow("region-admin")
@notifications.response(200, NotificationSchema)
def get_notification(region_id, notification_id):
    require("region-admin", region=region_id)
    return _notification_out(NotificationRepository(ctx().db).get(region_id, notification_id))


# -- members' own data (GDPR) -----------------------------------------------------------------
members = Blueprint("members", __name__, url_prefix="/v1/regions/<region_id>/members",
                    description="What notify holds about a member, for the member (GDPR access)")


def _admin_or_self(region_id: str, member_id: str) -> Principal:
    """A region-admin of the region, or the GP whose own membership this is (token claim
    ``member``): the members service's rule, so both halves of an export answer alike."""
    p = require("region-admin", "gp", region=region_id)
    if not (p.has("region-admin") or p.is_platform_admin) and p.member != member_id:
        raise Forbidden("a GP may only see and change their own membership")
    return p


@members.get("/<member_id>/export")
@allow("region-admin", "gp")
@members.response(200, MemberExportSchema)
def export_member(region_id, member_id):
    """GDPR access and portability (the GP themself, or a region-admin): the member's address-book
    entry and the e-mails sent to them (template, status, times), as JSON."""
    _admin_or_self(region_id, member_id)
    entry = AddressBook(ctx().db).get(member_id)
    if entry is not None and entry.get("region") != region_id:
        entry = None  # ids are unique across regions; another region's entry is not this member's
    return {"exported_at": datetime.now(timezone.utc), "region_id": region_id, "member_id": member_id,
            "address_book": entry,
            "notifications": [_notification_out(d) for d in NotificationRepository(ctx().db).of_member(
                region_id, member_id)]}


# -- integrator applications -------------------------------------------------------------------
apps = Blueprint("integrators", __name__, url_prefix="/v1/regions/<region_id>/integrators",
                 description="Integrator applications: identity, allowed event types, client secrets")
sign_ins = Blueprint("integrator_sign_ins", __name__, url_prefix="/v1/integrator-sign-ins",
                     description="The portal reports an integrator's sign-in (portal token only)")
sign_in_addresses = Blueprint("integrator_sign_in_addresses", __name__,
                              url_prefix="/v1/integrator-sign-in-addresses",
                              description="The portal asks where an integrator's sign-in link may go (portal token only)")
event_types = Blueprint("event_types", __name__, url_prefix="/v1/event-types",
                        description="The event catalogue: every deliverable type, its schema and an example")


def _app_for(p: Principal, region_id: str, integrator_id: str) -> dict:
    """The application, for its region's admin or the application itself; else 404."""
    if not (_manages_all(p) or p.sub == integrator_id):
        raise NotFound(f"integrator application {integrator_id} not found")
    doc = integrators.IntegratorRepository(ctx().db).get(region_id, integrator_id)
    if not _manages_all(p) and doc["status"] == integrators.DELETED:
        raise NotFound(f"integrator application {integrator_id} not found")
    return doc


def _app_location(doc: dict) -> str:
    return f"/v1/regions/{doc['region']}/integrators/{doc['_id']}"


@apps.post("")
@allow("region-admin")
@apps.arguments(IntegratorSchema)
@apps.response(201, IntegratorSchema)
def create_integrator(body, region_id):
    """Invite an integrator application (region-admin): an e-mail goes to its contact address."""
    p = require("region-admin", region=region_id)
    _known_region(region_id)
    doc = integrators.create(ctx().db, ctx().settings, region=region_id, name=body["name"],
                             contact_email=body["contact_email"], event_types=body["event_types"],
                             language=body.get("language") or "en", created_by=p.sub)
    return integrators.out(doc), 201, {"ETag": etag(doc["version"]), "Location": _app_location(doc)}


@apps.get("")
@allow("region-admin")
@apps.arguments(IntegratorArgsSchema, location="query")
@apps.response(200, IntegratorPageSchema)
def list_integrators(args, region_id):
    """The region's applications, oldest first (deleted ones only with ``status=deleted``)."""
    require("region-admin", region=region_id)
    query: dict = {"region": region_id, "status": args.get("status") or {"$ne": integrators.DELETED}}
    docs, next_url = paginate(ctx().db.integrators, query, limit=args["limit"], after=args["after"])
    return {"items": [integrators.out(d) for d in docs], "next": next_url}


@apps.get("/<integrator_id>")
@allow("region-admin", "integrator")
@apps.response(200, IntegratorSchema)
def get_integrator(region_id, integrator_id):
    p = require("region-admin", "integrator", region=region_id)
    doc = _app_for(p, region_id, integrator_id)
    return integrators.out(doc), 200, {"ETag": etag(doc["version"])}


@apps.patch("/<integrator_id>")
@allow("region-admin")
@apps.arguments(IntegratorUpdateSchema)
@apps.response(200, IntegratorSchema)
def update_integrator(body, region_id, integrator_id):
    """Rename, change the contact, the allowed event types (409 when the application's own
    subscriptions use more), or suspend / re-activate (If-Match honoured)."""
    require("region-admin", region=region_id)
    current = integrators.IntegratorRepository(ctx().db).get(region_id, integrator_id)
    check_if_match(current["version"])
    doc = integrators.update(ctx().db, current, body)
    return integrators.out(doc), 200, {"ETag": etag(doc["version"])}


@apps.delete("/<integrator_id>")
@allow("region-admin")
@apps.response(204)
def delete_integrator(region_id, integrator_id):
    """Kept for audit as ``deleted``: its secrets are revoked and its subscriptions disabled."""
    require("region-admin", region=region_id)
    current = integrators.IntegratorRepository(ctx().db).get(region_id, integrator_id, include_deleted=False)
    check_if_match(current["version"])
    integrators.delete(ctx().db, ctx().settings, current)
    return "", 204


@apps.post("/<integrator_id>/secrets")
@allow("region-admin", "integrator")
@apps.response(201, NewClientSecretSchema)
def create_client_secret(region_id, integrator_id):
    """A new client secret, shown once (at most two active: rotate without downtime)."""
    p = require("region-admin", "integrator", region=region_id)
    doc, entry, plain = integrators.add_secret(ctx().db, _app_for(p, region_id, integrator_id))
    return dict(integrators.secret_out(entry), client_id=doc["_id"], client_secret=plain), 201


@apps.get("/<integrator_id>/secrets")
@allow("region-admin", "integrator")
@apps.response(200, ClientSecretListSchema)
def list_client_secrets(region_id, integrator_id):
    """The active client secrets: id, hint (last 4 characters), created, last used."""
    p = require("region-admin", "integrator", region=region_id)
    return {"items": [integrators.secret_out(s)
                      for s in integrators.active_secrets(_app_for(p, region_id, integrator_id))]}


@apps.delete("/<integrator_id>/secrets/<secret_id>")
@allow("region-admin", "integrator")
@apps.response(204)
def revoke_client_secret(region_id, integrator_id, secret_id):
    """Revoke a client secret: the token endpoint refuses it from now on."""
    p = require("region-admin", "integrator", region=region_id)
    integrators.revoke_secret(ctx().db, _app_for(p, region_id, integrator_id), secret_id)
    return "", 204


@sign_ins.post("")
@allow("portal")
@sign_ins.arguments(IntegratorSignInSchema)
@sign_ins.response(200, IntegratorSignInResultSchema)
def integrator_sign_in(body):
    """The portal signed someone in with this e-mail address (portal token only): the invited or
    active applications it is the contact of; an invited one becomes active."""
    p = require("portal")
    if not p.is_portal:
        raise Forbidden("only the portal reports sign-ins")
    docs = integrators.sign_in(ctx().db, body["email"])
    return {"integrators": [{"id": d["_id"], "region": d["region"], "name": d["name"], "status": d["status"]}
                            for d in docs]}


@sign_in_addresses.post("")
@allow("portal")
@sign_in_addresses.arguments(IntegratorSignInSchema)
@sign_in_addresses.response(200, IntegratorSignInAddressesSchema)
def integrator_sign_in_addresses(body):
    """The stored contact addresses of the invited or active applications a typed address names
    (portal token only): the portal mails a sign-in link to each, never to the address as typed.
    Nothing changes; an unknown address gets an empty list."""
    p = require("portal")
    if not p.is_portal:
        raise Forbidden("only the portal asks for sign-in addresses")
    return {"addresses": integrators.sign_in_addresses(ctx().db, body["email"])}


@event_types.get("")
@public
@event_types.doc(security=[])
@event_types.response(200, EventTypeListSchema)
def list_event_types():
    """Every event type a subscription can receive: description, JSON Schema of the data, and an
    example payload as delivered (public: the contract is no secret)."""
    return {"items": catalogue.catalogue()}


def reject_inactive_integrators():
    """A token whose subject is a known application that is not active (suspended, deleted, or
    not yet signed in) is refused at once here; the other services accept it until it expires
    (at most ``oauth.TOKEN_TTL_S`` = 5 minutes after suspension)."""
    from flask import request as _req
    from hecht.errors import Unauthorized
    p = g.get("principal")
    if p is None or not integrators.is_integrator_id(p.sub) or _manages_all(p) or _req.path.startswith("/oauth/"):
        return None
    status = integrators.status_of(ctx().db, p.sub)
    if status is not None and status != integrators.ACTIVE:
        raise Unauthorized(f"the integrator application is {status}")
    return None
