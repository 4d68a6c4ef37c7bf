"""HTTP ↔ commands for the notify service. Views translate; handlers decide."""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from flask import g, request
from flask_smorest import Blueprint

from hecht.auth import Principal
from hecht.errors import Forbidden, Invalid
from hecht.web import PageArgsSchema, allow, check_if_match, ctx, etag, paginate, require

from . import domain, handlers
from .repository import AddressBook, DeliveryRepository, NotificationRepository, SubscriptionRepository
from .schemas import (DeliveryArgsSchema, DeliveryDetailSchema, DeliveryPageSchema, DeliverySchema,
                      MemberExportSchema, NotificationArgsSchema, NotificationPageSchema, NotificationSchema, PingResultSchema,
                      ReplayResultSchema, ReplaySchema, RotateSecretSchema, SubscriptionPageSchema,
                      SubscriptionSchema, SubscriptionUpdateSchema, SubscriptionWithSecretSchema)
from .signing import active_secrets

SUBSCRIBERS = ("integrator", "region-admin")

subscriptions = Blueprint("subscriptions", __name__, url_prefix="/v1/regions/<region_id>/subscriptions",
                          description="Webhook subscriptions of integrators, their deliveries and replays")
notifications = Blueprint("notifications", __name__, url_prefix="/v1/regions/<region_id>/notifications",
                          description="E-mails sent to members: to whom (member id), which template, status")


def _handle(cmd):
    return handlers.handle(cmd, ctx().db, ctx().settings, g.traceparent)


def _sub_out(doc: dict, secret: str | None = None) -> dict:
    out = {k: v for k, v in doc.items() if k not in ("secrets", "idem_key", "idem_fingerprint")}
    out["id"] = doc["_id"]
    out["signing_secrets"] = len(active_secrets(doc.get("secrets", [])))
    if secret:
        out["secret"] = secret
    return out


def _location(doc: dict) -> str:
    return f"/v1/regions/{doc['region']}/subscriptions/{doc['_id']}"


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
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 255:
        raise Invalid("Idempotency-Key must be 1-255 characters", errors={"Idempotency-Key": ["1-255 characters"]})
    scoped = hashlib.sha256(f"{p.sub}\0{key}".encode()).hexdigest() if key else None
    fingerprint = hashlib.sha256(request.get_data() or b"").hexdigest()
    doc, secret, replayed = _handle(domain.CreateSubscription(
        region=region_id, url=body["url"], event_types=body["event_types"], description=body["description"],
        enabled=body["enabled"], created_by=p.sub, idempotency_key=scoped, fingerprint=fingerprint))
    headers = {"ETag": etag(doc["version"]), "Location": _location(doc)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return _sub_out(doc, secret), 201, headers


@subscriptions.get("")
@allow("integrator", "region-admin")
@subscriptions.arguments(PageArgsSchema, location="query")
@subscriptions.response(200, SubscriptionPageSchema)
def list_subscriptions(args, region_id):
    """The region's subscriptions, oldest first."""
    require(*SUBSCRIBERS, region=region_id)
    docs, next_url = paginate(ctx().db.subscriptions, {"region": region_id, "deleted": {"$ne": True}},
                              limit=args["limit"], after=args["after"])
    return {"items": [_sub_out(d) for d in docs], "next": next_url}


@subscriptions.get("/<subscription_id>")
@allow("integrator", "region-admin")
@subscriptions.response(200, SubscriptionSchema)
def get_subscription(region_id, subscription_id):
    require(*SUBSCRIBERS, region=region_id)
    doc = SubscriptionRepository(ctx().db).get_doc(region_id, subscription_id)
    return _sub_out(doc), 200, {"ETag": etag(doc["version"])}


@subscriptions.patch("/<subscription_id>")
@allow("integrator", "region-admin")
@subscriptions.arguments(SubscriptionUpdateSchema)
@subscriptions.response(200, SubscriptionSchema)
def update_subscription(body, region_id, subscription_id):
    """Change the URL, event types, description, or enable / disable (If-Match honoured)."""
    require(*SUBSCRIBERS, region=region_id)
    current = SubscriptionRepository(ctx().db).get_doc(region_id, subscription_id)
    check_if_match(current["version"])
    doc = _handle(domain.UpdateSubscription(region_id, subscription_id, current["version"], body))
    return _sub_out(doc), 200, {"ETag": etag(doc["version"])}


@subscriptions.delete("/<subscription_id>")
@allow("integrator", "region-admin")
@subscriptions.response(204)
def delete_subscription(region_id, subscription_id):
    """Delete the subscription and its deliveries."""
    require(*SUBSCRIBERS, region=region_id)
    current = SubscriptionRepository(ctx().db).get_doc(region_id, subscription_id)
    check_if_match(current["version"])
    _handle(domain.DeleteSubscription(region_id, subscription_id))
    return "", 204


@subscriptions.post("/<subscription_id>/rotate-secret")
@allow("integrator", "region-admin")
@subscriptions.arguments(RotateSecretSchema)
@subscriptions.response(200, SubscriptionWithSecretSchema)
def rotate_secret(body, region_id, subscription_id):
    """A new signing secret (shown once); the previous one keeps signing for the grace period."""
    require(*SUBSCRIBERS, region=region_id)
    doc, secret = _handle(domain.RotateSecret(region_id, subscription_id, body["grace_period_s"]))
    return _sub_out(doc, secret), 200, {"ETag": etag(doc["version"])}


@subscriptions.post("/<subscription_id>/ping")
@allow("integrator", "region-admin")
@subscriptions.response(202, PingResultSchema)
def ping(region_id, subscription_id):
    """Send a test event (``hecht.subscription.ping.v1``) to this endpoint; follow its delivery."""
    require(*SUBSCRIBERS, region=region_id)
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
    require(*SUBSCRIBERS, region=region_id)
    SubscriptionRepository(ctx().db).get_doc(region_id, subscription_id)
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
    """One delivery with every attempt: time, HTTP status, latency, first bytes of the reply."""
    require(*SUBSCRIBERS, region=region_id)
    SubscriptionRepository(ctx().db).get_doc(region_id, subscription_id)
    repo = DeliveryRepository(ctx().db)
    return dict(_delivery_out(repo.get(subscription_id, delivery_id)), attempts=repo.attempts(delivery_id))


@subscriptions.post("/<subscription_id>/deliveries/<delivery_id>/retry")
@allow("integrator", "region-admin")
@subscriptions.response(202, DeliverySchema)
def retry_delivery(region_id, subscription_id, delivery_id):
    """Queue a finished (failed or succeeded) delivery for a fresh round of attempts."""
    require(*SUBSCRIBERS, region=region_id)
    return _delivery_out(_handle(domain.RetryDelivery(region_id, subscription_id, delivery_id)))


@subscriptions.post("/<subscription_id>/replay")
@allow("integrator", "region-admin")
@subscriptions.arguments(ReplaySchema)
@subscriptions.response(202, ReplayResultSchema)
def replay(body, region_id, subscription_id):
    """Deliver again every matching event since a time, from notify's own copy of the events."""
    require(*SUBSCRIBERS, region=region_id)
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
