"""Periodic re-verification of registrations (issue 16) against the real stack.

The members service: re-confirmation by the GP or staff (and nobody else), the staff list of
members past due, the worker's sweep announcing each due period once (run twice, and by two
workers at once). Notify: the announcement e-mailed to the member through the SMTP sink, with
the portal's membership page. Agreements: with the region's setting on, a member past due is
left out of the next electorate (listed as ``unverified``) and is back after re-confirming;
with it off, they stay in. Members' own events feed notify and agreements, so what they carry
is what is tested.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from hecht import events as ev, outbox
from services.members import domain
from services.members.handlers import announce_reverification_due
from tests.conftest import bearer, wait_until, ok as _ok, problem as _problem
from tests.support.members import members_client, members_db, riziv as _riziv
from tests.integration.test_agreements_support import (  # noqa: F401 - fixtures
    REGION, admin, agreements_db, apply_directly, clock, drafted)
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    consume, contact_record, fast, mails_to, notify_db, notify_worker, unique_address)

STAFF = bearer("region-admin", REGION, sub="staff:els")
GENT = {"id": REGION, "name": "ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
        "municipalities": ["Gent", "Merelbeke"]}
BASE = f"/v1/regions/{REGION}/members"
LONG_AGO = datetime(2025, 1, 15, 10, 0, tzinfo=timezone.utc)
PORTAL = "https://portal.example.test"


@pytest.fixture
def members(hecht_env, monkeypatch):
    monkeypatch.setenv("HECHT_SIGNUP_RATE_LIMIT", "1000")
    monkeypatch.setenv("HECHT_PORTAL_URL", PORTAL)
    return members_client(GENT)


def _enrol(members, n: int, email: str | None = None) -> str:
    form = {"given_name": f"An{n}", "family_name": f"Peeters{n}", "email": email or f"an{n}@praktijk.be",
            "language": "nl", "registration": {"scheme": "RIZIV", "number": _riziv(109000 + n)},
            "practice": {"name": f"Praktijk {n}", "postcode": "9000", "municipality": "Gent"}}
    mid = _ok(members.post(BASE, json=form, headers=bearer("region-admin", REGION)), 201)["id"]
    _ok(members.post(f"{BASE}/{mid}/approve", headers=STAFF))
    return mid


def _verified_long_ago(*member_ids: str, at: datetime = LONG_AGO) -> None:
    """As if the registration was last verified ``at`` (the clock cannot be moved inside Mongo)."""
    members_db().members.update_many({"_id": {"$in": list(member_ids)}}, {"$set": {"verified_at": at}})


def _pending(member_id: str, short: str) -> list[dict]:
    return [e for e in outbox.pending(members_db(), member_id) if e["type"] == ev.full_type(short)]


def _set_policy(members, **policy) -> None:
    _ok(members.patch(f"/v1/regions/{REGION}", headers=STAFF, json={"mandate_policy": policy}))


# ==============================================================================================
# Re-confirmation and the staff list
# ==============================================================================================
def test_approval_verifies_and_the_member_shows_when_to_reconfirm(members):
    mid = _enrol(members, 1)
    m = _ok(members.get(f"{BASE}/{mid}", headers=STAFF))
    verified = datetime.fromisoformat(m["verified_at"])
    assert datetime.now(timezone.utc) - verified < timedelta(minutes=1)
    assert m["reverify_due_at"] == domain.reverify_due_at(verified, 12).isoformat()
    assert "reverify_notified_for" not in m
    enrolled = _pending(mid, "member.enrolled")[0]
    ev.validate(enrolled)
    assert enrolled["data"]["verified_at"] is not None
    region = _ok(members.get(f"/v1/regions/{REGION}", headers=STAFF))
    assert (region["mandate_policy"]["reverify_months"],
            region["mandate_policy"]["unverified_leave_electorate"]) == (12, False)


def test_the_gp_or_staff_reconfirm_and_nobody_else(members):
    mine, other = _enrol(members, 1), _enrol(members, 2)
    _verified_long_ago(mine, other)
    url = f"{BASE}/{mine}/reconfirm"
    # another GP of the region, a GP of another region's token, a region-admin of another region
    _problem(members.post(url, json={}, headers=bearer("gp", REGION, other)), 403)
    _problem(members.post(url, json={}, headers=bearer("region-admin", "elz-elders")), 404)   # not their region
    _problem(members.post(url, json={}), 401)
    assert members_db().members.find_one({"_id": mine})["verified_at"] == LONG_AGO

    done = _ok(members.post(url, json={}, headers=bearer("gp", REGION, mine)))
    assert datetime.now(timezone.utc) - datetime.fromisoformat(done["verified_at"]) < timedelta(minutes=1)
    event = _pending(mine, "member.reverified")[-1]
    ev.validate(event)
    assert event["data"]["verified_at"].startswith(done["verified_at"][:19])
    assert not {"given_name", "family_name", "email", "language", "registration"} & set(event["data"])
    history = _ok(members.get(f"{BASE}/{mine}/history", headers=STAFF))["items"]
    assert history[-1]["type"] == "hecht.member.reverified.v1" and "gp" in history[-1]["actor"]["roles"]

    # staff re-confirm on the GP's behalf, correcting the competence code (the correction's checks)
    corrected = _ok(members.post(f"{BASE}/{other}/reconfirm", headers=STAFF,
                                 json={"registration": {"scheme": "RIZIV", "number": _riziv(109002, "004")}}))
    assert corrected["registration"]["number"] == _riziv(109002, "004")
    p = _problem(members.post(f"{BASE}/{other}/reconfirm", headers=STAFF,
                              json={"registration": {"scheme": "RIZIV", "number": _riziv(109002, "580")}}), 422)
    assert "registration" in p["errors"]
    _problem(members.post(f"{BASE}/{other}/reconfirm", headers=STAFF,      # someone else's registration
                          json={"registration": {"scheme": "RIZIV", "number": _riziv(109001, "004")}}), 409)
    _problem(members.post(f"{BASE}/{other}/reconfirm", headers=STAFF, json={"registration": "x"}), 422)


def test_only_enrolled_members_reconfirm_and_unknown_ones_are_404(members):
    form = {"given_name": "Pending", "family_name": "Peeters", "email": "pending@praktijk.be", "language": "nl",
            "registration": {"scheme": "RIZIV", "number": _riziv(109050)},
            "practice": {"name": "Praktijk", "postcode": "9000", "municipality": "Gent"}}
    pending = _ok(members.post(BASE, json=form, headers=bearer("region-admin", REGION)), 201)["id"]
    _problem(members.post(f"{BASE}/{pending}/reconfirm", json={}, headers=STAFF), 409)
    assert _ok(members.get(f"{BASE}/{pending}", headers=STAFF))["reverify_due_at"] is None
    _problem(members.post(f"{BASE}/m_nobody/reconfirm", json={}, headers=STAFF), 404)


def test_staff_list_the_members_past_due_and_the_period_is_the_regions(members):
    due, fresh, legacy = _enrol(members, 1), _enrol(members, 2), _enrol(members, 3)
    _verified_long_ago(due)
    # approved before verified_at was recorded: the sign-up time stands in
    members_db().members.update_one({"_id": legacy}, {"$unset": {"verified_at": ""},
                                                      "$set": {"signed_up_at": LONG_AGO - timedelta(days=3)}})

    def listed(flag: str) -> list[str]:
        return [m["id"] for m in _ok(members.get(f"{BASE}?reverify_due={flag}", headers=STAFF))["items"]]
    assert sorted(listed("true")) == sorted([due, legacy])
    assert listed("false") == [fresh]
    item = next(m for m in _ok(members.get(f"{BASE}?reverify_due=true", headers=STAFF))["items"] if m["id"] == due)
    assert item["reverify_due_at"] == "2026-01-15T00:00:00+00:00"
    _problem(members.get(f"{BASE}?reverify_due=often", headers=STAFF), 422)
    _problem(members.get(f"{BASE}?reverify_due=true", headers=bearer("gp", REGION, due)), 403)

    _set_policy(members, reverify_months=60)          # five years: nobody is due
    assert listed("true") == []
    _problem(members.patch(f"/v1/regions/{REGION}", headers=STAFF, json={"mandate_policy": {"reverify_months": 61}}),
             422)
    _set_policy(members, reverify_months=12)
    _ok(members.post(f"{BASE}/{due}/reconfirm", json={}, headers=bearer("gp", REGION, due)))
    assert listed("true") == [legacy]


# ==============================================================================================
# The sweep: once per due period, however often and by however many workers
# ==============================================================================================
def test_the_sweep_announces_each_due_period_once(members):
    due, fresh = _enrol(members, 1), _enrol(members, 2)
    _verified_long_ago(due)
    from services.members.worker import ReverificationSweep
    assert ReverificationSweep(members_db()).run_once() == [due]
    assert ReverificationSweep(members_db()).run_once() == []          # a second pass, a restarted worker
    results: list[list[str]] = []
    workers = [threading.Thread(target=lambda: results.append(announce_reverification_due(members_db())))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == [[], []]
    announced = _pending(due, "member.reverification_due")
    assert len(announced) == 1 and _pending(fresh, "member.reverification_due") == []
    ev.validate(announced[0])
    assert announced[0]["data"]["verified_at"] == "2025-01-15T10:00:00.000Z"
    assert members_db().members.find_one({"_id": due})["reverify_notified_for"] == datetime(2026, 1, 15,
                                                                                             tzinfo=timezone.utc)

    # two workers on a fresh period at the same moment: still one announcement
    _verified_long_ago(due, fresh, at=LONG_AGO - timedelta(days=40))
    results.clear()
    workers = [threading.Thread(target=lambda: results.append(announce_reverification_due(members_db())))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(sum(results, [])) == sorted([due, fresh])
    assert len(_pending(due, "member.reverification_due")) == 2 and len(_pending(fresh, "member.reverification_due")) == 1

    # re-confirmed: nothing is due until the next period, which is announced in its turn
    _ok(members.post(f"{BASE}/{due}/reconfirm", json={}, headers=STAFF))
    assert announce_reverification_due(members_db()) == []
    a_year_on = datetime.now(timezone.utc) + timedelta(days=366)
    assert due in announce_reverification_due(members_db(), a_year_on)
    assert len(_pending(due, "member.reverification_due")) == 3


def test_the_member_past_due_gets_an_email_with_the_membership_page(members, notify_worker):
    address = unique_address("reverify").replace("@example.test", "@praktijk.be")
    mid = _enrol(members, 1, email=address)
    _verified_long_ago(mid)
    assert announce_reverification_due(members_db()) == [mid]
    # members' own events, with the contact records written with them, as notify consumes them
    events = [e for e in outbox.pending(members_db(), REGION) if e["type"] == "hecht.region.registered.v1"]
    for e in outbox.pending(members_db(), mid):
        e = dict(e)
        e["_contact"] = contact_record(mid, e["sequence"], email_addr=address, status=e["data"]["status"])
        events.append(e)
    assert [ev.short_type(e["type"]) for e in events][-1] == "member.reverification_due"
    consume(*events)
    consume(*events)   # redelivered: still one e-mail
    notify_worker("mailer")
    wait_until(lambda: mails_to(address) and notify_db().notifications.count_documents(
        {"template": "reverification_due", "status": "sent"}) == 1, timeout=20, message="the e-mail")
    mails = [m for m in mails_to(address) if "registratie" in str(m["Subject"])]
    assert len(mails) == 1
    assert str(mails[0]["Subject"]) == "Bevestig uw registratie bij ELZ Gent"
    text = mails[0].get_body(("plain",)).get_content()
    assert f"{PORTAL}/r/{REGION}/membership" in text and "opnieuw te bevestigen" in text
    assert notify_db().notifications.count_documents({"template": "reverification_due"}) == 1


# ==============================================================================================
# The electorate
# ==============================================================================================
def _feed_agreements() -> None:
    """Everything members published so far, through agreements' consumer handler."""
    db = members_db()
    events = sorted(outbox.pending(db), key=lambda e: (e["time"], e["sequence"]))
    apply_directly(*events)


