"""Commands → domain → repository. The routing table at the bottom is the map of behaviour."""
from __future__ import annotations

from dataclasses import replace

from hecht.outbox import EventDraft

from . import domain
from .repository import RegionRepository


def register_region(cmd: domain.RegisterRegion, repos: "Repos", trace: str | None) -> dict:
    region = cmd.region
    return repos.regions.add(region, [EventDraft("region.registered", region.event_data())], trace)


def update_region(cmd: domain.UpdateRegion, repos: "Repos", trace: str | None) -> dict:
    region, version = repos.regions.get(cmd.region_id)
    if cmd.expected_version is not None and cmd.expected_version != version:
        from hecht.errors import PreconditionFailed
        raise PreconditionFailed(f"region {cmd.region_id} has changed (current ETag \"{version}\")")
    changes = dict(cmd.changes)
    if "mandate_policy" in changes:
        changes["mandate_policy"] = domain.MandatePolicy(**{**region.mandate_policy.__dict__,
                                                            **changes["mandate_policy"]})
    updated = replace(region, **changes)
    return repos.regions.save(updated, version, [EventDraft("region.updated", updated.event_data())], trace)


class Repos:
    """The repositories one command may use (a unit of work without transactions)."""

    def __init__(self, db):
        self.regions = RegionRepository(db)


COMMAND_HANDLERS = {
    domain.RegisterRegion: register_region,
    domain.UpdateRegion: update_region,
}


def handle(cmd, db, trace: str | None = None):
    return COMMAND_HANDLERS[type(cmd)](cmd, Repos(db), trace)
