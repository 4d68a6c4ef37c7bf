"""Marshmallow schemas: request bodies (load) and responses (dump) in one class each."""
from __future__ import annotations

from marshmallow import Schema, fields, validate
from webargs.fields import DelimitedList

from hecht.validation import ChangesSchema, one_line
from hecht.web import EventSchema, HistorySchema, PageArgsSchema, PageSchema  # noqa: F401 - re-exported

from .domain import (CAPACITY_STATUSES, CATEGORIES, COUNTRIES, LANGUAGES, MANDATE_BODIES, MAX_PROXIES,
                     MEMBER_ROLES, MEMBER_STATUSES, REGION_KINDS, RESERVED_REGION_IDS, REVERIFY_MONTHS, SCHEMES,
                     STAFF_STATUSES)

SLUG = validate.Regexp(r"^[a-z0-9][a-z0-9-]{1,62}$",
                       error="use 2–63 lowercase letters, digits and dashes, starting with a letter or digit")


class SeatSchema(Schema):
    member_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$",
                                                                      error="not a member id"))
    cluster = fields.String(required=True, validate=one_line(1, 100),
                            metadata={"example": "care providers"})


_BODY_HELP = ("who mandates: `assembly` (default) every active member whose practice lies in one of the "
              "region's municipalities; `board` the active members holding the board, chair or secretary "
              "role; `council` the named seats, with the quorum and a majority (more than half of the votes "
              "cast, and at least approval_threshold) needed in each cluster")


_REVERIFY_HELP = ("how often (calendar months, 1–60, default 12) a member re-confirms their registration; "
                  "due from the same day that many months after it was last verified")
_UNVERIFIED_HELP = ("true: members past their re-confirmation are left out of votes opened meanwhile (listed "
                    "as `unverified` in agreement.mandate_requested) until they re-confirm; default false")


class MandatePolicySchema(Schema):
    quorum = fields.Float(load_default=0.5, allow_nan=False, validate=validate.Range(0, 1),
                          metadata={"description": "share of the electorate that must vote (0–1); "
                                                   "in a council, of each cluster's seats"})
    approval_threshold = fields.Float(
        load_default=0.5, allow_nan=False, validate=validate.Range(0, 1, min_inclusive=False),
        metadata={"description": "share of votes cast that must be 'for' (above 0, at most 1)"})
    voting_period_days = fields.Integer(load_default=14, validate=validate.Range(1, 90))
    body = fields.String(load_default="assembly", validate=validate.OneOf(MANDATE_BODIES),
                         metadata={"description": _BODY_HELP})
    seats = fields.List(fields.Nested(SeatSchema), load_default=list, validate=validate.Length(0, 500),
                        metadata={"description": "council seats: the member holding each and its cluster"})
    live_tally = fields.Boolean(load_default=False, metadata={
        "description": "show running counts while a vote is open (default false: a secret ballot)"})
    max_proxies = fields.Integer(load_default=0, validate=validate.Range(0, MAX_PROXIES), metadata={
        "description": "proxies one member may carry (0: no proxies)"})
    trainees_vote = fields.Boolean(load_default=True, metadata={
        "description": "members in training (category gp-in-training) are electors"})
    reverify_months = fields.Integer(load_default=12, validate=validate.Range(*REVERIFY_MONTHS), metadata={
        "description": _REVERIFY_HELP})
    unverified_leave_electorate = fields.Boolean(load_default=False, metadata={"description": _UNVERIFIED_HELP})
    version = fields.Integer(dump_only=True, metadata={
        "description": "+1 on every change; a vote keeps the version in force when it opened"})


_UNICODE_LOCAL_HELP = ("members' and integrator contacts' e-mail addresses may have a non-ASCII part before "
                       "the @ (e.g. jürgen@example.de); false (the default) accepts ASCII only there. "
                       "Changing it does not touch addresses already stored")


