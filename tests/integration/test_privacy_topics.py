"""Issue 17, personal data off the shared topics, against the real stack.

After an erasure an independent Kafka client reads every topic of the broker from its beginning
to its end: the person's name and address are found nowhere but under their key of the compacted
``hecht.members.contacts``, whose latest value there is the tombstone. Notify's address book
follows that topic (the tombstone drops the address; an older record read again cannot bring it
back), and an e-mail whose contact record is still on its way waits for it instead of being lost.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from hecht import outbox, topics
from hecht.config import settings
from services.members.worker import relay as members_relay
from tests.conftest import bearer, wait_until
from tests.support.members import members_client, members_db
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    build, fast, mails_to, member_data, notify_db, notify_worker)

REGION = "elz-gent"
GENT = {"id": REGION, "name": "ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
        "municipalities": ["Gent", "Merelbeke"]}
ADMIN = bearer("region-admin", REGION)
# Distinctive values: finding one anywhere can only be this person's data (the address is new on
# every run: the stack's mail directory outlives the tests).
RUN = uuid.uuid4().hex[:8]
NAME = ("Zebulona", "Vrijthoff-Qx")
EMAIL = f"zebulona.vq.{RUN}@praktijk-vq.be"
NOTE = "alleen-na-overleg-vq"
FORM = {"given_name": NAME[0], "family_name": NAME[1], "email": EMAIL, "language": "nl",
        "registration": {"scheme": "RIZIV", "number": "10829059003"},
        "practice": {"name": "Praktijk Vq", "postcode": "9000", "municipality": "Gent"}}


@pytest.fixture
def members(fast, monkeypatch):
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "1000")
    return members_client(GENT)


class MembersRelay:
    """The members worker's relay in a thread, as ``hecht worker members`` runs it."""

    def __init__(self):
        self.stop = threading.Event()
        self.relay = members_relay(settings("members"), members_db())
        self.thread = threading.Thread(target=self.relay.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=20)


@pytest.fixture
def running_members_relay(members):
    r = MembersRelay()
    yield r
    r.close()