def _open(client, region_admin=admin) -> dict:
    a = drafted(client)
    r = client.post(f"/v1/regions/{REGION}/agreements/{a['id']}/mandate", headers=region_admin())
    assert r.status_code == 201, r.get_json()
    return [e for e in outbox.pending(agreements_db(), a["id"])
            if e["type"] == "hecht.agreement.mandate_requested.v1"][-1]["data"]


@pytest.fixture
def agreements(hecht_env, clock):
    from services.agreements.app import create_app
    clock.set(datetime.now(timezone.utc))
    return create_app({"HECHT_CLOCK": clock}).test_client()


def test_a_member_past_due_leaves_the_next_electorate_only_where_the_region_says_so(members, agreements):
    stale, fresh = _enrol(members, 1), _enrol(members, 2)
    _verified_long_ago(stale)
    announce_reverification_due(members_db())     # the event that tells agreements the old verified_at
    _feed_agreements()

    off = _open(agreements)                        # the default: past due, still an elector
    assert off["electorate"] == sorted([stale, fresh]) and off["unverified"] == []

    _set_policy(members, unverified_leave_electorate=True)
    _feed_agreements()
    on = _open(agreements)
    assert on["electorate"] == [fresh] and on["unverified"] == [stale]     # listed, not silently dropped
    assert on["mandate"]["policy_version"] == 2
    vote = agreements.put(f"/v1/regions/{REGION}/agreements/{_open_id(on)}/mandate/votes/{stale}",
                          json={"choice": "for"}, headers=bearer("gp", REGION, stale))
    assert vote.status_code == 403

    _ok(members.post(f"{BASE}/{stale}/reconfirm", json={}, headers=bearer("gp", REGION, stale)))
    _feed_agreements()
    back = _open(agreements)
    assert back["electorate"] == sorted([stale, fresh]) and back["unverified"] == []


def _open_id(data: dict) -> str:
    return data["agreement_id"]


def test_the_setting_is_a_policy_version_announced_to_agreements(members):
    _set_policy(members, reverify_months=6, unverified_leave_electorate=True)
    updated = [e for e in outbox.pending(members_db(), REGION) if e["type"] == "hecht.region.updated.v1"][-1]
    ev.validate(updated)
    policy = updated["data"]["mandate_policy"]
    assert (policy["reverify_months"], policy["unverified_leave_electorate"], policy["version"]) == (6, True, 2)
    apply_directly(*outbox.pending(members_db(), REGION))
    from services.agreements.repository import ReadModel
    frozen = ReadModel(agreements_db()).policy(REGION)
    assert (frozen.reverify_months, frozen.unverified_leave_electorate, frozen.version) == (6, True, 2)