class RegionSchema(Schema):
    id = fields.String(required=True, validate=[SLUG, validate.NoneOf(
        RESERVED_REGION_IDS, error="this id is reserved (staff events carry it as their region)")],
        metadata={"example": "elz-demo"})
    name = fields.String(required=True, validate=one_line(1, 200))
    country = fields.String(required=True, validate=validate.OneOf(COUNTRIES))
    kind = fields.String(required=True, validate=validate.OneOf(REGION_KINDS))
    municipalities = fields.List(fields.String(validate=one_line(1, 100)), required=True,
                                 validate=validate.Length(1, 1000))
    mandate_policy = fields.Nested(MandatePolicySchema, load_default=lambda: MandatePolicySchema().load({}))
    unicode_email_local_parts = fields.Boolean(load_default=False, metadata={"description": _UNICODE_LOCAL_HELP})
    version = fields.Integer(dump_only=True)


class MandatePolicyUpdateSchema(Schema):
    """The policy fields to change; the others keep their value. Any change is a new version,
    applied to votes opened later only."""
    quorum = fields.Float(allow_nan=False, validate=validate.Range(0, 1))
    approval_threshold = fields.Float(allow_nan=False, validate=validate.Range(0, 1, min_inclusive=False))
    voting_period_days = fields.Integer(validate=validate.Range(1, 90))
    body = fields.String(validate=validate.OneOf(MANDATE_BODIES), metadata={"description": _BODY_HELP})
    seats = fields.List(fields.Nested(SeatSchema), validate=validate.Length(0, 500))
    live_tally = fields.Boolean()
    max_proxies = fields.Integer(validate=validate.Range(0, MAX_PROXIES))
    trainees_vote = fields.Boolean()
    reverify_months = fields.Integer(validate=validate.Range(*REVERIFY_MONTHS), metadata={"description": _REVERIFY_HELP})
    unverified_leave_electorate = fields.Boolean(metadata={"description": _UNVERIFIED_HELP})


class RegionUpdateSchema(ChangesSchema):
    """Fields to change (PATCH semantics): anything left out stays as it is; at least one (422)."""
    NOT_CHANGES = ("confirm_affected",)
    name = fields.String(validate=one_line(1, 200))
    kind = fields.String(validate=validate.OneOf(REGION_KINDS))
    municipalities = fields.List(fields.String(validate=one_line(1, 100)), validate=validate.Length(1, 1000))
    mandate_policy = fields.Nested("MandatePolicyUpdateSchema")
    unicode_email_local_parts = fields.Boolean(metadata={"description": _UNICODE_LOCAL_HELP})
    confirm_affected = fields.Boolean(load_only=True, load_default=False, metadata={
        "description": "removing a municipality that members' practices lie in answers 409 listing them "
                       "(`affected`) unless this is true"})


class RegionPageSchema(PageSchema):
    items = fields.List(fields.Nested(RegionSchema))


# -- members ----------------------------------------------------------------------------------
class RegistrationSchema(Schema):
    scheme = fields.String(required=True, validate=validate.OneOf(SCHEMES),
                           metadata={"description": "BIG or AGB in NL regions, RIZIV (INAMI) in BE regions"})
    number = fields.String(required=True, validate=one_line(1, 40),
                           metadata={"description": "spaces, dots and dashes are allowed and removed",
                                     "example": "1-08290-59-003"})


class PracticeSchema(Schema):
    name = fields.String(required=True, validate=one_line(1, 200))
    postcode = fields.String(required=True, validate=one_line(1, 16),
                             metadata={"description": "NL `1234 AB`, BE four digits (1000–9999)"})
    municipality = fields.String(required=True, validate=one_line(1, 100),
                                 metadata={"description": "one of the region's municipalities"})


class CapacitySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(CAPACITY_STATUSES),
                           metadata={"description": "open, limited (a partial stop) or closed (patient stop)"})
    since = fields.Date(load_default=None, metadata={"description": "since when (default: today)"})
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class SignUpSchema(Schema):
    """The public sign-up form of a GP."""
    given_name = fields.String(required=True, validate=one_line(1, 100))
    family_name = fields.String(required=True, validate=one_line(1, 100))
    email = fields.String(required=True, validate=validate.Length(3, 254))
    language = fields.String(required=True, validate=validate.OneOf(LANGUAGES))
    category = fields.String(load_default="practice-owner", validate=validate.OneOf(CATEGORIES))
    registration = fields.Nested(RegistrationSchema, required=True)
    practice = fields.Nested(PracticeSchema, required=True)


