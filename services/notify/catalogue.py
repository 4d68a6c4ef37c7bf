"""The event catalogue for integrators: every event type a subscription can receive, with its
description, the JSON Schema of its ``data`` and an example payload.

Generated at start-up from ``schemas/events/*.json`` (the same files producers validate
against) and the AsyncAPI document (which topic carries the type). The examples are built
from the schemas themselves by a small deterministic generator (``example``): it follows
``$ref``/``allOf``/``anyOf``/``oneOf``, ``const``, ``enum``, formats and the few patterns the
schemas use, fills every declared property, and the result is then redacted as deliveries are
(no ``personal`` object, no contact data) and validated against the schema: a schema the
generator cannot satisfy fails loudly in the tests, not silently in the portal.
"""
from __future__ import annotations

import copy
import re
from functools import lru_cache

import jsonschema
import yaml

from hecht import events as ev

from . import domain

# Kinds no subscription ever receives (notify ignores staff accounts); a draft's events
# (hecht.events.INTERNAL_TYPES) never leave the agreements service.
NOT_DELIVERED = ("staff.", "common", *(f"{t}.v" for t in sorted(ev.INTERNAL_TYPES)))

# Values for the string patterns the schemas use; tried in order, the first that matches wins.
_PATTERN_SAMPLES = ("elz-gent", "agreement_activated", "v1", "s_0190a1b2c3d4", "0190a1b2c3d4")
_FORMATS = {"date-time": "2026-03-12T09:30:00Z", "date": "2026-04-01", "uuid": "0190a1b2-c3d4-7e5f-8a7b-8c9d0e1f2a3b",
            "email": "info@example.org", "uri": "https://example.org"}
# Friendlier values for properties a bare string would make meaningless.
_NAMED = {"member_id": "m_0190a1b2c3d4e5", "agreement_id": "a_0190a1b2c3d4e5", "region_id": "elz-gent",
          "subscription_id": "sub_0190a1b2c3d4e5", "notification_id": "ntf_0190a1b2c3d4e5",
          "name": "ELZ Gent", "title": "Zorgpad diabetes", "municipality": "Gent", "reason": "at the member's request",
          "cause_event_id": "0190a1b2-c3d4-7e5f-8a7b-8c9d0e1f2a3b", "template": "agreement_activated",
          "kind": "eerstelijnszone", "theme": "chronic-care", "message": "test event from hecht"}


def _resolver():
    registry, _ = ev._registry()
    return registry


def _resolve(schema: dict, base: str) -> tuple[dict, str]:
    ref = schema["$ref"]
    target_uri = ref if ref.startswith("urn:") else (base.split("#")[0] + ref if ref.startswith("#") else ref)
    resolved = _resolver().resolver(base_uri=base.split("#")[0]).lookup(target_uri)
    return resolved.contents, target_uri.split("#")[0]


def _merge(schema: dict, base: str) -> tuple[dict, str]:
    """A schema with its ``$ref`` and ``allOf`` folded in (siblings win: they narrow the target)."""
    out: dict = {}
    if "$ref" in schema:
        target, tbase = _resolve(schema, base)
        target, tbase = _merge(target, tbase)
        out.update(copy.deepcopy(target))
        base = tbase
    for part in schema.get("allOf", []):
        sub, _ = _merge(part, base)
        for k, v in sub.items():
            if k == "properties":
                out.setdefault("properties", {}).update(v)
            elif k == "required":
                out["required"] = sorted(set(out.get("required", [])) | set(v))
            else:
                out[k] = v
    for k, v in schema.items():
        if k in ("$ref", "allOf"):
            continue
        if k == "properties":
            props = out.setdefault("properties", {})
            for name, sub in v.items():
                props[name] = dict(props.get(name, {}), **sub) if isinstance(sub, dict) else sub
                if isinstance(sub, dict) and "$ref" not in sub and "$ref" in props[name] and len(sub) > 0:
                    # a sibling override (e.g. {"const": "draft"}) replaces the referenced definition
                    props[name] = dict(sub)
        elif k == "required":
            out["required"] = sorted(set(out.get("required", [])) | set(v))
        else:
            out[k] = v
    return out, base


