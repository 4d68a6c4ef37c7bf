"""GDPR erasure against the real stack: no personal data left in ANY collection of the members database,
and none on hecht.members at any time (contact details go to the compacted hecht.members.contacts,
where erasure leaves a tombstone)."""
from __future__ import annotations

import json

import pytest

from hecht import events as ev, outbox, topics
from hecht.config import settings
from services.members.worker import relay as members_relay
from tests.conftest import bearer
from tests.support.members import members_client, members_db as db

GENT = {"id": "elz-gent", "name": "ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
        "municipalities": ["Gent", "Merelbeke"]}
ADMIN = bearer("region-admin", "elz-gent")
# Distinctive values, so finding one anywhere can only mean a leak.
PERSONAL = {"given_name": "Xanthippe", "family_name": "Qwertyzoon", "email": "xanthippe.qz@praktijk-qz.be",
            "practice": "Praktijk Zonnebloem-Qz", "note": "alleen-familieleden-qz", "registration": "10829059003",
            "new_email": "later.qz@praktijk-qz.be"}
FORM = {"given_name": PERSONAL["given_name"], "family_name": PERSONAL["family_name"], "email": PERSONAL["email"],
        "language": "nl", "registration": {"scheme": "RIZIV", "number": PERSONAL["registration"]},
        "practice": {"name": PERSONAL["practice"], "postcode": "9000", "municipality": "Gent"}}


@pytest.fixture
def client(hecht_env, monkeypatch):
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "1000")
    return members_client(GENT)


def _text(value) -> str:
    """A document as searchable text (bytes, e.g. stored idempotent replies, decoded)."""
    def default(o):
        return o.decode("utf-8", "replace") if isinstance(o, bytes) else str(o)
    return json.dumps(value, default=default, ensure_ascii=False).casefold()


def leaks() -> list[tuple[str, str]]:
    """(collection, value) for every personal value found in every document of every collection."""
    found = []
    for name in db().list_collection_names():
        for doc in db()[name].find():
            text = _text(doc)
            found += [(name, v) for v in PERSONAL.values() if v.casefold() in text]
    return found


def contacts_topic() -> str:
    return settings("members").topic(topics.MEMBER_CONTACTS)


def test_the_scan_finds_personal_data_where_it_is(client):
    """The detector itself: before erasure the data is there, in several collections; the
    event archive (the history) never holds any."""
    m = client.post("/v1/regions/elz-gent/members", json=FORM, headers=ADMIN).json["id"]
    assert "outbox" in {name for name, _ in leaks()}   # the contact record, waiting for the relay
    client.post(f"/v1/regions/elz-gent/members/{m}/approve", headers={**ADMIN, "Idempotency-Key": "k1"})
    members_relay(settings("members"), db()).run_once()
    where = {name for name, _ in leaks()}
    assert {"members", "idempotency"} <= where
    assert "events" not in where and "outbox" not in where


def test_erasure_leaves_a_tombstone_and_no_personal_data_anywhere(client, topic_reader):
    m = client.post("/v1/regions/elz-gent/members", json=FORM,
                    headers={**ADMIN, "Idempotency-Key": "signup-qz"}).json["id"]
    base = f"/v1/regions/elz-gent/members/{m}"
    # a stored idempotent reply that carries the member's personal data
    assert client.post(f"{base}/approve", headers={**ADMIN, "Idempotency-Key": "approve-qz"}).status_code == 200
    assert client.put(f"{base}/capacity", json={"status": "closed", "note": PERSONAL["note"]},
                      headers=ADMIN).status_code == 200
    relay = members_relay(settings("members"), db())
    # region + signed_up, its contact record, enrolled, capacity_changed: published (events archived)
    assert relay.run_once() == 5
    # one more change still waiting in the outbox when the erasure comes
    assert client.patch(base, json={"email": PERSONAL["new_email"]}, headers=bearer("gp", "elz-gent", m)).status_code == 200
    assert outbox.pending(db(), m)

    r = client.delete(base, headers=bearer("gp", "elz-gent", m))
    assert r.status_code == 200
    assert leaks() == []
    tombstone = client.get(base, headers=ADMIN)
    assert tombstone.status_code == 200
    assert {k: v for k, v in tombstone.json.items() if v not in (None, [])}.keys() == \
        {"id", "region_id", "status", "version", "updated_at"}
    assert tombstone.json["status"] == "erased" and tombstone.json["id"] == m
    stored = db().members.find_one({"_id": m})
    for field in ("given_name", "family_name", "email", "registration", "practice", "capacity", "category",
                  "language", "signed_up_at"):
        assert field not in stored
    history = client.get(f"{base}/history", headers=ADMIN).json["items"]
    assert [ev.short_type(e["type"]) for e in history] == [
        "member.signed_up", "member.enrolled", "member.capacity_changed", "member.profile_updated", "member.erased"]
    assert not any(k in e["data"] for e in history for k in ("personal", "language", "reason"))
    # an idempotent retry of the approval cannot replay the old personal data either
    assert client.post(f"{base}/approve", headers={**ADMIN, "Idempotency-Key": "approve-qz"}).status_code == 409

    # the profile update and the erasure; the new address's contact record was dropped (the
    # erasure's tombstone supersedes it), the tombstone goes out
    assert relay.run_once() == 3
    relay.close()
    assert leaks() == []
    records = topic_reader(settings("members").topic(topics.MEMBERS), until=lambda r: len(r) >= 6)
    published = [ev.decode(r.value) for r in records if r.key == m.encode()]
    for e in published:
        ev.validate(e)
    assert [e["sequence"] for e in published] == [1, 2, 3, 4, 5]
    assert ev.short_type(published[4]["type"]) == "member.erased"
    # hecht.members never carried anything personal, before the erasure or after
    text = _text([r.value for r in records])
    assert not [v for v in PERSONAL.values() if v.casefold() in text]
    # the contacts topic: the sign-up's record, then the tombstone (compaction removes both)
    contacts = topic_reader(contacts_topic(), until=lambda r: any(x.value is None for x in r))
    mine = [r for r in contacts if r.key == m.encode()]
    assert json.loads(mine[0].value)["email"] == PERSONAL["email"] and mine[-1].value is None
    assert PERSONAL["new_email"] not in _text([r.value for r in contacts])

    # the email and registration are free again: the GP may sign up anew
    again = client.post("/v1/regions/elz-gent/members", json=FORM, headers=ADMIN)
    assert again.status_code == 201 and again.json["id"] != m


