"""The event contract documents: AsyncAPI valid, complete and up to date; schemas well-formed."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

from hecht import asyncapi, events, topics

SCHEMAS = Path(events.SCHEMAS_DIR)


def load_doc() -> dict:
    return yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())


def test_asyncapi_document_is_valid_against_the_official_3_0_schema():
    official = json.loads((SCHEMAS / "vendor" / "asyncapi-3.0.0.schema.json").read_text())
    errors = list(jsonschema.Draft7Validator(official).iter_errors(load_doc()))
    assert errors == [], [e.message[:200] for e in errors[:3]]


def test_committed_asyncapi_matches_the_schemas_and_topics():
    assert (SCHEMAS / "asyncapi.yaml").read_text() == asyncapi.dump(), \
        "schemas/asyncapi.yaml is stale: run `hecht asyncapi --write`"


def test_every_event_schema_is_referenced_and_every_reference_exists():
    text = (SCHEMAS / "asyncapi.yaml").read_text()
    referenced = set(re.findall(r"\./events/([\w.]+)\.json", text))
    files = {p.stem for p in (SCHEMAS / "events").glob("*.json") if not p.stem.startswith("common")}
    assert referenced == files
    assert all((SCHEMAS / "events" / f"{stem}.json").exists() for stem in referenced)


def test_channels_are_exactly_the_topics_the_code_uses():
    addresses = {c["address"] for c in load_doc()["channels"].values()}
    assert addresses == set(topics.ALL_TOPICS)


def test_event_schemas_are_valid_2020_12_with_matching_ids():
    for path in (SCHEMAS / "events").glob("*.json"):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"urn:hecht:schema:events:{path.stem}", path.name


def test_the_envelope_rejects_an_event_without_a_schema():
    event = events.build("region.registered", region="r1", subject="r1", sequence=1, source="/regions/r1",
                         data={"region_id": "r1", "name": "R", "country": "NL", "kind": "zorggroep",
                               "municipalities": ["Delft"],
                               "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5,
                                                  "voting_period_days": 7}})
    event["type"] = "hecht.region.vanished.v1"
    try:
        events.validate(event)
    except events.InvalidEvent as e:
        assert "no schema" in str(e)
    else:
        raise AssertionError("an event type without a schema must be refused")


def test_a_drafts_event_types_are_internal_on_no_channel_and_not_subscribable():
    """Issue 22: drafts never leave the agreements service. Every type whose schema fixes
    ``status: draft`` is internal (hecht.events.INTERNAL_TYPES), so a new draft-only type cannot
    slip onto the topic; the AsyncAPI document lists them on no channel, marked INTERNAL; notify
    neither offers nor accepts them."""
    from services.notify import domain
    schemas = events._registry()[1]
    draft_only = {events.short_type(stem) for stem, s in schemas.items()
                  if (s.get("properties", {}).get("status") or {}).get("const") == "draft"}
    assert draft_only == set(events.INTERNAL_TYPES) == {"agreement.drafted", "agreement.revised"}
    doc = load_doc()
    on_channels = {m for c in doc["channels"].values() for m in c.get("messages", {})}
    for short in events.INTERNAL_TYPES:
        mid = f"{short.replace('.', '-')}-v1"
        assert mid not in on_channels, mid
        assert doc["components"]["messages"][mid]["summary"].startswith("INTERNAL"), mid
        assert short not in domain.EVENT_TYPES
    assert {"agreement-mandate_requested-v1", "agreement-signed-v1"} <= on_channels
