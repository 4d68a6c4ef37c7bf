"""Marshmallow schemas: request bodies (load) and responses (dump), one class per thing."""
from __future__ import annotations

from datetime import timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from hecht.web import PageArgsSchema, PageSchema

from .domain import TEMPLATES
from .handlers import MAX_ROTATION_GRACE_S
from .integrators import SETTABLE_STATUSES, STATUSES
from .repository import FAILED, PENDING, QUEUED, SENT, SUCCEEDED
from .signing import SCHEMES

_PATTERN_DOC = "event types to receive: '*', a kind such as 'agreement.*', or an exact type such as " \
               "'member.capacity_changed'"


class SubscriptionSchema(Schema):
    id = fields.String(dump_only=True, metadata={"example": "sub_0190a1b2c3d4e5f6a7b8c9"})
    url = fields.String(required=True, validate=validate.Length(1, 2048),
                        metadata={"description": "https endpoint that receives the signed CloudEvents",
                                  "example": "https://integrator.example/hecht/webhook"})
    event_types = fields.List(fields.String(validate=validate.Length(1, 100)), required=True,
                              validate=validate.Length(1, 50), metadata={"description": _PATTERN_DOC,
                                                                         "example": ["agreement.*"]})
    description = fields.String(load_default="", validate=validate.Length(max=500))
    enabled = fields.Boolean(load_default=True)
    disabled_reason = fields.String(dump_only=True, allow_none=True,
                                    metadata={"description": "why the delivery engine or a user disabled it"})
    disabled_at = fields.DateTime(dump_only=True, allow_none=True)
    consecutive_failures = fields.Integer(dump_only=True,
                                          metadata={"description": "deliveries in a row that failed for good"})
    signing_secrets = fields.Integer(dump_only=True, metadata={
        "description": "secrets signing now: 2 during a rotation's grace period, else 1"})
    owner = fields.String(dump_only=True, metadata={
        "description": "who owns it: the integrator application id (int_…), or the token subject that created it"})
    rate_limit = fields.Float(load_default=None, allow_none=True,
                              validate=validate.Range(min=0, min_inclusive=False, max=10_000),
                              metadata={"description": "at most this many deliveries per second; null: unlimited",
                                        "example": 5})
    signature = fields.String(load_default="v1", validate=validate.OneOf(SCHEMES), metadata={
        "description": "v1: HMAC-SHA256 with a shared secret (whsec_…); v1a: ed25519 (Standard Webhooks "
                       "asymmetric signatures), verified with the public key (whpk_…)"})
    public_key = fields.String(dump_only=True, allow_none=True, metadata={
        "description": "v1a only: the public key (whpk_…) of the key pair signing now"})
    public_keys = fields.List(fields.String(), dump_only=True, metadata={
        "description": "v1a only: every public key signing now (two during a rotation's grace period)"})
    circuit = fields.Nested(lambda: CircuitSchema(), dump_only=True)
    throttled_until = fields.DateTime(dump_only=True, allow_none=True, metadata={
        "description": "when the rate limit lets the next delivery go (null when not waiting)"})
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    version = fields.Integer(dump_only=True)


class CircuitSchema(Schema):
    """The circuit breaker: after HECHT_WEBHOOK_CIRCUIT_FAILURES failed attempts in a row it opens
    for HECHT_WEBHOOK_CIRCUIT_COOLDOWN_S, then one probe is tried (half-open): success closes it."""
    state = fields.String(metadata={"description": "closed, open or half-open"})
    consecutive_failures = fields.Integer(metadata={"description": "failed attempts in a row"})
    opened_at = fields.DateTime(allow_none=True)
    retry_at = fields.DateTime(allow_none=True, metadata={"description": "when the probe may go"})


class SubscriptionWithSecretSchema(SubscriptionSchema):
    secret = fields.String(dump_only=True, metadata={
        "description": "v1: the signing secret (whsec_…): shown once, on create and on rotate; store it now"})


class SubscriptionUpdateSchema(Schema):
    """Fields to change (PATCH semantics): anything left out stays as it is."""
    url = fields.String(validate=validate.Length(1, 2048))
    event_types = fields.List(fields.String(validate=validate.Length(1, 100)), validate=validate.Length(1, 50),
                              metadata={"description": _PATTERN_DOC})
    description = fields.String(validate=validate.Length(max=500))
    enabled = fields.Boolean(metadata={"description": "true re-enables a disabled subscription (and resets its "
                                                      "failure count and circuit)"})
    rate_limit = fields.Float(allow_none=True, validate=validate.Range(min=0, min_inclusive=False, max=10_000),
                              metadata={"description": "deliveries per second; null: unlimited"})

    @validates_schema
    def something_to_change(self, data, **kwargs):
        """An empty body changes nothing: 422, not a new version."""
        if not data:
            raise ValidationError("send at least one field to change", "_schema")


