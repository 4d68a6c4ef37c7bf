"""Notify's side of docs/PORTAL.md against the real stack: e-mails link to the portal page they
are about, member.email_verified keeps the address book whole, and the GDPR export."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from hecht.config import settings
from services.notify import handlers
from tests.conftest import bearer, wait_until
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    REGION, agreement_event, build, consume, fast, mails_to, mandate, member_data, member_event, notify_client,
    notify_db, notify_worker, unique_address)

PORTAL_URL = "https://portaal.example.be"


@pytest.fixture
def portal_url(monkeypatch):
    monkeypatch.setenv("HECHT_PORTAL_URL", PORTAL_URL + "/")  # a trailing slash is not doubled
    return PORTAL_URL


def _member(member_id: str, language: str, roles: list[str], status: str = "active") -> str:
    address = unique_address(member_id.replace("_", ""))
    consume(member_event("member.signed_up", member_id, 1, status="pending", language=language, roles=roles,
                         email_addr=address))
    if status != "pending":
        consume(member_event("member.roles_changed", member_id, 2, status=status, language=language, roles=roles,
                             email_addr=address))
    return address


def _link_in(msg) -> tuple[str, str]:
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def test_every_email_links_to_its_portal_page(notify_worker, portal_url):
    board = _member("m_board", "nl", ["member", "board"])
    gp = _member("m_new", "fr", ["member"], status="pending")
    closed = mandate("passed", votes=(1, 0, 0), electorate_size=1)
    consume(member_event("member.enrolled", "m_new", 3, language="fr", email_addr=gp),
            agreement_event("agreement.mandate_requested", "a_vote", 2, status="in_consultation",
                            mandate=mandate(), electorate=["m_board"], title="Vote"),
            agreement_event("agreement.mandated", "a_done", 3, status="mandated", mandate=closed, title="Done"),
            agreement_event("agreement.review_due", "a_old", 6, status="active", mandate=closed, title="Old"))
    notify_worker("mailer")
    expected = {
        (gp, "adhésion"): f"{portal_url}/r/{REGION}/membership",
        (board, "Vote"): f"{portal_url}/r/{REGION}/votes/a_vote",
        (board, "Done"): f"{portal_url}/r/{REGION}/agreements/a_done",
        (board, "Old"): f"{portal_url}/r/{REGION}/agreements/a_old",
    }
    wait_until(lambda: len(mails_to(board)) == 3 and mails_to(gp), timeout=30, message="all e-mails")
    for (address, marker), link in expected.items():
        [msg] = [m for m in mails_to(address) if marker in m["Subject"]]
        text, html = _link_in(msg)
        assert link in text, (marker, text)
        assert f'href="{link}"' in html, (marker, html)
        assert text.count(PORTAL_URL) == 1 and "//r/" not in text
    docs = {d["template"]: d["context"]["link"] for d in notify_db().notifications.find()}
    assert docs["enrolment_approved"] == f"{portal_url}/r/{REGION}/membership"


def test_the_vote_closing_reminder_links_to_the_ballot(fast, portal_url):
    now = datetime.now(timezone.utc)
    consume(agreement_event("agreement.mandate_requested", "a_soon", 2, status="in_consultation",
                            mandate=mandate(opened_at=now - timedelta(days=13), deadline=now + timedelta(hours=40)),
                            electorate=["m_1"]))
    assert handlers.fire_due_reminders(notify_db(), settings("notify"), at=now) == 1
    doc = notify_db().notifications.find_one({"template": "vote_closing"})
    assert doc["context"]["link"] == f"{portal_url}/r/{REGION}/votes/a_soon"


def test_email_verified_keeps_the_address_book_and_sends_nothing(fast):
    address = _member("m_v", "nl", ["member"])
    data = dict(member_data("m_v", status="active", email_addr=address), email_verified_at="2026-12-03T10:00:00Z")
    consume(build("member.email_verified", subject="m_v", sequence=3, data=data))
    entry = notify_db().address_book.find_one({"_id": "m_v"})
    assert entry["email"] == address and entry["status"] == "active" and entry["sequence"] == 3
    assert notify_db().notifications.count_documents({}) == 0
    consume(member_event("member.roles_changed", "m_v", 2, email_addr="old@example.test"))  # older: ignored
    assert notify_db().address_book.find_one({"_id": "m_v"})["email"] == address


def test_a_gp_exports_what_notify_holds_about_them(notify_client, notify_worker):
    mine = _member("m_me", "en", ["member"], status="pending")
    _member("m_other", "en", ["member"], status="pending")
    consume(member_event("member.enrolled", "m_me", 3, language="en", email_addr=mine))
    notify_worker("mailer")
    wait_until(lambda: notify_db().notifications.count_documents({"status": "sent"}) == 1, message="sent")
    url = f"/v1/regions/{REGION}/members/m_me/export"
    r = notify_client.get(url, headers=bearer("gp", REGION, "m_me"))
    assert r.status_code == 200, r.get_json()
    body = r.json
    assert body["member_id"] == "m_me" and body["region_id"] == REGION and body["exported_at"]
    assert body["address_book"]["email"] == mine and body["address_book"]["language"] == "en"
    [n] = body["notifications"]
    assert n["template"] == "enrolment_approved" and n["status"] == "sent" and n["sent_at"] and n["created_at"]
    assert "context" not in n and "key" not in n
    assert notify_client.get(url, headers=bearer("region-admin", REGION)).status_code == 200

    def refused(headers, status):
        got = notify_client.get(url, headers=headers)
        assert got.status_code == status and got.mimetype == "application/problem+json", got.get_json()
        assert mine not in got.get_data(as_text=True)
    refused(bearer("gp", REGION, "m_other"), 403)
    refused(bearer("integrator", REGION), 403)
    refused(bearer("portal"), 403)
    refused(bearer("region-admin", "elz-other"), 404)
    refused({}, 401)
    other_region = notify_client.get(f"/v1/regions/elz-other/members/m_me/export",
                                     headers=bearer("region-admin", "elz-other")).json
    assert other_region["address_book"] is None and other_region["notifications"] == []

    consume(member_event("member.erased", "m_me", 9, status="erased"))
    after = notify_client.get(url, headers=bearer("gp", REGION, "m_me")).json
    assert after["address_book"]["status"] == "erased" and "email" not in json.dumps(after["address_book"])


def test_openapi_documents_the_export(notify_client):
    spec = notify_client.get("/openapi.json").json
    assert "200" in spec["paths"]["/v1/regions/{region_id}/members/{member_id}/export"]["get"]["responses"]
    assert {"address_book", "notifications"} <= set(spec["components"]["schemas"]["MemberExport"]["properties"])