def read_every_topic(bootstrap: str, timeout: float = 60.0) -> list:
    """Every record of every topic the broker lists (internal ones included), from the beginning
    to the end offsets of the moment the read starts; with a client of its own (no group)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="privacy-scan")
    try:
        names = sorted(admin.list_topics())
    finally:
        admin.close()
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                           client_id="privacy-scan")
    try:
        tps = [TopicPartition(t, p) for t in names for p in sorted(reader.partitions_for_topic(t) or ())]
        ends = reader.end_offsets(tps)
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        records: list = []
        deadline = time.monotonic() + timeout
        while any(reader.position(tp) < ends[tp] for tp in tps if ends[tp]):
            assert time.monotonic() < deadline, "the scan did not reach the end of every topic"
            for batch in reader.poll(timeout_ms=500, max_records=5000).values():
                records.extend(batch)
        return [r for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)]]
    finally:
        reader.close()


def _text(record) -> str:
    parts = [record.key or b"", record.value or b""] + [v or b"" for _, v in (record.headers or [])]
    return " ".join(p.decode("utf-8", "replace") for p in parts).casefold()


def test_after_an_erasure_every_topic_is_free_of_the_person_but_a_tombstoned_key(
        members, running_members_relay, notify_worker, stack):
    notify_worker("consumer", "contacts", "mailer", "relay")
    m = members.post(f"/v1/regions/{REGION}/members", json=FORM, headers=ADMIN).json["id"]
    base = f"/v1/regions/{REGION}/members/{m}"
    assert members.post(f"{base}/approve", headers=ADMIN).status_code == 200
    assert members.put(f"{base}/capacity", json={"status": "limited", "note": NOTE}, headers=ADMIN).status_code == 200
    # the whole way: notify learnt the address from the contacts topic and sent the welcome
    [welcome] = wait_until(lambda: mails_to(EMAIL), timeout=60, message="the enrolment e-mail")
    assert welcome["To"] == EMAIL

    assert members.delete(base, headers=ADMIN).status_code == 200
    book = notify_db().address_book
    entry = wait_until(lambda: (e := book.find_one({"_id": m})) and e.get("status") == "erased"
                       and e.get("contact_erased") and e, timeout=60, message="notify forgot the member")
    assert "email" not in entry and "language" not in entry
    wait_until(lambda: not members_db()[outbox.OUTBOX].count_documents({})
               and not notify_db()[outbox.OUTBOX].count_documents({}), timeout=30, message="both outboxes relayed")

    records = read_every_topic(stack["kafka"])
    prefix = settings("members").topic_prefix
    assert {prefix + t for t in (topics.MEMBERS, topics.MEMBER_CONTACTS)} <= {r.topic for r in records}
    needles = [n.casefold() for n in (*NAME, EMAIL, NOTE)]
    hits = [r for r in records if any(n in _text(r) for n in needles)]
    contacts = prefix + topics.MEMBER_CONTACTS
    assert hits, "the scan cannot see the contact record published before the erasure"
    assert {(r.topic, r.key) for r in hits} == {(contacts, m.encode())}
    # ... and only in records superseded by the tombstone: the key's latest value is null
    under_key = sorted((r for r in records if r.topic == contacts and r.key == m.encode()), key=lambda r: r.offset)
    assert under_key[-1].value is None
    assert all(r.offset < under_key[-1].offset for r in hits)
    # the members topic carried the member's whole life, nothing personal at any point
    member_events = [json.loads(r.value) for r in records if r.topic == prefix + topics.MEMBERS
                     and r.key == m.encode()]
    assert [e["type"].split(".")[2] for e in member_events] == ["signed_up", "enrolled", "capacity_changed",
                                                                 "erased"]


def test_the_contacts_topic_is_created_compacted(members, stack):
    from kafka.admin import ConfigResource, ConfigResourceType
    admin = KafkaAdminClient(bootstrap_servers=stack["kafka"], client_id="privacy-config")
    try:
        name = settings("members").topic(topics.MEMBER_CONTACTS)
        response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        admin.close()
    # {resource type: {name: {key: {value, ...}}}} (kafka-python 3)
    [by_name] = response.values()
    configs = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in by_name[name].items()}
    assert configs["cleanup.policy"] == "compact", configs
    for key, value in topics.COMPACTED_CONFIG.items():
        assert configs[key] == value, key


def test_the_address_book_follows_the_contacts_topic_and_drops_the_address_on_the_tombstone(members):
    from services.notify.contacts import ContactsConsumer
    reader = ContactsConsumer(settings("notify"), notify_db())
    relay = members_relay(settings("members"), members_db())
    try:
        m = members.post(f"/v1/regions/{REGION}/members", json=FORM, headers=ADMIN).json["id"]
        relay.run_once()
        book = notify_db().address_book
        wait_until(lambda: reader.poll_once() or (book.find_one({"_id": m}) or {}).get("email"),
                   message="the contact record")
        assert book.find_one({"_id": m})["email"] == EMAIL
        assert members.delete(f"/v1/regions/{REGION}/members/{m}", headers=ADMIN).status_code == 200
        relay.run_once()
        wait_until(lambda: reader.poll_once() or "email" not in book.find_one({"_id": m}),
                   message="the tombstone")
        entry = book.find_one({"_id": m})
        assert entry["contact_erased"] and "language" not in entry
        # the record published before the tombstone, read again (a consumer restarting from an
        # older offset, or before compaction ran): it cannot bring the address back
        old = json.dumps({"member_id": m, "region_id": REGION, "email": EMAIL, "language": "nl",
                          "sequence": 1}).encode()
        assert reader.apply(m.encode(), old) == "ignored"
        assert "email" not in book.find_one({"_id": m})
    finally:
        reader.close()
        relay.close()


def _claim_and_send(sender) -> None:
    """One pass of the mail sender over whatever is due (leases included)."""
    sender.run_once()


def test_an_email_whose_contact_record_is_late_waits_for_it_then_goes(fast, monkeypatch):
    """member.enrolled and member.rejected are handled before their contact records arrive."""
    from services.notify.contacts import ContactsConsumer
    from services.notify.handlers import handle_event
    from services.notify.worker import MailSender
    db, s = notify_db(), settings("notify")
    address, rejected_address = f"late.vq.{RUN}@praktijk-vq.be", f"late.rejected.vq.{RUN}@praktijk-vq.be"
    handle_event(build("member.enrolled", subject="m_late", sequence=2,
                       data=member_data("m_late", region=REGION)), db, s)
    handle_event(build("member.rejected", subject="m_rej", sequence=2,
                       data=member_data("m_rej", status="rejected", region=REGION)), db, s)
    sender = MailSender(s, db)
    _claim_and_send(sender)
    for doc in db.notifications.find():
        assert doc["status"] == "queued" and "contact record" in doc["last_error"], doc
    reader = ContactsConsumer(s, db)
    reader.apply(b"m_late", json.dumps({"member_id": "m_late", "region_id": REGION, "email": address,
                                        "language": "en", "sequence": 1}).encode())
    # the rejection's sign-up record is there, but not yet the one written with the rejection
    reader.apply(b"m_rej", json.dumps({"member_id": "m_rej", "region_id": REGION, "email": rejected_address,
                                       "language": "nl", "sequence": 1}).encode())
    time.sleep(0.6)
    _claim_and_send(sender)
    [mail] = wait_until(lambda: mails_to(address), message="the enrolment mail")
    assert db.notifications.find_one({"member_id": "m_late"})["status"] == "sent"
    assert db.notifications.find_one({"member_id": "m_rej"})["status"] == "queued"
    reader.apply(b"m_rej", json.dumps({"member_id": "m_rej", "region_id": REGION, "email": rejected_address,
                                       "language": "nl", "reason": "buiten de regio-vq",
                                       "sequence": 2}).encode())
    time.sleep(1.1)
    _claim_and_send(sender)
    [rejection] = wait_until(lambda: mails_to(rejected_address), message="the rejection mail")
    assert "buiten de regio-vq" in rejection.get_body(("plain",)).get_content()


def test_an_email_whose_contact_never_arrives_fails_after_the_wait_and_is_sent_to_nobody(fast, monkeypatch):
    from services.notify.handlers import handle_event
    from services.notify.worker import MailSender
    monkeypatch.setenv("HECHT_MAIL_CONTACT_WAIT_S", "1")
    db, s = notify_db(), settings("notify")
    handle_event(build("member.enrolled", subject="m_never", sequence=2,
                       data=member_data("m_never", region=REGION)), db, s)
    sender = MailSender(s, db)
    _claim_and_send(sender)
    assert db.notifications.find_one({"member_id": "m_never"})["status"] == "queued"
    db.notifications.update_many({}, {"$set": {"created_at": db.notifications.find_one()["created_at"]
                                               - timedelta(seconds=2)}})
    time.sleep(0.6)
    _claim_and_send(sender)
    doc = db.notifications.find_one({"member_id": "m_never"})
    assert doc["status"] == "failed" and "contact record" in doc["error"]
    [event] = outbox.history(db, doc["_id"])
    assert event["type"] == "hecht.notification.failed.v1"


def test_erasure_takes_free_text_out_of_notifys_older_copies_and_notifications(fast):
    """Copies and notifications kept before issue 17 could hold a reason or a capacity note."""
    from services.notify.handlers import handle_event
    db, s = notify_db(), settings("notify")
    db.event_copies.insert_one({"_id": "old-copy", "region": REGION, "type": "member.suspended", "subject": "m_old",
                                "sequence": 2, "event": {"data": {"member_id": "m_old", "reason": "intern-vq",
                                                                  "language": "nl",
                                                                  "capacity": {"status": "open", "note": "n-vq"}}}})
    db.notifications.insert_one({"_id": "ntf-old", "member_id": "m_old", "region": REGION, "status": "sent",
                                 "context": {"reason": "intern-vq", "region_name": "Gent"}})
    handle_event(build("member.erased", subject="m_old", sequence=3,
                       data=member_data("m_old", status="erased", region=REGION)), db, s)
    copy = db.event_copies.find_one({"_id": "old-copy"})["event"]["data"]
    assert copy == {"member_id": "m_old", "capacity": {"status": "open"}}
    assert db.notifications.find_one({"_id": "ntf-old"})["context"] == {"region_name": "Gent"}