def test_a_region_admin_erases_a_member_in_any_state(client):
    for i, steps in enumerate(([], ["approve"], ["approve", "suspend"], ["approve", "leave"], ["reject"])):
        n6 = 108100 + i
        form = dict(FORM, email=f"member{i}-qz@praktijk-qz.be",
                    registration={"scheme": "RIZIV", "number": f"{n6}{97 - n6 % 97:02d}003"})
        r = client.post("/v1/regions/elz-gent/members", json=form, headers=ADMIN)
        assert r.status_code == 201, r.json
        m = r.json["id"]
        for step in steps:
            assert client.post(f"/v1/regions/elz-gent/members/{m}/{step}", json={"reason": "x"},
                               headers=ADMIN).status_code == 200
        assert client.delete(f"/v1/regions/elz-gent/members/{m}", headers=ADMIN).json["status"] == "erased"
    assert leaks() == []
    assert db().members.count_documents({"status": "erased"}) == 5


def _raw_outbox(m: str) -> list[dict]:
    """What a relay pass reads: the subject's outbox entries, events and keyed records."""
    return list(db()[outbox.OUTBOX].find({"subject": m}).sort(outbox.SUBJECT_ORDER))


def test_a_relay_pass_racing_an_erasure_publishes_and_archives_nothing_personal(client, topic_reader):
    """The relay read the outbox just before the erasure; what it then writes is redacted, and the
    contact record it had in hand goes out as a tombstone."""
    m = client.post("/v1/regions/elz-gent/members", json=FORM, headers=ADMIN).json["id"]
    relay = members_relay(settings("members"), db())
    read_before = _raw_outbox(m)  # what a relay pass had in hand
    [contact] = [e for e in read_before if outbox.is_record(e)]
    assert contact[outbox.RECORD_VALUE]["email"] == PERSONAL["email"]
    assert client.delete(f"/v1/regions/elz-gent/members/{m}", headers=ADMIN).status_code == 200
    events = [e for e in read_before if not outbox.is_record(e)]
    relay._publish([outbox.envelope(e) for e in events])
    relay._publish_records([contact])
    relay._archive(events)
    relay.close()
    assert leaks() == []
    records = topic_reader(settings("members").topic(topics.MEMBERS), until=lambda r: any(x.key == m.encode()
                                                                                          for x in r))
    sent = [ev.decode(r.value) for r in records if r.key == m.encode()]
    assert sent and all("personal" not in e["data"] for e in sent)
    contacts = topic_reader(contacts_topic(), until=lambda r: any(x.key == m.encode() for x in r))
    assert [r.value for r in contacts if r.key == m.encode()] == [None]


def test_a_contact_published_while_its_member_is_erased_is_followed_by_a_tombstone(client, topic_reader):
    """The check before publishing saw the member alive; the erasure committed before the send
    ended: the relay publishes one more tombstone, so the key's latest value is the tombstone."""
    m = client.post("/v1/regions/elz-gent/members", json=FORM, headers=ADMIN).json["id"]
    relay = members_relay(settings("members"), db())
    [contact] = [e for e in _raw_outbox(m) if outbox.is_record(e)]
    checks = []

    def erased_ids(subjects):   # the first check runs before the erasure, the second after it
        checks.append(set(subjects))
        if len(checks) == 1:
            return set()
        return type(relay)._erased_ids(relay, subjects)
    relay._erased_ids = erased_ids
    assert client.delete(f"/v1/regions/elz-gent/members/{m}", headers=ADMIN).status_code == 200
    relay._publish_records([contact])
    relay.close()
    contacts = topic_reader(contacts_topic(), until=lambda r: len([x for x in r if x.key == m.encode()]) >= 2)
    values = [r.value for r in contacts if r.key == m.encode()]
    assert json.loads(values[0])["email"] == PERSONAL["email"] and values[-1] is None
    assert leaks() == []


def test_staff_free_text_is_length_limited(client):
    m = client.post("/v1/regions/elz-gent/members", json=FORM, headers=ADMIN).json["id"]
    base = f"/v1/regions/elz-gent/members/{m}"
    r = client.post(f"{base}/reject", json={"reason": "x" * 501}, headers=ADMIN)
    assert r.status_code == 422 and "reason" in r.get_data(as_text=True)
    assert client.post(f"{base}/approve", headers=ADMIN).status_code == 200
    r = client.put(f"{base}/capacity", json={"status": "closed", "note": "n" * 501}, headers=ADMIN)
    assert r.status_code == 422 and "note" in r.get_data(as_text=True)
    assert client.put(f"{base}/capacity", json={"status": "closed", "note": "n" * 500},
                      headers=ADMIN).status_code == 200
