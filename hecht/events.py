"""The CloudEvents 1.0 envelope: built, validated and parsed here and nowhere else.

Every event type has a JSON Schema (2020-12) for its ``data`` under
``schemas/events/<type>.v<N>.json``; :func:`validate` checks the envelope and
the data, and producers call it before anything reaches the outbox, so an
event the code emits that breaks its contract fails loudly (and in tests).
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

SPECVERSION = "1.0"
TYPE_PREFIX = "hecht."
SCHEMA_URN = "urn:hecht:schema:events:"
SCHEMAS_DIR = Path(os.environ.get("HECHT_SCHEMAS_DIR", Path(__file__).resolve().parent.parent / "schemas"))
EVENTS_DIR = SCHEMAS_DIR / "events"

_ENVELOPE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["specversion", "id", "source", "type", "subject", "time",
                 "datacontenttype", "dataschema", "region", "sequence", "data"],
    "properties": {
        "specversion": {"const": SPECVERSION},
        "id": {"type": "string", "format": "uuid"},
        "source": {"type": "string", "pattern": "^/regions/[a-z0-9-]+(/[a-z]+)?$"},
        "type": {"type": "string", "pattern": r"^hecht\.[a-z_]+\.[a-z_]+\.v[0-9]+$"},
        "subject": {"type": "string", "minLength": 1},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"const": "application/json"},
        "dataschema": {"type": "string", "pattern": "^urn:hecht:schema:events:"},
        "region": {"type": "string", "minLength": 1},
        "sequence": {"type": "integer", "minimum": 1},
        "traceparent": {"type": "string"},
        "data": {"type": "object"},
    },
}


class InvalidEvent(ValueError):
    """An event that breaks the envelope or its data schema."""


def full_type(short_type: str, version: int = 1) -> str:
    """``member.enrolled`` → ``hecht.member.enrolled.v1``."""
    return f"{TYPE_PREFIX}{short_type}.v{version}"


def short_type(event_type: str) -> str:
    """``hecht.member.enrolled.v1`` → ``member.enrolled`` (what subscriptions match on)."""
    core = event_type[len(TYPE_PREFIX):] if event_type.startswith(TYPE_PREFIX) else event_type
    return core.rsplit(".v", 1)[0]


# Events that never leave the service that made them. An agreement in draft
# is the region's work in progress: its events (``agreement.drafted``, ``agreement.revised``, and
# any other whose ``data.status`` is ``draft``) go into the agreements service's own history, where
# region staff read the timeline, never onto ``hecht.agreements``, a webhook or a replay. The
# event that takes an agreement out of draft (``agreement.mandate_requested``) carries its whole
# state, so a reader of the topic loses nothing; its ``sequence`` counts the internal events too.
INTERNAL_TYPES = frozenset({"agreement.drafted", "agreement.revised"})


def is_internal(event: dict) -> bool:
    """Is this event (an envelope) one that stays inside its service? See ``INTERNAL_TYPES``."""
    short = short_type(str(event.get("type") or ""))
    data = event.get("data")
    return short in INTERNAL_TYPES or (short.startswith("agreement.") and isinstance(data, dict)
                                       and data.get("status") == "draft")


def schema_name(event_type: str) -> str:
    """``hecht.member.enrolled.v1`` → ``member.enrolled.v1`` (file stem and URN tail)."""
    return event_type[len(TYPE_PREFIX):]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build(short: str, *, region: str, subject: str, sequence: int, data: dict,
          source: str, version: int = 1, time: str | None = None,
          traceparent: str | None = None, validate_data: bool = True) -> dict:
    """A complete, validated CloudEvent (structured mode, as a dict)."""
    etype = full_type(short, version)
    event = {
        "specversion": SPECVERSION,
        "id": str(uuid.uuid4()),
        "source": source,
        "type": etype,
        "subject": subject,
        "time": time or now_iso(),
        "datacontenttype": "application/json",
        "dataschema": SCHEMA_URN + schema_name(etype),
        "region": region,
        "sequence": sequence,
        "data": data,
    }
    if traceparent:
        event["traceparent"] = traceparent
    if validate_data:
        validate(event)
    return event


@lru_cache(maxsize=1)
def _registry() -> tuple[Registry, dict[str, dict]]:
    """All schema files, addressable by their ``$id`` (so they can ``$ref`` each other)."""
    schemas: dict[str, dict] = {}
    resources = []
    for path in sorted(EVENTS_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        schemas[path.stem] = doc
        resources.append((doc.get("$id", path.name), Resource.from_contents(doc)))
    return Registry().with_resources(resources), schemas


def known_types() -> set[str]:
    """Full types that have a schema file (``common*`` files hold shared definitions)."""
    return {TYPE_PREFIX + stem for stem in _registry()[1] if not stem.startswith("common")}


@lru_cache(maxsize=1)
def _envelope_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_ENVELOPE_SCHEMA, format_checker=jsonschema.FormatChecker())


@lru_cache(maxsize=None)
def _data_validator(name: str) -> jsonschema.Draft202012Validator | None:
    """Built once per type: ``jsonschema.validate`` re-checks the schema on every call, which
    made validation ~10× slower than the check itself (every write validates its events)."""
    registry, schemas = _registry()
    schema = schemas.get(name)
    if schema is None:
        return None
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=jsonschema.FormatChecker())


def validate(event: dict) -> None:
    e = jsonschema.exceptions.best_match(_envelope_validator().iter_errors(event))
    if e is not None:
        raise InvalidEvent(f"envelope: {e.message} at {list(e.absolute_path)}") from None
    validator = _data_validator(schema_name(event["type"]))
    if validator is None:
        raise InvalidEvent(f"no schema for event type {event['type']} in {EVENTS_DIR}")
    errors = sorted(validator.iter_errors(event["data"]), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise InvalidEvent(f"{event['type']} data: {e.message} at {list(e.absolute_path)}")


def encode(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes) -> dict:
    """Parse a structured-mode CloudEvent; tolerant of unknown attributes, strict on the core."""
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidEvent(f"not JSON: {e}") from None
    if not isinstance(event, dict):
        raise InvalidEvent("not a JSON object")
    for key in ("specversion", "id", "type", "subject", "sequence", "data"):
        if key not in event:
            raise InvalidEvent(f"missing attribute {key!r}")
    if event["specversion"] != SPECVERSION:
        raise InvalidEvent(f"unsupported specversion {event['specversion']!r}")
    if not isinstance(event["sequence"], int) or not isinstance(event["data"], dict):
        raise InvalidEvent("sequence must be an integer and data an object")
    return event


def kafka_headers(event: dict) -> list[tuple[str, bytes]]:
    """CloudEvents Kafka binding, structured mode, plus W3C trace context."""
    headers = [("content-type", b"application/cloudevents+json; charset=UTF-8"),
               ("ce_id", event["id"].encode()), ("ce_type", event["type"].encode())]
    if event.get("traceparent"):
        headers.append(("traceparent", event["traceparent"].encode()))
    return headers