class SignUpResultSchema(Schema):
    """202 ``{"status": "accepted"}`` (without a token: nothing else, whatever the outcome); 201
    ``{"id", "status": "pending"}`` for a region-admin of the region."""
    id = fields.String(metadata={"example": "m_019a3c5e7f10a1b2c3d4e5f6",
                                 "description": "only for a region-admin of the region (201)"})
    status = fields.String(metadata={"enum": ["accepted", "pending"], "example": "accepted"})
    outcome = fields.String(metadata={"enum": ["created", "enrolled"],
                                      "description": "only for the portal's token: whether a member was created "
                                                     "or the address or registration was already enrolled"})


class MemberSchema(Schema):
    """A member; after erasure only the tombstone (id, region_id, status) remains."""
    id = fields.String()
    region_id = fields.String()
    status = fields.String(metadata={"enum": list(MEMBER_STATUSES)})
    category = fields.String(allow_none=True)
    given_name = fields.String(allow_none=True)
    family_name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    language = fields.String(allow_none=True)
    registration = fields.Nested(RegistrationSchema, allow_none=True)
    practice = fields.Nested(PracticeSchema, allow_none=True)
    capacity = fields.Nested(CapacitySchema, allow_none=True)
    roles = fields.List(fields.String())
    reason = fields.String(allow_none=True)
    signed_up_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)
    email_verified_at = fields.DateTime(allow_none=True, metadata={
        "description": "when a sign-in link sent to the address was first used; null until then"})
    verified_at = fields.DateTime(allow_none=True, metadata={
        "description": "when the registration was last confirmed valid (approval, a registration correction, "
                       "a re-confirmation); for members approved before this was recorded, the sign-up time"})
    reverify_due_at = fields.DateTime(allow_none=True, metadata={
        "description": "from when the registration must be re-confirmed (the region's reverify_months after "
                       "verified_at, 00:00 UTC); null for members it does not apply to (pending, left, ...)"})
    version = fields.Integer()


class MemberPageSchema(PageSchema):
    items = fields.List(fields.Nested(MemberSchema))


class MemberListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(MEMBER_STATUSES),
                           metadata={"description": "erased tombstones are listed only when asked for"})
    role = fields.String(validate=validate.OneOf(MEMBER_ROLES))
    municipality = fields.String(validate=validate.Length(1, 100))
    capacity = fields.String(validate=validate.OneOf(CAPACITY_STATUSES + ("unknown",)))
    q = fields.String(validate=validate.Length(1, 100),
                      metadata={"description": "name search: every word must start a given or family name"})
    email_verified = fields.Boolean(metadata={"description": "true: the address was proven by a sign-in; "
                                                             "false: not yet"})
    stale = fields.Boolean(load_default=False, metadata={
        "description": "pending sign-ups whose address is still unconfirmed after HECHT_SIGNUP_CONFIRM_DAYS "
                       "are left out; true lists only them"})
    reverify_due = fields.Boolean(metadata={
        "description": "true: only active and suspended members past their re-confirmation (reverify_due_at "
                       "reached); false: only the others"})
    outside_region = fields.Boolean(metadata={
        "description": "true: only members whose practice lies outside the region's municipalities (e.g. after "
                       "a municipality was removed; they are not in an assembly's electorate); false: only inside"})
    ids = DelimitedList(fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="not a member id")),
                        validate=validate.Length(1, 100), metadata={
        "description": "comma-separated member ids (at most 100): only these members, whatever their status "
                       "(tombstones and stale sign-ups too), e.g. to name the members a history or the "
                       "notifications log shows; with it only `status` also applies"})


class ReconfirmSchema(Schema):
    """The registration is still valid; a correction may come with it (the sign-up's checks apply)."""
    registration = fields.Nested(RegistrationSchema, metadata={
        "description": "optional: the corrected registration (e.g. a new RIZIV competence code); it must still "
                       "be unique in the region"})


class ReasonSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(1, 500))