class SubscriptionArgsSchema(PageArgsSchema):
    owner = fields.String(validate=validate.Length(1, 128),
                          metadata={"description": "only this owner's subscriptions (region-admin)"})


class SubscriptionPageSchema(PageSchema):
    items = fields.List(fields.Nested(SubscriptionSchema))


class RotateSecretSchema(Schema):
    grace_period_s = fields.Integer(load_default=24 * 3600, validate=validate.Range(0, MAX_ROTATION_GRACE_S),
                                    metadata={"description": "how long the previous secret keeps signing "
                                                             "(both signatures are sent meanwhile)"})


class PingResultSchema(Schema):
    delivery_id = fields.String()
    event_id = fields.String()
    status = fields.String()


class DeliveryArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf([PENDING, SUCCEEDED, FAILED]))
    event_type = fields.String(validate=validate.Regexp(r"^[a-z_]+(\.([a-z_]+|\*))?$"),
                               metadata={"description": "an exact type or a kind pattern such as 'member.*'"})


class AttemptSchema(Schema):
    at = fields.DateTime()
    status = fields.Integer(allow_none=True, metadata={"description": "HTTP status; null when none came back"})
    latency_ms = fields.Float()
    response = fields.String(metadata={"description": "the first 512 bytes of the response body"})
    error = fields.String(allow_none=True, metadata={"description": "timeout, connection error, refusal"})
    n = fields.Integer(metadata={"description": "the attempt's number for this delivery"})
    probe = fields.Boolean(metadata={"description": "the circuit breaker's probe (half-open)"})
    circuit = fields.String(metadata={"description": "the circuit's state when the attempt went"})
    circuit_after = fields.String(metadata={"description": "the circuit's state after this attempt's outcome"})
    throttled_until = fields.DateTime(allow_none=True, metadata={
        "description": "the attempt waited for the subscription's rate limit until then (null: no wait)"})
    throttled_ms = fields.Float(allow_none=True, metadata={
        "description": "how long the rate limit held this attempt back"})


class DeliverySchema(Schema):
    id = fields.String()
    subscription_id = fields.String()
    event_id = fields.String(metadata={"description": "also the webhook-id header"})
    event_type = fields.String()
    subject = fields.String()
    sequence = fields.Integer()
    status = fields.String(metadata={"description": "pending (waiting or being attempted), succeeded or failed"})
    attempt_count = fields.Integer()
    next_attempt_at = fields.DateTime(allow_none=True)
    last_attempt_at = fields.DateTime(allow_none=True)
    last_status = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    failed_at = fields.DateTime(allow_none=True)


class DeliveryDetailSchema(DeliverySchema):
    attempts = fields.List(fields.Nested(AttemptSchema))


class DeliveryPageSchema(PageSchema):
    items = fields.List(fields.Nested(DeliverySchema))


class ReplaySchema(Schema):
    since = fields.AwareDateTime(required=True, default_timezone=timezone.utc,
                                 metadata={"description": "replay every matching event at or after this time"})
    until = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=timezone.utc)


class ReplayResultSchema(Schema):
    matched = fields.Integer(metadata={"description": "events in the window the subscription matches"})
    created = fields.Integer(metadata={"description": "new deliveries"})
    reopened = fields.Integer(metadata={"description": "finished deliveries queued again"})
    truncated = fields.Boolean(metadata={"description": "true when the window held more than one replay takes"})


class NotificationArgsSchema(PageArgsSchema):
    class Meta:
        unknown = EXCLUDE

    member = fields.String(validate=validate.Length(1, 64))
    template = fields.String(validate=validate.OneOf(TEMPLATES))
    status = fields.String(validate=validate.OneOf([QUEUED, SENT, FAILED]))


class NotificationSchema(Schema):
    id = fields.String()
    member_id = fields.String()
    template = fields.String()
    channel = fields.String()
    status = fields.String(metadata={"description": "queued (waiting or being sent), sent or failed"})
    language = fields.String(allow_none=True)
    cause_event_id = fields.String()
    cause_type = fields.String()
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)


class NotificationPageSchema(PageSchema):
    items = fields.List(fields.Nested(NotificationSchema))


# -- GDPR export -----------------------------------------------------------------------------------
class AddressBookEntrySchema(Schema):
    """What notify keeps to reach the member, copied from the members service's events."""
    status = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    language = fields.String(allow_none=True)
    roles = fields.List(fields.String())
    updated_at = fields.DateTime(allow_none=True)
    erased_at = fields.DateTime(allow_none=True)


