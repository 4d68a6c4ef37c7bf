"""The data fields each webhook event type carries (issue 17), generated from the event schemas
minus what notify leaves out (``services.notify.domain.redact``: ``personal``, contact keys and
each type's staff free text, ``STAFF_TEXT_FIELDS``).

``python -m tests.contracts.test_webhook_fields`` prints the table for the README's "Personal
data" section. The tests pin the member events exactly (no personal data, no free text) and
check that no type offers a personal or free-text field to integrators.
"""
from __future__ import annotations

from hecht import events as ev
from services.notify import domain

MEMBER_FIELDS = ("capacity", "category", "member_id", "municipality", "region_id", "roles", "status", "verified_at")
# Names that would be personal data or staff free text in a payload.
FORBIDDEN = {"personal", "given_name", "family_name", "name_of_member", "email", "phone", "mobile", "language",
             "note", "notes", "comment", "error", "address", "registration"}
# Free text an integrator does receive, and why it is not personal: written by hecht itself.
ALLOWED_TEXT = {("subscription.disabled", "reason"): "why hecht disabled the integrator's own subscription"}


def _node(ref: str, doc: dict) -> tuple[dict, dict]:
    """The schema node a ``$ref`` points at, and the document it is in."""
    urn, _, fragment = ref.partition("#")
    target = ev._registry()[1][urn.replace(ev.SCHEMA_URN, "")] if urn else doc
    node = target
    for part in (p for p in fragment.split("/") if p):
        node = node[part]
    return node, target


def _properties(node: dict, doc: dict) -> dict:
    props: dict = {}
    if "$ref" in node:
        props.update(_properties(*_node(node["$ref"], doc)))
    for sub in node.get("allOf", []):
        props.update(_properties(sub, doc))
    for key, value in node.get("properties", {}).items():
        if value is False:
            props.pop(key, None)   # the type forbids it
        else:
            props.setdefault(key, value)
    return props


def webhook_fields(short_type: str) -> tuple[str, ...]:
    """The top-level ``data`` fields a subscriber of ``short_type`` can receive."""
    schema = ev._registry()[1][f"{short_type}.v1"]
    dropped = {p for p in domain.staff_text_fields(short_type) if "." not in p} | {"personal"}
    return tuple(sorted(k for k in _properties(schema, schema)
                        if k not in dropped and not domain._CONTACT_KEY.search(k)))


def markdown_table() -> str:
    rows = ["| webhook event type | data fields | left out (personal / staff free text) |", "|---|---|---|"]
    for t in sorted(domain.EVENT_TYPES):
        left_out = ", ".join(f"`{f}`" for f in domain.staff_text_fields(t)) or "–"
        rows.append(f"| `{t}` | {', '.join(f'`{f}`' for f in webhook_fields(t))} | {left_out} |")
    return "\n".join(rows)


def test_every_subscribable_type_has_a_schema_and_a_field_list():
    for t in domain.EVENT_TYPES:
        assert webhook_fields(t), t


def test_member_events_carry_ids_statuses_municipality_roles_only():
    for t in (t for t in domain.EVENT_TYPES if t.startswith("member.")):
        assert webhook_fields(t) == MEMBER_FIELDS, t


def test_no_type_offers_personal_data_or_staff_free_text_to_integrators():
    for t in domain.EVENT_TYPES:
        for name in webhook_fields(t):
            assert name not in FORBIDDEN, (t, name)
            if name == "reason" or name.endswith("_reason"):
                assert (t, name) in ALLOWED_TEXT, (t, name)


def test_the_staff_free_text_of_each_type_is_really_left_out_of_the_payload():
    samples = {"agreement.terminated": {"agreement_id": "a", "reason": "internal"},
               "notification.failed": {"notification_id": "n", "error": "550 x@y.be"},
               "member.rejected": {"member_id": "m", "reason": "x", "capacity": {"status": "open", "note": "n"}}}
    for t, data in samples.items():
        out = domain.redact({"type": ev.full_type(t), "data": data})["data"]
        for path in domain.staff_text_fields(t):
            *parents, leaf = path.split(".")
            holder = out
            for p in parents:
                holder = holder.get(p, {})
            assert leaf not in holder, (t, path)


if __name__ == "__main__":
    print(markdown_table())