def example(schema: dict, base: str, name: str = "", depth: int = 0):
    """A value that satisfies ``schema`` (best effort; callers validate it)."""
    if depth > 12:
        return None
    schema, base = _merge(schema, base)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            rest = {k: v for k, v in schema.items() if k != key}
            return example({"allOf": [rest, options[0]]}, base, name, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ is None:
        typ = "object" if "properties" in schema else "string"
    if typ == "null":
        return None
    if typ == "object":
        props = schema.get("properties", {})
        return {k: example(v, base, k, depth + 1) for k, v in props.items()}
    if typ == "array":
        n = min(max(1, schema.get("minItems", 1)), schema.get("maxItems", 1))
        item = schema.get("items", {"type": "string"})
        return [example(item, base, _singular(name), depth + 1) for _ in range(n)]
    if typ == "boolean":
        return True
    if typ in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        hi = schema.get("maximum")
        value = lo + (1 if "exclusiveMinimum" in schema or typ == "integer" and lo == 0 else 0)
        if typ == "number" and hi is not None and hi <= 1:
            value = 0.5 if lo < 0.5 else hi
        if hi is not None:
            value = min(value, hi)
        return int(value) if typ == "integer" else float(value)
    if "format" in schema and schema["format"] in _FORMATS:
        return _FORMATS[schema["format"]]
    if "pattern" in schema:
        for candidate in ((_NAMED[name],) if name in _NAMED else ()) + _PATTERN_SAMPLES:
            if re.search(schema["pattern"], candidate):
                return candidate
    value = _NAMED.get(name, name or "text")
    return value[: schema.get("maxLength", len(value))]


def _singular(name: str) -> str:
    return name[:-3] + "y" if name.endswith("ies") else name.rstrip("s")


def _topic_of(stem: str) -> str | None:
    from hecht.asyncapi import PRODUCERS
    return PRODUCERS.get(stem.split(".")[0])


@lru_cache(maxsize=1)
def _asyncapi_summaries() -> dict[str, str]:
    try:
        doc = yaml.safe_load((ev.SCHEMAS_DIR / "asyncapi.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return {m.get("title"): m.get("summary", "") for m in (doc.get("components", {}).get("messages") or {}).values()
            if isinstance(m, dict)}


@lru_cache(maxsize=1)
def catalogue() -> list[dict]:
    """[{type, full_type, topic, description, schema, example}] for every deliverable type."""
    registry, schemas = ev._registry()
    summaries = _asyncapi_summaries()
    out = []
    for stem, schema in sorted(schemas.items()):
        if stem.startswith(NOT_DELIVERED):
            continue
        short = ev.short_type(ev.TYPE_PREFIX + stem)
        raw = {"type": ev.TYPE_PREFIX + stem, "data": example(schema, schema.get("$id", stem))}
        data = _repaired(schema, domain.redact(raw)["data"])
        out.append({"type": short, "full_type": ev.TYPE_PREFIX + stem, "version": int(stem.rsplit(".v", 1)[1]),
                    "topic": _topic_of(stem) if short != domain.PING_TYPE else None,
                    "description": summaries.get(stem) or schema.get("description", ""),
                    "schema": bundled(schema), "example": data})
    return out


def _external_refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            found.add(ref.split("#")[0])
        for v in node.values():
            _external_refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _external_refs(v, found)


def bundled(schema: dict) -> dict:
    """The schema as one self-contained document (JSON Schema 2020-12 bundling, §9.3): every
    schema file it refers to, directly or through another, is embedded under ``$defs`` with its
    own ``$id``, so the ``$ref``s resolve inside the document and an integrator (or the portal)
    sees the whole contract without fetching our ``urn:`` identifiers, which no server serves."""
    registry, _ = ev._registry()
    own = schema.get("$id", "")
    pending, seen = set(), {own}
    _external_refs(schema, pending)
    embedded: dict[str, dict] = {}
    while pending:
        uri = pending.pop()
        if uri in seen:
            continue
        seen.add(uri)
        target = copy.deepcopy(registry.get_or_retrieve(uri).value.contents)
        embedded[uri.rsplit(":", 1)[-1]] = target
        _external_refs(target, pending)
    if not embedded:
        return schema
    out = copy.deepcopy(schema)
    out.setdefault("$defs", {}).update({k: v for k, v in sorted(embedded.items()) if k not in out["$defs"]})
    return out


def _set(doc, path: list, value):
    if not path:
        return value
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return doc


def _repaired(schema: dict, data):
    """Fix what the generator cannot see (``if``/``then`` branches, narrowing siblings): each
    round takes the validator's errors and sets the value it asks for (a ``const``, the first of
    an ``enum``, null, a missing required property), until the example validates."""
    validator = jsonschema.Draft202012Validator(schema, registry=_resolver(), format_checker=jsonschema.FormatChecker())
    for _ in range(50):
        errors = sorted(validator.iter_errors(data), key=lambda e: -len(e.absolute_path))
        if not errors:
            return data
        e = errors[0]
        path = list(e.absolute_path)
        if e.validator == "const":
            data = _set(data, path, e.validator_value)
        elif e.validator == "enum":
            data = _set(data, path, e.validator_value[0])
        elif e.validator == "type" and e.validator_value == "null":
            data = _set(data, path, None)
        elif e.validator == "required":
            missing = re.match(r"'([^']+)' is a required property", e.message)
            sub = e.schema.get("properties", {}).get(missing.group(1), {}) if missing else {}
            if not missing:
                return data
            e.instance[missing.group(1)] = example(sub, schema.get("$id", ""), missing.group(1)) \
                if sub else _FORMATS["date-time"]
        else:
            return data
    return data


def validate_example(entry: dict) -> list[str]:
    """The schema's complaints about the entry's example (empty when it validates)."""
    validator = jsonschema.Draft202012Validator(entry["schema"], registry=_resolver(),
                                                format_checker=jsonschema.FormatChecker())
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(entry["example"])]
