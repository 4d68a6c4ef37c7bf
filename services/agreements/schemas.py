"""Marshmallow schemas: request bodies (load) and responses (dump), one class each where possible."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hecht.validation import HttpsUrl, one_line
from hecht.web import EventSchema, HistorySchema, PageArgsSchema, PageSchema  # noqa: F401 - re-exported

from .domain import BODIES, CHOICES, CLOSE_REASONS, PARTNER_KINDS, STATUSES, THEMES

NAME = one_line(1, 200)            # one line: no control characters (hecht.validation)
MUNICIPALITY = one_line(1, 100)
MEMBER_ID = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="not a member id")


class PartnerSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    kind = fields.String(required=True, validate=validate.OneOf(PARTNER_KINDS))
    identifier = fields.String(validate=one_line(1, 100),
                               metadata={"description": "e.g. the partner's AGB, RIZIV or KBO number"})


class CommitmentSchema(Schema):
    party = fields.String(required=True, validate=NAME,
                          metadata={"description": "who commits: the region or a partner's name"})
    text = fields.String(required=True, validate=validate.Length(1, 2000))


class DocumentSchema(Schema):
    title = fields.String(required=True, validate=NAME)
    url = fields.Url(required=True, schemes={"https"}, validate=[validate.Length(max=2000), HttpsUrl()],
                     metadata={"description": "https, without a user name or password"})


class AgreementChangesSchema(Schema):
    """The terms of an agreement; in a revision or an amendment, only the fields to change."""
    title = fields.String(validate=NAME)
    theme = fields.String(validate=validate.OneOf(THEMES))
    summary = fields.String(validate=validate.Length(0, 5000))
    partners = fields.List(fields.Nested(PartnerSchema), validate=validate.Length(1, 50))
    commitments = fields.List(fields.Nested(CommitmentSchema), validate=validate.Length(1, 100))
    municipalities = fields.List(fields.String(validate=MUNICIPALITY), validate=validate.Length(0, 500))
    effective_from = fields.Date()
    effective_until = fields.Date(allow_none=True)
    review_date = fields.Date(allow_none=True)
    documents = fields.List(fields.Nested(DocumentSchema), validate=validate.Length(0, 50))

    @validates_schema
    def dates_in_order(self, data, **kwargs):
        start, until, review = data.get("effective_from"), data.get("effective_until"), data.get("review_date")
        errors = {}
        if start and until and until < start:
            errors["effective_until"] = ["must not be before effective_from"]
        if start and review and review < start:
            errors["review_date"] = ["must not be before effective_from"]
        elif until and review and review > until:
            errors["review_date"] = ["must not be after effective_until"]
        if errors:
            raise ValidationError(errors)


class ClusterTallySchema(Schema):
    """One cluster of a care council (``body: council``)."""
    cluster = fields.String()
    seats = fields.Integer()
    cast = fields.Integer()
    quorum_met = fields.Boolean()
    for_ = fields.Integer(data_key="for", attribute="for")
    against = fields.Integer()
    abstain = fields.Integer()
    majority = fields.Boolean(metadata={"description": "for > half of the cluster's votes cast, and ≥ the "
                                                       "approval threshold"})


class TallySchema(Schema):
    """The state of a mandate vote: counts only, never who chose what. While the vote is open
    the ballot is secret: turnout only; ``for``/``against``/``abstain``/``threshold_met`` appear
    when it closes (at once where the frozen policy has ``live_tally``). The policy and body in
    force when the vote opened are frozen into it and shown here."""
    body = fields.String(metadata={"description": " | ".join(BODIES) + " (who mandates, frozen at opening)"})
    policy_version = fields.Integer(allow_none=True, metadata={
        "description": "the region's mandate policy version frozen into this vote"})
    live_tally = fields.Boolean(metadata={"description": "running counts shown while open (the region opted in)"})
    max_proxies = fields.Integer()
    trainees_vote = fields.Boolean()
    clusters = fields.List(fields.Nested(ClusterTallySchema), metadata={
        "description": "council only: per cluster; a vote passes only with quorum and majority in each"})
    status = fields.String(metadata={"description": "open | passed | rejected"})
    electorate_size = fields.Integer()
    for_ = fields.Integer(data_key="for")
    against = fields.Integer()
    abstain = fields.Integer()
    cast = fields.Integer(metadata={"description": "votes cast (abstentions included)"})
    turnout = fields.Float(metadata={"description": "cast / electorate_size"})
    quorum = fields.Float()
    approval_threshold = fields.Float()
    quorum_met = fields.Boolean()
    threshold_met = fields.Boolean(metadata={"description": "for / cast ≥ approval_threshold"})
    opened_at = fields.DateTime()
    deadline = fields.DateTime()
    closed_at = fields.DateTime(allow_none=True)
    close_reason = fields.String(allow_none=True, metadata={"description": " | ".join(CLOSE_REASONS)})
    your_vote = fields.String(allow_none=True, metadata={
        "description": "the calling GP's own choice (only in answers to that GP)"})


class VersionLinkSchema(Schema):
    id = fields.String()
    version = fields.Integer()
    status = fields.String()
    activated_on = fields.Date(allow_none=True)
    ended_on = fields.Date(allow_none=True)


class AgreementSchema(AgreementChangesSchema):
    """An agreement version: the draft body in, the full state out."""
    title = fields.String(required=True, validate=NAME)
    theme = fields.String(required=True, validate=validate.OneOf(THEMES))
    summary = fields.String(load_default="", validate=validate.Length(0, 5000))
    partners = fields.List(fields.Nested(PartnerSchema), required=True, validate=validate.Length(1, 50))
    commitments = fields.List(fields.Nested(CommitmentSchema), required=True, validate=validate.Length(1, 100))
    municipalities = fields.List(fields.String(validate=MUNICIPALITY), load_default=list,
                                 validate=validate.Length(0, 500))
    effective_from = fields.Date(required=True)
    effective_until = fields.Date(allow_none=True, load_default=None)
    review_date = fields.Date(allow_none=True, load_default=None)
    documents = fields.List(fields.Nested(DocumentSchema), load_default=list, validate=validate.Length(0, 50))

    id = fields.String(dump_only=True)
    region_id = fields.String(dump_only=True)
    status = fields.String(dump_only=True, metadata={"description": " | ".join(STATUSES)})
    version = fields.Integer(dump_only=True, metadata={"description": "place in the version chain"})
    previous_id = fields.String(dump_only=True, allow_none=True,
                                metadata={"description": "the version this one amends"})
    sequence = fields.Integer(dump_only=True, metadata={"description": "changes so far; also the ETag"})
    mandate = fields.Nested(TallySchema, dump_only=True, allow_none=True)
    signed_at = fields.DateTime(dump_only=True, allow_none=True)
    activated_on = fields.Date(dump_only=True, allow_none=True, metadata={"description": "first day in force"})
    ended_on = fields.Date(dump_only=True, allow_none=True, metadata={"description": "first day no longer in force"})
    termination_reason = fields.String(dump_only=True, allow_none=True)
    review_due_on = fields.Date(dump_only=True, allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    versions = fields.List(fields.Nested(VersionLinkSchema), dump_only=True,
                           metadata={"description": "the whole version chain, oldest first (on GET of one)"})


class AgreementQuerySchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    theme = fields.String(validate=validate.OneOf(THEMES))
    partner = fields.String(validate=validate.Length(1, 200), metadata={"description": "a partner's name"})
    municipality = fields.String(validate=validate.Length(1, 100))
    active_on = fields.Date(metadata={"description": "in force on this date"})


class AgreementPageSchema(PageSchema):
    items = fields.List(fields.Nested(AgreementSchema))


class VoteSchema(Schema):
    choice = fields.String(required=True, validate=validate.OneOf(CHOICES))


class BallotSchema(Schema):
    """A GP's own vote, answered only to that GP."""
    member_id = fields.String()
    choice = fields.String(allow_none=True)
    proxy_to = fields.String(allow_none=True, metadata={"description": "the elector holding your proxy, or null"})
    proxies_for = fields.List(fields.String(), metadata={"description": "the electors whose proxy you hold: your "
                                                                          "vote also casts their share"})
    mandate = fields.Nested(TallySchema)


class ProxySchema(Schema):
    """A proxy: ``giver`` (the calling GP) lets ``holder`` vote for their share."""
    giver = fields.String(required=True, validate=MEMBER_ID)
    holder = fields.String(required=True, validate=MEMBER_ID)
    mandate = fields.Nested(TallySchema, dump_only=True)


class TerminateSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(1, 1000))