class LeaveSchema(Schema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class RolesSchema(Schema):
    roles = fields.List(fields.String(validate=validate.OneOf(MEMBER_ROLES)), required=True,
                        validate=validate.Length(max=len(MEMBER_ROLES)),
                        metadata={"description": "`member` is implied; at most one chair per region"})


class PracticeUpdateSchema(Schema):
    name = fields.String(validate=one_line(1, 200))
    postcode = fields.String(validate=one_line(1, 16))
    municipality = fields.String(validate=one_line(1, 100))


class ProfileUpdateSchema(Schema):
    """Fields to change (PATCH semantics): anything left out stays as it is."""
    given_name = fields.String(validate=one_line(1, 100))
    family_name = fields.String(validate=one_line(1, 100))
    email = fields.String(validate=validate.Length(3, 254))
    language = fields.String(validate=validate.OneOf(LANGUAGES))
    category = fields.String(validate=validate.OneOf(CATEGORIES))
    practice = fields.Nested(PracticeUpdateSchema)
    registration = fields.Nested(RegistrationSchema, metadata={
        "description": "a correction (e.g. a new RIZIV competence code, a renewed BIG number): the sign-up's "
                       "checks apply, and it must still be unique in the region"})


class CapacityTotalsSchema(Schema):
    open = fields.Integer()
    limited = fields.Integer()
    closed = fields.Integer()
    unknown = fields.Integer(metadata={"description": "active members who have not reported capacity"})
    active = fields.Integer()
    closed_share = fields.Float(allow_none=True, metadata={
        "description": "closed / active (unknown included), 4 decimals; null without active members"})


class CapacityRowSchema(CapacityTotalsSchema):
    municipality = fields.String()


class CapacityOverviewSchema(Schema):
    region_id = fields.String()
    municipalities = fields.List(fields.Nested(CapacityRowSchema))
    totals = fields.Nested(CapacityTotalsSchema)


# -- sign-ins (the portal) ------------------------------------------------------------------------
class SignInSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(3, 254),
                          metadata={"description": "the address a used sign-in link was sent to"})


class SignInAddressSchema(Schema):
    email = fields.String(metadata={"description": "the address as the account stored it"})
    language = fields.String(allow_none=True, metadata={"description": "the person's language (nl, fr, en)"})


class SignInAddressesSchema(Schema):
    addresses = fields.List(fields.Nested(SignInAddressSchema), metadata={
        "description": "the distinct stored addresses of the non-erased memberships and the non-revoked staff "
                       "account whose address has the key of the one asked for (README, Security); empty "
                       "when none"})


class MembershipSchema(Schema):
    region_id = fields.String()
    region_name = fields.String()
    member_id = fields.String()
    status = fields.String(metadata={"enum": [s for s in MEMBER_STATUSES if s != "erased"]})
    roles = fields.List(fields.String())
    email_verified_at = fields.DateTime(allow_none=True)


class SignInStaffSchema(Schema):
    id = fields.String()
    name = fields.String()
    language = fields.String()
    platform_admin = fields.Boolean()
    admin_of = fields.List(fields.String())
    status = fields.String(metadata={"enum": ["invited", "active"]})


class SignInResultSchema(Schema):
    email = fields.String(metadata={"description": "the address, normalised as sign-up does"})
    memberships = fields.List(fields.Nested(MembershipSchema),
                              metadata={"description": "non-erased memberships, by region; empty if none"})
    staff = fields.Nested(SignInStaffSchema, allow_none=True, metadata={
        "description": "the non-revoked staff account with this address (an invited one is active from now "
                       "on), or null"})


# -- staff accounts ---------------------------------------------------------------------------------
REGION_ID = fields.String(validate=SLUG)


class StaffSchema(Schema):
    """A staff account (platform view)."""
    id = fields.String(metadata={"example": "stf_019a3c5e7f10a1b2c3d4e5f6"})
    email = fields.String()
    name = fields.String()
    language = fields.String(metadata={"enum": list(LANGUAGES)})
    platform_admin = fields.Boolean()
    admin_of = fields.List(fields.String(), metadata={"description": "the regions this account administers"})
    status = fields.String(metadata={"enum": list(STAFF_STATUSES)})
    invited_at = fields.DateTime(allow_none=True)
    activated_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    version = fields.Integer()


class StaffPageSchema(PageSchema):
    items = fields.List(fields.Nested(StaffSchema))


