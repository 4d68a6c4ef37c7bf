"""HTTP ↔ commands for the members service. Views translate; handlers decide."""
from __future__ import annotations

from flask import g
from flask_smorest import Blueprint

from hecht.web import PageArgsSchema, check_if_match, ctx, etag, idempotent, paginate, require

from . import domain, handlers
from .repository import RegionRepository
from .schemas import HistorySchema, RegionPageSchema, RegionSchema, RegionUpdateSchema

regions = Blueprint("regions", __name__, url_prefix="/v1/regions",
                    description="Regions: the regional GP bodies that own everything else")


def _region_out(doc: dict) -> dict:
    return {"id": doc["_id"], **doc}


@regions.post("")
@regions.arguments(RegionSchema)
@regions.response(201, RegionSchema)
@idempotent
def create_region(body):
    """Register a region (platform-admin)."""
    require("platform-admin")
    region = domain.Region(id=body["id"], name=body["name"], country=body["country"], kind=body["kind"],
                           municipalities=body["municipalities"], mandate_policy=body["mandate_policy"])
    doc = handlers.handle(domain.RegisterRegion(region), ctx().db, g.traceparent)
    return _region_out(doc), 201, {"ETag": etag(doc["version"]), "Location": f"/v1/regions/{region.id}"}


@regions.get("")
@regions.arguments(PageArgsSchema, location="query")
@regions.response(200, RegionPageSchema)
def list_regions(args):
    """List regions: all of them for a platform-admin, one's own region otherwise."""
    p = require()
    query = {} if p.is_platform_admin else {"_id": p.region or ""}
    docs, next_url = paginate(ctx().db.regions, query, limit=args["limit"], after=args["after"],
                              projection={"_outbox": 0})
    return {"items": [_region_out(d) for d in docs], "next": next_url}


@regions.get("/<region_id>")
@regions.response(200, RegionSchema)
def get_region(region_id):
    """Get a region (anyone with a token for it)."""
    require(region=region_id)
    doc = RegionRepository(ctx().db).get_doc(region_id)
    return _region_out(doc), 200, {"ETag": etag(doc["version"])}


@regions.patch("/<region_id>")
@regions.arguments(RegionUpdateSchema)
@regions.response(200, RegionSchema)
def update_region(body, region_id):
    """Update a region's name, kind, municipalities or mandate policy (platform-admin or region-admin)."""
    require("region-admin", region=region_id)
    current = RegionRepository(ctx().db).get_doc(region_id)
    check_if_match(current["version"])
    doc = handlers.handle(domain.UpdateRegion(region_id, current["version"], body), ctx().db, g.traceparent)
    return _region_out(doc), 200, {"ETag": etag(doc["version"])}


@regions.get("/<region_id>/history")
@regions.response(200, HistorySchema)
def region_history(region_id):
    """The region's events, oldest first."""
    require("region-admin", region=region_id)
    return {"items": RegionRepository(ctx().db).history(region_id)}
