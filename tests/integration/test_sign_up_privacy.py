"""Issue 22, medium item 2: the public sign-up does not tell who is enrolled.

Without a token, ``POST /v1/regions/{r}/members`` answers 202 ``{"status": "accepted"}`` for a new
address and for one already enrolled (in any case), and for a registration number already
enrolled: the same status, body and headers. The e-mail tells the person instead, through the
real relay, the contacts topic and notify's mail sender to the SMTP sink: the enrolled member is
told someone tried (once an hour at most) and nothing about their membership changes; the new one
gets the confirmation e-mail.
"""
from __future__ import annotations

import uuid

import pytest

from hecht import outbox, topics
from hecht.config import settings
from services.members.worker import relay as members_relay
from tests.conftest import bearer, wait_until
from tests.support.members import members_client, members_db, riziv
from tests.integration.test_notify_support import fast, mails_to, notify_db  # noqa: F401 - fixtures

REGION = "elz-gent"
GENT = {"id": REGION, "name": "ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
        "municipalities": ["Gent", "Merelbeke"]}
ADMIN = bearer("region-admin", REGION)
RUN = uuid.uuid4().hex[:8]   # the sink's Maildir outlives the tests: addresses new on every run
# Headers that differ per request whatever the outcome (they name the request, not the member).
PER_REQUEST = {"x-request-id", "traceresponse", "date"}


def form(n: int, email: str) -> dict:
    return {"given_name": f"An{n}", "family_name": f"Peeters{n}", "email": email, "language": "en",
            "registration": {"scheme": "RIZIV", "number": riziv(109000 + n)},
            "practice": {"name": f"Praktijk {n}", "postcode": "9000", "municipality": "Gent"}}


@pytest.fixture
def members(fast, monkeypatch):
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "1000")
    return members_client(GENT)


def _answer(r) -> tuple:
    headers = sorted((k.lower(), v) for k, v in r.headers.items() if k.lower() not in PER_REQUEST)
    return r.status_code, r.get_data(as_text=True), headers


def _notices(member_id: str) -> list[str]:
    return sorted(d[outbox.RECORD_VALUE]["notice"]["kind"] for d in members_db()[outbox.OUTBOX].find(
        {"subject": member_id, outbox.RECORD_TOPIC: topics.MEMBER_CONTACTS, f"{outbox.RECORD_VALUE}.notice": {"$exists": True}}))


def test_anonymous_sign_ups_answer_the_same_whether_or_not_the_address_is_enrolled(members):
    known = f"known.{RUN}@praktijk-sp.be"
    created = members.post(f"/v1/regions/{REGION}/members", json=form(1, known), headers=ADMIN)
    assert created.status_code == 201
    m = created.json["id"]
    before = members.get(f"/v1/regions/{REGION}/members/{m}", headers=ADMIN)
    history = members.get(f"/v1/regions/{REGION}/members/{m}/history", headers=ADMIN).json

    answers = {
        "new address": members.post(f"/v1/regions/{REGION}/members", json=form(2, f"new.{RUN}@praktijk-sp.be")),
        "enrolled address": members.post(f"/v1/regions/{REGION}/members", json=form(3, known)),
        "enrolled address, other case": members.post(f"/v1/regions/{REGION}/members",
                                                     json=form(4, known.upper())),
        "enrolled registration": members.post(f"/v1/regions/{REGION}/members",
                                              json={**form(1, f"other.{RUN}@praktijk-sp.be")}),
    }
    first = _answer(answers["new address"])
    assert first[0] == 202 and answers["new address"].json == {"status": "accepted"}, first
    for what, r in answers.items():
        assert _answer(r) == first, what
        assert "Location" not in r.headers and "ETag" not in r.headers and "m_" not in r.get_data(as_text=True)

    # one new member; the enrolled one is as it was (same version, same ETag, same history)
    assert members_db().members.count_documents({"region": REGION}) == 2
    after = members.get(f"/v1/regions/{REGION}/members/{m}", headers=ADMIN)
    assert after.json == before.json and after.headers["ETag"] == before.headers["ETag"]
    assert members.get(f"/v1/regions/{REGION}/members/{m}/history", headers=ADMIN).json == history
    # what makes the e-mails go, written with the decision: one attempt notice (then quiet)
    assert _notices(m) == ["sign_up_attempt"]
    [new] = [d["_id"] for d in members_db().members.find({"region": REGION, "_id": {"$ne": m}})]
    assert _notices(new) == ["sign_up_confirm"]