class SentNotificationSchema(Schema):
    id = fields.String()
    template = fields.String()
    channel = fields.String()
    status = fields.String(metadata={"description": "queued, sent or failed"})
    language = fields.String(allow_none=True)
    cause_type = fields.String(metadata={"description": "the event the message was about"})
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class MemberExportSchema(Schema):
    """Everything notify holds about one member (GDPR access and portability)."""
    exported_at = fields.DateTime()
    region_id = fields.String()
    member_id = fields.String()
    address_book = fields.Nested(AddressBookEntrySchema, allow_none=True,
                                 metadata={"description": "null when notify has no entry for the member"})
    notifications = fields.List(fields.Nested(SentNotificationSchema), metadata={
        "description": "e-mails to the member, oldest first: template, status and times, not the content"})


# -- integrator applications ---------------------------------------------------------------------
class ClientSecretSchema(Schema):
    id = fields.String()
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)
    hint = fields.String(metadata={"description": "the secret's last 4 characters"})


class NewClientSecretSchema(ClientSecretSchema):
    client_id = fields.String(metadata={"description": "the application id: the OAuth 2.0 client id"})
    client_secret = fields.String(metadata={"description": "shown once, stored hashed: store it now"})


class IntegratorSchema(Schema):
    id = fields.String(dump_only=True, metadata={"example": "int_0190a1b2c3d4e5f6a7b8c9"})
    region = fields.String(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(1, 120))
    contact_email = fields.Email(required=True, validate=validate.Length(3, 254))
    event_types = fields.List(fields.String(validate=validate.Length(1, 100)), required=True,
                              validate=validate.Length(1, 50),
                              metadata={"description": "the patterns this application may subscribe to; "
                                                       + _PATTERN_DOC})
    language = fields.String(load_default="en", validate=validate.OneOf(["nl", "fr", "en"]),
                             metadata={"description": "of the invitation e-mail"})
    status = fields.String(dump_only=True, metadata={"description": "invited, active, suspended or deleted"})
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    activated_at = fields.DateTime(dump_only=True, allow_none=True)
    suspended_at = fields.DateTime(dump_only=True, allow_none=True)
    deleted_at = fields.DateTime(dump_only=True, allow_none=True)
    version = fields.Integer(dump_only=True)
    secrets = fields.List(fields.Nested(ClientSecretSchema), dump_only=True,
                          metadata={"description": "the active client secrets (never the secrets themselves)"})


class IntegratorUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(1, 120))
    contact_email = fields.Email(validate=validate.Length(3, 254))
    event_types = fields.List(fields.String(validate=validate.Length(1, 100)), validate=validate.Length(1, 50))
    status = fields.String(validate=validate.OneOf(SETTABLE_STATUSES))


class IntegratorArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(STATUSES))


class IntegratorPageSchema(PageSchema):
    items = fields.List(fields.Nested(IntegratorSchema))


class ClientSecretListSchema(Schema):
    items = fields.List(fields.Nested(ClientSecretSchema))


class IntegratorSignInSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(3, 254), metadata={
        "description": "an e-mail address; matched on its key (README, Security: the domain's IDNA A-labels, "
                       "only ASCII letters case-insensitive)"})


class SignInAddressSchema(Schema):
    email = fields.String(metadata={"description": "the contact address as the application stored it"})
    language = fields.String(allow_none=True, metadata={"description": "the application's language (nl, fr, en)"})


class IntegratorSignInAddressesSchema(Schema):
    addresses = fields.List(fields.Nested(SignInAddressSchema), metadata={
        "description": "the distinct stored contact addresses of the invited or active applications the address "
                       "names; empty when none"})


class SignedInIntegratorSchema(Schema):
    id = fields.String()
    region = fields.String()
    name = fields.String()
    status = fields.String()


class IntegratorSignInResultSchema(Schema):
    integrators = fields.List(fields.Nested(SignedInIntegratorSchema))


# -- the event catalogue ----------------------------------------------------------------------------
class EventTypeSchema(Schema):
    type = fields.String(metadata={"example": "agreement.activated"})
    full_type = fields.String(metadata={"example": "hecht.agreement.activated.v1"})
    version = fields.Integer()
    topic = fields.String(allow_none=True)
    description = fields.String()
    schema = fields.Dict(metadata={"description": "the JSON Schema (2020-12) of the event's data"})
    example = fields.Dict(metadata={"description": "an example data payload, as delivered (redacted)"})


class EventTypeListSchema(Schema):
    items = fields.List(fields.Nested(EventTypeSchema))