class StaffCreateSchema(Schema):
    """An invitation; the portal mails the sign-in link, the first sign-in activates the account."""
    email = fields.String(required=True, validate=validate.Length(3, 254))
    name = fields.String(required=True, validate=one_line(1, 200))
    language = fields.String(load_default="nl", validate=validate.OneOf(LANGUAGES))
    platform_admin = fields.Boolean(load_default=False)
    admin_of = fields.List(fields.String(validate=SLUG), load_default=list, validate=validate.Length(max=200),
                           metadata={"description": "existing regions; at least one, unless platform_admin"})


class StaffUpdateSchema(ChangesSchema):
    """Fields to change (PATCH semantics; at least one, else 422); send If-Match with the ETag read."""
    name = fields.String(validate=one_line(1, 200))
    language = fields.String(validate=validate.OneOf(LANGUAGES))
    platform_admin = fields.Boolean()
    admin_of = fields.List(fields.String(validate=SLUG), validate=validate.Length(max=200))


class StaffListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(STAFF_STATUSES))
    region = fields.String(validate=SLUG, metadata={"description": "accounts administering this region"})
    q = fields.String(validate=validate.Length(1, 100),
                      metadata={"description": "every word must occur in the name or the address"})


class RegionStaffSchema(Schema):
    """A region's admin as that region sees it: not which other regions the account administers."""
    id = fields.String()
    region_id = fields.String()
    email = fields.String()
    name = fields.String()
    language = fields.String()
    status = fields.String(metadata={"enum": ["invited", "active"]})
    invited_at = fields.DateTime(allow_none=True)
    activated_at = fields.DateTime(allow_none=True)


class RegionStaffPageSchema(PageSchema):
    items = fields.List(fields.Nested(RegionStaffSchema))


class RegionStaffCreateSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(3, 254))
    name = fields.String(required=True, validate=one_line(1, 200))
    language = fields.String(load_default="nl", validate=validate.OneOf(LANGUAGES))


class RegionStaffListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(("invited", "active")))


STAFF_ID = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="not a staff id")
MAX_NAME_LOOKUPS = 100


class StaffNamesArgsSchema(Schema):
    ids = DelimitedList(fields.String(validate=STAFF_ID), required=True,
                               validate=validate.Length(1, MAX_NAME_LOOKUPS), metadata={
                                   "description": f"comma-separated staff ids (at most {MAX_NAME_LOOKUPS}), e.g. "
                                                  "the `staff:<id>` actors of a history"})


class StaffNameSchema(Schema):
    id = fields.String()
    name = fields.String()


class StaffNamesSchema(Schema):
    items = fields.List(fields.Nested(StaffNameSchema), metadata={
        "description": "the names of the ids asked for that are or were admins of the region, or platform "
                       "admins; any other id is left out (unknown or not, alike). No e-mail addresses"})


# -- capacity over time -------------------------------------------------------------------------------
class SnapshotRowSchema(Schema):
    municipality = fields.String()
    open = fields.Integer()
    limited = fields.Integer()
    closed = fields.Integer()
    unknown = fields.Integer(metadata={"description": "active members who had not reported capacity"})


class SnapshotSchema(Schema):
    region_id = fields.String()
    day = fields.String(metadata={"format": "date", "example": "2026-12-03"})
    municipalities = fields.List(fields.Nested(SnapshotRowSchema))


class HistoryArgsSchema(Schema):
    from_ = fields.Date(data_key="from", load_default=None,
                        metadata={"description": "first day (default: 89 days before `to`)"})
    to = fields.Date(load_default=None, metadata={"description": "last day (default: today, UTC); at most 400 "
                                                                 "days from `from`, both included"})


class CapacityHistorySchema(Schema):
    region_id = fields.String()
    from_ = fields.String(data_key="from", metadata={"format": "date"})
    to = fields.String(metadata={"format": "date"})
    days = fields.List(fields.Nested(SnapshotSchema), metadata={
        "description": "the snapshots in the range, oldest first; a day without one is absent"})


# -- GDPR export ----------------------------------------------------------------------------------
class MemberExportSchema(Schema):
    """Everything the members service holds about one membership (GDPR access and portability)."""
    exported_at = fields.DateTime()
    member = fields.Nested(MemberSchema)
    history = fields.List(fields.Nested(EventSchema), metadata={
        "description": "every event about the membership, oldest first (what changed, when)"})