def test_the_portal_is_told_the_outcome_and_staff_keep_the_id_and_the_conflict(members):
    email = f"portal.{RUN}@praktijk-sp.be"
    portal = bearer("portal")
    r = members.post(f"/v1/regions/{REGION}/members", json=form(5, email), headers=portal)
    assert r.status_code == 202 and r.json == {"status": "accepted", "outcome": "created"}
    r = members.post(f"/v1/regions/{REGION}/members", json=form(6, email.upper()), headers=portal)
    assert r.status_code == 202 and r.json == {"status": "accepted", "outcome": "enrolled"}
    [m] = [d["_id"] for d in members_db().members.find({"region": REGION})]
    assert _notices(m) == ["sign_up_attempt"]   # the portal mails its own confirmation link
    # a region-admin of the region may list the members anyway: the conflict names the rule
    r = members.post(f"/v1/regions/{REGION}/members", json=form(7, email), headers=ADMIN)
    assert r.status_code == 409 and "email" in r.json["errors"]
    # a token that may not list the region's members is answered like nobody
    for token in (bearer("gp", REGION, m), bearer("region-admin", "elsewhere"), bearer("integrator", REGION)):
        r = members.post(f"/v1/regions/{REGION}/members", json=form(8, email), headers=token)
        assert r.status_code == 202 and r.json == {"status": "accepted"}, token


def test_the_enrolled_member_is_told_someone_tried_and_the_new_one_is_asked_to_confirm(members):
    from services.notify.contacts import ContactsConsumer
    from services.notify.repository import ensure_indexes
    from services.notify.worker import MailSender
    ensure_indexes(notify_db())
    known, new = f"enrolled.{RUN}@praktijk-sp.be", f"fresh.{RUN}@praktijk-sp.be"
    relay = members_relay(settings("members"), members_db())
    reader = ContactsConsumer(settings("notify"), notify_db())
    sender = MailSender(settings("notify"), notify_db())
    try:
        m = members.post(f"/v1/regions/{REGION}/members", json=form(11, known)).json
        assert m == {"status": "accepted"}
        for body in (form(12, known.upper()), form(13, known), form(14, new)):
            assert members.post(f"/v1/regions/{REGION}/members", json=body).status_code == 202

        def delivered(address: str, n: int):
            relay.run_once()
            reader.poll_once()
            sender.run_once()
            mails = mails_to(address)
            return mails if len(mails) >= n else None
        confirm_known, attempt = sorted(wait_until(lambda: delivered(known, 2), timeout=60,
                                                   message="the enrolled member's two e-mails"),
                                        key=lambda msg: "tried" in msg["Subject"])
        assert confirm_known["Subject"] == "Confirm your e-mail address for elz-gent"
        assert attempt["Subject"] == "Someone tried to sign up with elz-gent using your details"
        text = attempt.get_body(("plain",)).get_content()
        assert "this e-mail address" in text and "nothing about your membership has changed" in text
        assert f"/r/{REGION}/membership" in text   # the way in: the portal, through sign-in
        [confirm_new] = wait_until(lambda: delivered(new, 1), timeout=60, message="the confirmation e-mail")
        assert confirm_new["Subject"] == "Confirm your e-mail address for elz-gent"
        # three tries with the enrolled address (two cases): one e-mail about them, the rest quiet
        sender.run_once()
        assert len(mails_to(known)) == 2 and not mails_to(known.upper())
        # integrators never learn of it: no notification.* event for these e-mails
        sent = list(notify_db().notifications.find({"template": {"$in": ["sign_up_attempted", "sign_up_confirm"]}}))
        assert len(sent) == 3 and {d["status"] for d in sent} == {"sent"}
        assert not [e for d in sent for e in outbox.history(notify_db(), d["_id"])]
    finally:
        reader.close()
        relay.close()
