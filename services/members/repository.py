"""MongoDB documents ↔ members aggregates; every write goes with its events (outbox)."""
from __future__ import annotations

from pymongo import ASCENDING
from pymongo.database import Database

from hecht import outbox
from hecht.errors import NotFound
from hecht.outbox import AggregateStore, EventDraft

from .domain import Region

AGGREGATE_COLLECTIONS = ["regions"]


def ensure_indexes(db: Database) -> None:
    outbox.ensure_indexes(db, AGGREGATE_COLLECTIONS)


class RegionRepository:
    def __init__(self, db: Database):
        self.db = db
        self.store = AggregateStore(db.regions, source="")

    @staticmethod
    def to_domain(doc: dict) -> Region:
        return Region(id=doc["_id"], name=doc["name"], country=doc["country"], kind=doc["kind"],
                      municipalities=doc["municipalities"], mandate_policy=doc["mandate_policy"])

    def get_doc(self, region_id: str) -> dict:
        doc = self.db.regions.find_one({"_id": region_id}, {"_outbox": 0})
        if doc is None:
            raise NotFound(f"region {region_id} not found")
        return doc

    def get(self, region_id: str) -> tuple[Region, int]:
        doc = self.get_doc(region_id)
        return self.to_domain(doc), doc["version"]

    def add(self, region: Region, events: list[EventDraft], trace: str | None) -> dict:
        data = region.event_data()
        doc = {"_id": region.id, "region": region.id, **{k: v for k, v in data.items() if k != "region_id"}}
        return self.store.create(doc, events, traceparent=trace)

    def save(self, region: Region, expected_version: int, events: list[EventDraft], trace: str | None) -> dict:
        data = region.event_data()
        changes = {k: v for k, v in data.items() if k != "region_id"}
        return self.store.update(region.id, expected_version, changes, events, region=region.id,
                                 traceparent=trace)

    def history(self, region_id: str) -> list[dict]:
        self.get_doc(region_id)
        return outbox.history(self.db, "regions", region_id)
