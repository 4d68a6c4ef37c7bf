"""Marshmallow schemas: request bodies (load) and responses (dump) in one class each."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from hecht.web import PageSchema

from .domain import COUNTRIES, REGION_KINDS

SLUG = validate.Regexp(r"^[a-z0-9][a-z0-9-]{1,62}$",
                       error="use 2–63 lowercase letters, digits and dashes, starting with a letter or digit")


class MandatePolicySchema(Schema):
    quorum = fields.Float(load_default=0.5, allow_nan=False, validate=validate.Range(0, 1),
                          metadata={"description": "share of the electorate that must vote (0–1)"})
    approval_threshold = fields.Float(
        load_default=0.5, allow_nan=False, validate=validate.Range(0, 1, min_inclusive=False),
        metadata={"description": "share of votes cast that must be 'for' (above 0, at most 1)"})
    voting_period_days = fields.Integer(load_default=14, validate=validate.Range(1, 90))


class RegionSchema(Schema):
    id = fields.String(required=True, validate=SLUG, metadata={"example": "elz-demo"})
    name = fields.String(required=True, validate=validate.Length(1, 200))
    country = fields.String(required=True, validate=validate.OneOf(COUNTRIES))
    kind = fields.String(required=True, validate=validate.OneOf(REGION_KINDS))
    municipalities = fields.List(fields.String(validate=validate.Length(1, 100)), required=True,
                                 validate=validate.Length(1, 1000))
    mandate_policy = fields.Nested(MandatePolicySchema, load_default=lambda: MandatePolicySchema().load({}))
    version = fields.Integer(dump_only=True)


class RegionUpdateSchema(Schema):
    """Fields to change (PATCH semantics): anything left out stays as it is."""
    name = fields.String(validate=validate.Length(1, 200))
    kind = fields.String(validate=validate.OneOf(REGION_KINDS))
    municipalities = fields.List(fields.String(validate=validate.Length(1, 100)), validate=validate.Length(1, 1000))
    mandate_policy = fields.Nested(MandatePolicySchema(partial=True))


class RegionPageSchema(PageSchema):
    items = fields.List(fields.Nested(RegionSchema))


class EventSchema(Schema):
    """A CloudEvent as stored in the history."""
    id = fields.String()
    type = fields.String()
    source = fields.String()
    subject = fields.String()
    time = fields.String()
    sequence = fields.Integer()
    data = fields.Dict()


class HistorySchema(Schema):
    items = fields.List(fields.Nested(EventSchema))
