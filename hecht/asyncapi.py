"""Renders ``schemas/asyncapi.yaml`` (AsyncAPI 3.0) from the event schema files and topics.

Generated rather than hand-written so it cannot drift: a test fails when the
committed file differs from what this renders (run ``hecht asyncapi --write``).
"""
from __future__ import annotations

import json

import yaml

from . import events, topics

# Which topic (and producing service) carries an event type, by its first word.
PRODUCERS = {"region": topics.MEMBERS, "member": topics.MEMBERS, "staff": topics.MEMBERS,
             "agreement": topics.AGREEMENTS, "notification": topics.NOTIFY, "subscription": topics.NOTIFY}
CONSUMERS = {"agreements": [topics.MEMBERS], "notify": [topics.MEMBERS, topics.AGREEMENTS, topics.NOTIFY]}
OUTPUT = events.SCHEMAS_DIR / "asyncapi.yaml"


def _channel_id(topic: str) -> str:
    return topic.replace("hecht.", "").replace(".", "-")


def _message_id(stem: str) -> str:
    return stem.replace(".", "-")


def render() -> dict:
    stems = sorted(p.stem for p in events.EVENTS_DIR.glob("*.json") if not p.stem.startswith("common"))
    channels: dict = {}
    messages: dict = {}
    by_topic: dict[str, list[str]] = {t: [] for t in topics.EVENT_TOPICS}
    for stem in stems:
        topic = PRODUCERS.get(stem.split(".")[0])
        if topic is None:
            raise ValueError(f"no topic for event schema {stem}: add its prefix to PRODUCERS")
        schema = json.loads((events.EVENTS_DIR / f"{stem}.json").read_text())
        mid = _message_id(stem)
        summary = schema.get("description", schema.get("title", stem))
        if events.short_type(stem) in events.INTERNAL_TYPES:
            # A draft's event: kept in its service's history, on no channel (hecht.events.is_internal).
            summary = f"INTERNAL (on no channel). {summary}"
        else:
            by_topic[topic].append(mid)
        messages[mid] = {
            "name": f"hecht.{stem}",
            "title": stem,
            "summary": summary,
            "contentType": "application/cloudevents+json",
            "headers": {"$ref": "#/components/schemas/kafkaHeaders"},
            "payload": {
                "allOf": [{"$ref": "#/components/schemas/cloudEvent"},
                          {"type": "object", "properties": {
                              "type": {"const": f"hecht.{stem}"},
                              "data": {"$ref": f"./events/{stem}.json"}}}]},
            "bindings": {"kafka": {"key": {"type": "string",
                                           "description": "the aggregate id (= CloudEvents subject)"}}},
        }
    for topic in topics.EVENT_TOPICS:
        channels[_channel_id(topic)] = {
            "address": topic,
            "description": f"Events of the {topic.split('.')[1]} service, keyed by aggregate id "
                           "(ordered per aggregate).",
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in by_topic[topic]},
        }
    for group in topics.CONSUMER_GROUPS:
        dlq = topics.dlq_topic(group)
        channels[_channel_id(dlq)] = {
            "address": dlq,
            "description": f"Dead letters of consumer group '{group}': the original record unchanged, "
                           "with dlq-reason, dlq-error-type and dlq-original-* headers.",
            "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
        }
    channels[_channel_id(topics.MEMBER_CONTACTS)] = {
        "address": topics.MEMBER_CONTACTS,
        "description": "INTERNAL, not part of the public contract: compacted, key = member id, the latest "
                       "contact record of each member, written by members (transactional outbox) and "
                       "read by notify only (Kafka ACLs). Erasure writes a tombstone (null value), so "
                       "compaction removes the last copy. Integrators have no access.",
        "messages": {"memberContact": {"$ref": "#/components/messages/memberContact"},
                     "memberContactTombstone": {"$ref": "#/components/messages/memberContactTombstone"}},
    }
    messages["memberContact"] = {
        "name": "memberContact", "title": "A member's contact record (internal)",
        "contentType": "application/json",
        "payload": {"type": "object", "required": ["member_id", "region_id", "email", "language", "sequence"],
                    "properties": {"member_id": {"type": "string"}, "region_id": {"type": "string"},
                                   "email": {"type": "string", "format": "email"},
                                   "language": {"type": ["string", "null"]},
                                   "reason": {"type": "string", "maxLength": 500,
                                              "description": "the rejection reason, while rejected"},
                                   "sequence": {"type": "integer", "description": "the member's version "
                                                "it was written with; an older one is ignored"},
                                   "notice": {
                                       "type": "object", "required": ["id", "kind"],
                                       "description": "an e-mail notify sends the member once per id"
                                                      ": sign_up_confirm (a new sign-up made "
                                                      "without the portal), sign_up_attempt (someone signed "
                                                      "up with the member's address or registration, "
                                                      "via says which); the contact fields are the "
                                                      "member's current ones",
                                       "properties": {"id": {"type": "string"},
                                                      "kind": {"enum": ["sign_up_confirm", "sign_up_attempt"]},
                                                      "via": {"enum": ["email", "registration"]}},
                                       "additionalProperties": False}},
                    "additionalProperties": False},
        "bindings": {"kafka": {"key": {"type": "string", "description": "the member id"}}}}
    messages["memberContactTombstone"] = {
        "name": "memberContactTombstone", "title": "The member was erased: a null value under the key",
        "payload": {"type": "null"},
        "bindings": {"kafka": {"key": {"type": "string", "description": "the member id"}}}}
    messages["deadLetter"] = {"name": "deadLetter", "title": "A record that could not be applied",
                              "payload": {"description": "the original record value, unchanged"}}
    operations: dict = {}
    for topic in topics.EVENT_TOPICS:
        cid = _channel_id(topic)
        operations[f"publish-{cid}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"the {cid} service's relay publishes its outbox",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in by_topic[topic]]}
    contacts = _channel_id(topics.MEMBER_CONTACTS)
    contact_messages = [{"$ref": f"#/channels/{contacts}/messages/{m}"}
                        for m in ("memberContact", "memberContactTombstone")]
    operations[f"publish-{contacts}"] = {
        "action": "send", "channel": {"$ref": f"#/channels/{contacts}"},
        "summary": "the members service's relay publishes the contact records of its outbox",
        "messages": contact_messages}
    operations[f"notify-receives-{contacts}"] = {
        "action": "receive", "channel": {"$ref": f"#/channels/{contacts}"},
        "summary": f"consumer group '{topics.CONTACTS_GROUP}' (notify's address book)",
        "messages": contact_messages}
    for group, consumed in CONSUMERS.items():
        for topic in consumed:
            cid = _channel_id(topic)
            operations[f"{group}-receives-{cid}"] = {
                "action": "receive", "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"consumer group '{group}'",
                "messages": [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in by_topic[topic]]}
        dlq = _channel_id(topics.dlq_topic(group))
        operations[f"{group}-dead-letters"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{dlq}"},
            "messages": [{"$ref": f"#/channels/{dlq}/messages/deadLetter"}]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "hecht events", "version": "1.0.0",
                 "description": "The public event contract of hecht: CloudEvents 1.0 in structured mode "
                                "on Kafka. Additive changes keep a type's version; anything else is a new "
                                ".vN type published side by side during a deprecation window. Member "
                                "events carry no personal data and no free text; hecht.members.contacts "
                                "is internal (notify only). Agreements in draft are internal too: "
                                "their events (agreement.drafted, agreement.revised) are on no channel, "
                                "an agreement's first event on hecht.agreements is "
                                "agreement.mandate_requested with its full state, and its sequence "
                                "counts the draft's events (it may start above 1)."},
        "defaultContentType": "application/cloudevents+json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka",
                              "description": "the local development broker (make run)"}},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {
                "kafkaHeaders": {"type": "object", "properties": {
                    "content-type": {"const": "application/cloudevents+json; charset=UTF-8"},
                    "ce_id": {"type": "string"}, "ce_type": {"type": "string"},
                    "traceparent": {"type": "string", "description": "W3C trace context"}}},
                "cloudEvent": {"type": "object",
                               "required": ["specversion", "id", "source", "type", "subject", "time",
                                            "datacontenttype", "dataschema", "region", "sequence", "data"],
                               "properties": {k: v for k, v in events._ENVELOPE_SCHEMA["properties"].items()
                                              if k != "data"}},
            },
        },
    }


def dump() -> str:
    header = "# Generated by `hecht asyncapi --write` from schemas/events/ and hecht/topics.py; do not edit.\n"
    return header + yaml.safe_dump(render(), sort_keys=False, allow_unicode=True, width=100)


def main(write: bool) -> int:
    text = dump()
    if write:
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT}")
    else:
        print(text, end="")
    return 0
