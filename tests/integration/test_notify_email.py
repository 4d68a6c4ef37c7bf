"""E-mail to GPs through the real SMTP sink: the right people, in their language, exactly once;
erased members purged; the vote-closing reminder; notification events and the API."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from hecht import events as ev, outbox
from hecht.config import settings
from services.notify import handlers
from tests.conftest import bearer, wait_until
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    MEMBERS, REGION, agreement_event, build, consume, fast, mails_to, mandate, member_event, notify_client,
    notify_db, notify_worker, produce, unique_address)


def _region_registered(name: str = "ELZ Gent") -> dict:
    return build("region.registered", subject=REGION, sequence=1, source=f"/regions/{REGION}",
                 data={"region_id": REGION, "name": name, "country": "BE", "kind": "eerstelijnszone",
                       "municipalities": ["Gent"],
                       "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}})


def _members(*specs) -> dict[str, str]:
    """Members (id, language, roles, status) known to notify; returns id → unique address."""
    addresses = {}
    for member_id, language, roles, status in specs:
        addresses[member_id] = unique_address(member_id.replace("_", ""))
        consume(member_event("member.signed_up", member_id, 1, status="pending", language=language,
                             roles=roles, email_addr=addresses[member_id]))
        if status != "pending":
            consume(member_event("member.roles_changed", member_id, 2, status=status, language=language,
                                 roles=roles, email_addr=addresses[member_id]))
    return addresses


def _settled(n: int, **query):
    return wait_until(lambda: notify_db().notifications.count_documents(
        {"status": {"$in": ["sent", "failed"]}, **query}) >= n, timeout=20, message=f"{n} notifications settled")


def test_enrolment_emails_reach_each_gp_once_in_their_language(notify_worker):
    consume(_region_registered())
    addresses = _members(("m_nl", "nl", ["member"], "pending"), ("m_fr", "fr", ["member"], "pending"),
                         ("m_en", "en", ["member"], "pending"))
    enrolled = [member_event("member.enrolled", m, 3, language=lang, email_addr=addresses[m])
                for m, lang in (("m_nl", "nl"), ("m_fr", "fr"), ("m_en", "en"))]
    consume(*enrolled)
    consume(*enrolled)  # the same events again (a redelivery past the inbox): nothing new
    notify_worker("mailer")
    for m in addresses:
        wait_until(lambda m=m: mails_to(addresses[m]), message=f"mail to {m}")
    _settled(3)
    time.sleep(0.5)
    expected = {"m_nl": "Uw lidmaatschap van ELZ Gent is goedgekeurd",
                "m_fr": "Votre adhésion à ELZ Gent est approuvée",
                "m_en": "Your membership of ELZ Gent is approved"}
    for m, subject in expected.items():
        mails = mails_to(addresses[m])
        assert len(mails) == 1, (m, len(mails))
        msg = mails[0]
        assert msg["Subject"] == subject and msg["Content-Language"] == m[2:]
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert "ELZ Gent" in text and "<html" in html and f'lang="{m[2:]}"' in html
        assert "Peeters" not in text + html  # no names, not even the reader's
    docs = list(notify_db().notifications.find())
    assert len(docs) == 3 and {d["status"] for d in docs} == {"sent"}
    assert {(d["member_id"], d["language"], d["template"]) for d in docs} == {
        ("m_nl", "nl", "enrolment_approved"), ("m_fr", "fr", "enrolment_approved"),
        ("m_en", "en", "enrolment_approved")}
    for d in docs:
        [event] = outbox.history(notify_db(), d["_id"])  # written with the state, in one transaction
        ev.validate(event)
        assert event["type"] == "hecht.notification.sent.v1" and event["subject"] == d["_id"]
        assert set(event["data"]) == {"notification_id", "region_id", "member_id", "template", "channel",
                                      "cause_event_id"}
        assert "@" not in json.dumps(event)


def test_the_same_event_from_kafka_twice_and_a_consumer_restart_send_one_email(notify_worker):
    address = unique_address()
    signed_up = member_event("member.signed_up", "m_k", 1, status="pending", language="fr", email_addr=address)
    enrolled = member_event("member.enrolled", "m_k", 2, language="fr", email_addr=address)
    produce(MEMBERS, signed_up, enrolled, enrolled)
    first = notify_worker("consumer", "mailer")
    wait_until(lambda: mails_to(address), timeout=30, message="the e-mail")
    first.close()
    produce(MEMBERS, enrolled)  # delivered again after a restart
    notify_worker("consumer", "mailer")
    time.sleep(3)
    assert len(mails_to(address)) == 1
    assert notify_db().notifications.count_documents({}) == 1


def test_rejection_goes_to_the_gp_with_the_reason(notify_worker):
    addresses = _members(("m_r", "nl", ["member"], "pending"))
    consume(member_event("member.rejected", "m_r", 3, status="rejected", reason="geen huisarts in de regio",
                         email_addr=addresses["m_r"]))
    notify_worker("mailer")
    [msg] = wait_until(lambda: mails_to(addresses["m_r"]), message="rejection mail")
    assert "niet goedgekeurd" in msg["Subject"]
    assert "geen huisarts in de regio" in msg.get_body(("plain",)).get_content()


def test_vote_opened_reaches_the_electorate_only_with_the_deadline(notify_worker):
    addresses = _members(("m_a", "nl", ["member"], "active"), ("m_b", "en", ["board"], "active"),
                         ("m_c", "fr", ["member"], "active"))
    deadline = datetime(2031, 3, 12, 16, 0, tzinfo=timezone.utc)
    consume(agreement_event("agreement.mandate_requested", "a_1", 2, status="in_consultation",
                            mandate=mandate(deadline=deadline), electorate=["m_a", "m_b"]))
    notify_worker("mailer")
    [nl] = wait_until(lambda: mails_to(addresses["m_a"]), message="vote mail (nl)")
    [en] = wait_until(lambda: mails_to(addresses["m_b"]), message="vote mail (en)")
    assert nl["Subject"].endswith("stem vóór 12 maart 2031")
    assert "12 March 2031 at 17:00" in en.get_body(("plain",)).get_content()
    _settled(2)
    time.sleep(0.3)
    assert mails_to(addresses["m_c"]) == []


def test_vote_closing_reminder_fires_once_unless_the_vote_closed(notify_worker):
    addresses = _members(("m_a", "en", ["member"], "active"), ("m_b", "nl", ["member"], "active"))
    now = datetime.now(timezone.utc)
    opened = now - timedelta(days=12)
    open_vote = mandate(opened_at=opened, deadline=now + timedelta(hours=47))
    consume(agreement_event("agreement.mandate_requested", "a_open", 2, status="in_consultation",
                            mandate=open_vote, electorate=["m_a", "m_b"], title="Still open"),
            agreement_event("agreement.mandate_requested", "a_closed", 2, status="in_consultation",
                            mandate=open_vote, electorate=["m_a", "m_b"], title="Closed early"),
            agreement_event("agreement.mandated", "a_closed", 3, status="mandated",
                            mandate=mandate("passed", opened_at=opened, deadline=now + timedelta(hours=47),
                                            votes=(2, 0, 0)), title="Closed early"))
    notify_worker("mailer", "scheduler")
    wait_until(lambda: notify_db().notifications.count_documents({"template": "vote_closing", "status": "sent"}) == 2,
               message="reminders sent")
    time.sleep(1)  # a few more scheduler ticks: still one each
    for m in ("m_a", "m_b"):
        reminders = [msg for msg in mails_to(addresses[m]) if "Still open" in msg["Subject"]
                     and ("Reminder" in msg["Subject"] or "Herinnering" in msg["Subject"])]
        assert len(reminders) == 1, m
        assert not any("Closed early" in msg["Subject"] and ("Reminder" in msg["Subject"]
                                                             or "Herinnering" in msg["Subject"])
                       for msg in mails_to(addresses[m]))
    states = {r["agreement_id"]: r["status"] for r in notify_db().reminders.find()}
    assert states == {"a_open": "sent", "a_closed": "cancelled"}


def test_outcomes_reach_all_active_members_and_review_due_the_board(notify_worker):
    addresses = _members(("m_board", "nl", ["member", "chair"], "active"), ("m_gp", "fr", ["member"], "active"),
                         ("m_susp", "en", ["board"], "suspended"), ("m_new", "en", ["member"], "pending"))
    closed = mandate("passed", votes=(3, 1, 0), electorate_size=4)
    consume(agreement_event("agreement.mandated", "a_1", 3, status="mandated", mandate=closed),
            agreement_event("agreement.activated", "a_1", 5, status="active", mandate=closed),
            agreement_event("agreement.review_due", "a_1", 6, status="active", mandate=closed))
    notify_worker("mailer")
    _settled(5)
    sent = {(d["member_id"], d["template"]) for d in notify_db().notifications.find({"status": "sent"})}
    assert sent == {("m_board", "mandate_passed"), ("m_gp", "mandate_passed"),
                    ("m_board", "agreement_activated"), ("m_gp", "agreement_activated"),
                    ("m_board", "review_due")}
    assert mails_to(addresses["m_susp"]) == [] and mails_to(addresses["m_new"]) == []
    subjects = sorted(m["Subject"] for m in wait_until(lambda: len(mails_to(addresses["m_gp"])) == 2 and
                                                       mails_to(addresses["m_gp"]), message="both"))
    # French typography (issue 28): a narrow no-break space before ":" and ";", no-break spaces in « »
    assert subjects == ["Accord en vigueur\u202f: «\u00a0Zorgpad diabetes\u00a0»",
                        "Mandat accordé\u202f: «\u00a0Zorgpad diabetes\u00a0»"]
    [passed] = [m for m in mails_to(addresses["m_gp"]) if "Mandat" in m["Subject"]]
    # French uses the singular for 0 (issue 28)
    assert "3 pour, 1 contre, 0 abstention\u202f; participation 100%" in passed.get_body(("plain",)).get_content()


def test_erasure_purges_the_address_and_a_later_mail_fails_without_sending(notify_worker):
    addresses = _members(("m_x", "nl", ["member"], "active"))
    assert notify_db().address_book.find_one({"_id": "m_x"})["email"] == addresses["m_x"]
    consume(member_event("member.erased", "m_x", 3, status="erased"))
    entry = notify_db().address_book.find_one({"_id": "m_x"})
    assert entry["status"] == "erased" and "email" not in entry and "language" not in entry
    consume(member_event("member.roles_changed", "m_x", 2, email_addr=addresses["m_x"]))  # an older, late event
    assert "email" not in notify_db().address_book.find_one({"_id": "m_x"})
    consume(agreement_event("agreement.mandate_requested", "a_1", 2, status="in_consultation", mandate=mandate(),
                            electorate=["m_x"]))
    notify_worker("mailer")
    _settled(1)
    doc = notify_db().notifications.find_one({"member_id": "m_x"})
    assert doc["status"] == "failed" and "erased" in doc["error"]
    [event] = outbox.history(notify_db(), doc["_id"])
    ev.validate(event)
    assert event["type"] == "hecht.notification.failed.v1" and "erased" in event["data"]["error"]
    assert mails_to(addresses["m_x"]) == []


def test_an_unreachable_mail_relay_is_retried_then_reported(notify_worker, monkeypatch):
    monkeypatch.setenv("HECHT_SMTP_URL", "smtp://127.0.0.1:1")
    addresses = _members(("m_y", "en", ["member"], "pending"))
    consume(member_event("member.enrolled", "m_y", 3, language="en", email_addr=addresses["m_y"]))
    notify_worker("mailer", "relay")
    _settled(1)
    doc = notify_db().notifications.find_one({"member_id": "m_y"})
    assert doc["status"] == "failed" and doc["attempts"] == 3 and "unreachable" in doc["error"]
    wait_until(lambda: outbox.pending(notify_db(), doc["_id"]) == [], message="the failure event relayed")
    [relayed] = outbox.history(notify_db(), doc["_id"])
    assert relayed["type"] == "hecht.notification.failed.v1"


def test_notifications_api_lists_what_was_sent_to_whom(notify_client, notify_worker):
    _members(("m_1", "nl", ["member", "board"], "active"), ("m_2", "en", ["member"], "active"))
    closed = mandate("passed", votes=(2, 0, 0))
    consume(agreement_event("agreement.activated", "a_1", 5, status="active", mandate=closed),
            agreement_event("agreement.review_due", "a_1", 6, status="active", mandate=closed))
    notify_worker("mailer")
    _settled(3)
    base = f"/v1/regions/{REGION}/notifications"
    admin = bearer("region-admin", REGION)
    items, url = [], f"{base}?limit=2"
    while url:
        page = notify_client.get(url, headers=admin).json
        items += page["items"]
        url = page["next"]
    assert sorted((i["member_id"], i["template"], i["status"]) for i in items) == [
        ("m_1", "agreement_activated", "sent"), ("m_1", "review_due", "sent"), ("m_2", "agreement_activated", "sent")]
    assert all("@" not in json.dumps(i) and "context" not in i for i in items)
    only = notify_client.get(f"{base}?member=m_1&template=review_due", headers=admin).json["items"]
    assert [(i["member_id"], i["template"]) for i in only] == [("m_1", "review_due")]
    assert notify_client.get(f"{base}?status=failed", headers=admin).json["items"] == []
    one = notify_client.get(f"{base}/{only[0]['id']}", headers=admin)
    assert one.status_code == 200 and one.json["language"] == "nl"
    assert notify_client.get(base, headers=bearer("integrator", REGION)).status_code == 403
    assert notify_client.get(base, headers=bearer("region-admin", "elz-other")).status_code == 404
    assert notify_client.get(f"{base}?template=nope", headers=admin).status_code == 422


def test_fire_due_reminders_skips_votes_that_already_closed(fast):
    consume(agreement_event("agreement.mandate_requested", "a_1", 2, status="in_consultation",
                            mandate=mandate(opened_at=datetime.now(timezone.utc) - timedelta(days=13),
                                            deadline=datetime.now(timezone.utc) + timedelta(hours=1)),
                            electorate=["m_1"]))
    later = datetime.now(timezone.utc) + timedelta(hours=2)  # the scheduler was down past the deadline
    assert handlers.fire_due_reminders(notify_db(), settings("notify"), at=later) == 0
    assert notify_db().reminders.find_one()["status"] == "expired"
    assert notify_db().notifications.count_documents({"template": "vote_closing"}) == 0


def test_mandate_outcome_reaches_voters_whose_enrolment_notify_has_not_seen_yet(hecht_env):
    """Found by the kill -9 story: the agreements topic can be ahead of the members topic in
    notify after an outage, so the address book alone missed 6 of 9 voters."""
    _members(("m_a", "nl", ["member"], "active"), ("m_c", "nl", ["member"], "suspended"))
    # m_b's enrolment is still behind on the members topic: notify does not know m_b yet
    consume(agreement_event("agreement.mandate_requested", "a_lag", 2, status="in_consultation",
                            mandate=mandate(), electorate=["m_a", "m_b", "m_c"]),
            agreement_event("agreement.mandated", "a_lag", 3, status="mandated",
                            mandate=mandate("passed", electorate_size=3, votes=(2, 0, 0))))
    queued = {d["member_id"] for d in notify_db().notifications.find({"template": "mandate_passed"})}
    assert queued == {"m_a", "m_b"}  # the voter suspended since is not written to


def test_a_dead_senders_lease_runs_out_and_the_email_goes_once(notify_worker):
    from services.notify.repository import NotificationRepository
    addresses = _members(("m_d", "nl", ["member"], "pending"))
    consume(member_event("member.enrolled", "m_d", 3, email_addr=addresses["m_d"]))
    repo = NotificationRepository(notify_db())
    held = repo.claim("dead-sender", lease_s=1.5)  # claimed, then the sender dies
    assert held is not None and held["member_id"] == "m_d" and held["claim_seq"] == 1
    assert repo.claim("another", lease_s=60) is None  # leased: nobody else gets it meanwhile
    notify_worker("mailer")
    time.sleep(0.8)
    assert mails_to(addresses["m_d"]) == []
    wait_until(lambda: mails_to(addresses["m_d"]), timeout=10, message="the e-mail after the lease ran out")
    _settled(1)
    doc = notify_db().notifications.find_one({"member_id": "m_d"})
    assert doc["status"] == "sent" and doc["claim_seq"] == 2 and doc["attempts"] == 1 and "lease_owner" not in doc
    repo.requeue(held, datetime.now(timezone.utc), "the dead sender wakes up")  # its lease is long gone
    assert notify_db().notifications.find_one({"member_id": "m_d"})["status"] == "sent"
    time.sleep(0.5)
    assert len(mails_to(addresses["m_d"])) == 1


def test_concurrent_senders_send_each_email_once(fast):
    import threading
    from services.notify.worker import MailSender
    members = [(f"m_{i}", "en", ["member"], "pending") for i in range(24)]
    addresses = _members(*members)
    consume(*[member_event("member.enrolled", m, 3, language="en", email_addr=addresses[m]) for m, *_ in members])
    senders = [MailSender(settings("notify"), notify_db()) for _ in range(4)]
    start = threading.Barrier(len(senders))
    sent = []

    def run(sender):
        start.wait()
        while True:
            n = sender.run_once(limit=3)
            sent.append(n)
            if n == 0:
                return
    threads = [threading.Thread(target=run, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(sent) == 24
    for m, *_ in members:
        wait_until(lambda m=m: mails_to(addresses[m]), message=f"mail to {m}")
    time.sleep(0.3)
    assert all(len(mails_to(addresses[m])) == 1 for m, *_ in members)
    docs = list(notify_db().notifications.find())
    assert len(docs) == 24 and {(d["status"], d["attempts"], d["claim_seq"]) for d in docs} == {("sent", 1, 1)}
