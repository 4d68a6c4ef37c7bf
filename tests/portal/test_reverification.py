"""Periodic re-verification of registrations (issue 16) in the portal, every service a real
process: the GP's "my membership" page shows when the registration was last confirmed and
when it is due, and once due a form confirms it (with or without a corrected number); the
region console lists the members past due, shows the dates and confirms on the GP's behalf,
and its settings edit the period and the electorate rule. Another GP's or region's ids are 404.

A member is made due as the backend's own tests do: a short period in the region's policy and
``verified_at`` moved back in the members database (the clock cannot be moved inside Mongo).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import requests

from hecht import mongo
from hecht.config import settings
from tests.conftest import bearer

from .conftest import Browser, field_error, new_email
from .test_console import _riziv, _staff, _staff_browser, etag_of
from .test_governance import _member, _policy, _settings_form

LONG_AGO = datetime.now(timezone.utc) - timedelta(days=120)


def _members_db():
    s = settings("members")
    return mongo.database(s.mongo_uri, s.database_name)


def _make_due(hecht, region: str, *member_ids: str) -> None:
    """A one-month period, and these members last verified four months ago."""
    r = requests.patch(f"{hecht.urls['members']}/v1/regions/{region}", headers=bearer("region-admin", region),
                       json={"mandate_policy": {"reverify_months": 1}}, timeout=10)
    assert r.status_code == 200, r.text
    _members_db().members.update_many({"_id": {"$in": list(member_ids)}}, {"$set": {"verified_at": LONG_AGO}})


def _due_at(hecht, region: str, m: str) -> datetime:
    return datetime.fromisoformat(hecht.member(region, m)["reverify_due_at"].replace("Z", "+00:00"))


def test_the_gp_sees_the_dates_and_confirms_once_due_but_not_for_someone_else(portal_fleet, hecht):
    region = hecht.region()
    email = new_email()
    mine = _member(hecht, region, email, _riziv(301), given="Roos", family="Reverdy")
    other = _member(hecht, region, new_email(), _riziv(302), given="Sam", family="Smet")
    gp = Browser(portal_fleet.urls["portal"])
    gp.s.headers["Accept-Language"] = "nl"
    gp.sign_in(email)
    path = f"/r/{region}/membership"

    # Not due yet (a year ahead): the dates, and the plain correction form, no confirmation
    page = gp.get(path)
    assert page.status_code == 200, page.text[:1000]
    assert "Registratie laatst bevestigd" in page.text and "Volgende bevestiging" in page.text, page.text[:3000]
    assert f'action="/r/{region}/membership/reconfirm"' not in page.text

    # Due: the confirmation form, which an unchanged number confirms as it is
    _make_due(hecht, region, mine, other)
    before = _due_at(hecht, region, mine)
    assert before < datetime.now(timezone.utc)
    page = gp.get(path)
    assert f'action="/r/{region}/membership/reconfirm"' in page.text, page.text[:3000]
    assert "Bevestig dat mijn registratie nog geldig is" in page.text
    number = hecht.member(region, mine)["registration"]["number"]
    r = gp.post(f"{path}/reconfirm", {"etag": etag_of(page.text), "scheme": "RIZIV", "number": number},
                csrf_from=path)
    assert r.status_code == 302 and r.headers["Location"].endswith(path), r.text[:2000]
    page = gp.get(path)
    assert "uw registratie is bevestigd" in page.text, page.text[:3000]
    got = hecht.member(region, mine)
    verified = datetime.fromisoformat(got["verified_at"].replace("Z", "+00:00"))
    assert datetime.now(timezone.utc) - verified < timedelta(minutes=5)
    assert _due_at(hecht, region, mine) > datetime.now(timezone.utc)
    assert got["registration"]["number"] == number

    # A corrected number goes along: the sign-up's checks apply, errors next to the field
    _make_due(hecht, region, mine)
    page = gp.get(path)
    r = gp.post(f"{path}/reconfirm", {"etag": etag_of(page.text), "scheme": "RIZIV", "number": "123"},
                csrf_from=path)
    assert r.status_code == 422 and field_error(r.text, "registration-number"), r.text[:3000]
    assert _due_at(hecht, region, mine) < datetime.now(timezone.utc)  # nothing confirmed
    r = gp.post(f"{path}/reconfirm", {"etag": etag_of(page.text), "scheme": "RIZIV", "number": ""},
                csrf_from=path)
    assert r.status_code == 422 and field_error(r.text, "registration-number"), r.text[:3000]
    new_number = _riziv(303)
    r = gp.post(f"{path}/reconfirm", {"etag": etag_of(page.text), "scheme": "RIZIV", "number": new_number},
                csrf_from=path)
    assert r.status_code == 302, r.text[:2000]
    got = hecht.member(region, mine)
    assert got["registration"]["number"].replace(" ", "").replace("-", "").replace(".", "") == new_number
    assert _due_at(hecht, region, mine) > datetime.now(timezone.utc)
    assert "gecorrigeerd en bevestigd" in gp.get(path).text

    # Someone else's registration: not through the GP's pages, nor through the console
    assert gp.get(f"/r/{region}/members/{other}").status_code == 404
    assert gp.post(f"/admin/{region}/members/{other}/reconfirm", {}, csrf_from=path).status_code == 404
    assert _due_at(hecht, region, other) < datetime.now(timezone.utc)  # still due: nothing confirmed it
    # without a CSRF token nothing happens either
    assert gp.post(f"{path}/reconfirm", {"number": new_number}, csrf=False).status_code == 400


def test_staff_list_the_due_members_confirm_one_and_edit_the_policy(portal_fleet, hecht):
    region = hecht.region()
    elsewhere = hecht.region()
    _sid, email = _staff(hecht, admin_of=[region])
    due = _member(hecht, region, new_email(), _riziv(311), given="Dora", family="Duewaarde")
    fresh = _member(hecht, region, new_email(), _riziv(312), given="Fien", family="Fris")
    foreign = _member(hecht, elsewhere, new_email(), _riziv(313), given="Xavier", family="Xander")
    _make_due(hecht, region, due)
    b = _staff_browser(portal_fleet, email)

    # The members list: the filter shows only the member past due, with the marker
    page = b.get(f"/admin/{region}/members")
    assert page.status_code == 200 and 'name="reverify_due"' in page.text
    assert "Duewaarde" in page.text and "Fris" in page.text
    page = b.get(f"/admin/{region}/members", params={"reverify_due": "true"})
    assert page.status_code == 200, page.text[:2000]
    assert "Duewaarde" in page.text and "Fris" not in page.text
    assert "herbevestiging nodig" in page.text
    assert b.get(f"/admin/{region}/members", params={"reverify_due": "maybe"}).status_code == 422

    # The member page: the dates, and staff confirm on the GP's behalf
    path = f"/admin/{region}/members/{due}"
    page = b.get(path)
    assert "Registratie laatst bevestigd" in page.text and "herbevestiging nodig" in page.text, page.text[:3000]
    assert f'action="{path}/reconfirm"' in page.text
    r = b.post(f"{path}/reconfirm", {"etag": etag_of(page.text)}, csrf_from=path)
    assert r.status_code == 302, r.text[:2000]
    assert _due_at(hecht, region, due) > datetime.now(timezone.utc)
    assert "bevestigd als nog geldig" in b.get(path).text
    page = b.get(f"/admin/{region}/members", params={"reverify_due": "true"})
    assert "Duewaarde" not in page.text and "Fris" not in page.text
    assert fresh  # listed above, never due

    # Another region's member: 404 on the page and the action, and it stays unconfirmed
    assert b.get(f"/admin/{region}/members/{foreign}").status_code == 404
    assert b.post(f"/admin/{region}/members/{foreign}/reconfirm", {}, csrf_from=path).status_code == 404
    assert b.get(f"/admin/{elsewhere}/members/{foreign}").status_code == 404

    # Settings: the period (1-60 months) and the electorate rule with the other policy fields
    spath = f"/admin/{region}/settings"
    page = b.get(spath)
    assert 'name="reverify_months"' in page.text and 'name="unverified_leave_electorate"' in page.text
    assert re.search(r'id="reverify_months" name="reverify_months" value="1"', page.text)  # the period set above
    r = b.post(spath, _settings_form(page.text, reverify_months="61", unverified_leave_electorate="y"),
               csrf_from=spath)
    assert r.status_code == 422 and field_error(r.text, "reverify_months"), r.text[:3000]
    r = b.post(spath, _settings_form(page.text, reverify_months="twelve"), csrf_from=spath)
    assert r.status_code == 422 and field_error(r.text, "reverify_months"), r.text[:3000]
    r = b.post(spath, _settings_form(page.text, reverify_months="24", unverified_leave_electorate="y"),
               csrf_from=spath)
    assert r.status_code == 302, r.text[:3000]
    policy = _policy(hecht, region)["mandate_policy"]
    assert policy["reverify_months"] == 24 and policy["unverified_leave_electorate"] is True
    page = b.get(spath)
    assert 'id="unverified_leave_electorate" name="unverified_leave_electorate" value="y" role="switch" ' \
           'aria-describedby="unverified_leave_electorate-hint" checked' in page.text
    r = b.post(spath, _settings_form(page.text, reverify_months="24"), csrf_from=spath)  # switched off again
    assert r.status_code == 302, r.text[:3000]
    assert _policy(hecht, region)["mandate_policy"]["unverified_leave_electorate"] is False
