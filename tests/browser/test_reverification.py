"""Periodic re-verification of registrations in a real browser (Dutch), every service a real
process (issue 16):

a GP whose registration is due signs in from the e-mail's link to "my membership" → sees when
it was last confirmed and the confirmation form → a wrong corrected number shows its error
next to the field → confirms with the number as it is and sees the thank-you; a region admin
lists the members whose re-confirmation is due (the marker), opens one, sees the dates,
confirms on the GP's behalf, and finds the period and the electorate rule on the settings page.

Every page state is checked with axe-core (conftest.Visit): 0 violations.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from hecht import mongo
from hecht.config import settings
from tests.browser.conftest import riziv
from tests.browser.test_console import _, ok, sign_in_by_mail
from tests.conftest import bearer
from tests.support.fleet import fleet

R = "elz-herbevestiging"


def test_reverification_story(hecht_env, tmp_path, visit):
    suffix = hecht_env["suffix"]
    admin_email = f"admin.{suffix}@reverify.example.org"
    with fleet(hecht_env, tmp_path / "logs") as f:
        portal, m_url = f.urls["portal"], f.urls["members"]
        platform, admin_token = bearer("platform-admin"), bearer("region-admin", R)
        ok(requests.post(f"{m_url}/v1/regions", headers=platform, timeout=10, json={
            "id": R, "name": "ELZ Herbevestiging", "country": "BE", "kind": "eerstelijnszone",
            "municipalities": ["Gent"],
            "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14,
                               "reverify_months": 1}}), 201)
        ok(requests.post(f"{m_url}/v1/staff", headers=platform, timeout=10, json={
            "email": admin_email, "name": "Hilde Herbevestig", "language": "nl", "platform_admin": False,
            "admin_of": [R]}), 201)
        gps = {}
        for key, family, serial in (("due", "Vervallen", 7400), ("other", "Smolders", 7401)):
            email = f"{key}.{suffix}@reverify.example.org"
            mid = ok(requests.post(f"{m_url}/v1/regions/{R}/members", timeout=10, headers=bearer("region-admin", R), json={
                "given_name": "Gert", "family_name": family, "email": email, "language": "nl",
                "registration": {"scheme": "RIZIV", "number": riziv(serial)},
                "practice": {"name": f"Praktijk {family}", "postcode": "9000", "municipality": "Gent"}}), 201)["id"]
            ok(requests.post(f"{m_url}/v1/regions/{R}/members/{mid}/approve", headers=admin_token, json={},
                             timeout=10))
            gps[key] = {"id": mid, "email": email, "number": riziv(serial)}
        # last verified four months ago (the clock cannot be moved inside Mongo)
        s = settings("members")
        mongo.database(s.mongo_uri, s.database_name).members.update_many(
            {"_id": {"$in": [gps["due"]["id"], gps["other"]["id"]]}},
            {"$set": {"verified_at": datetime.now(timezone.utc) - timedelta(days=120)}})

        # -- the GP confirms from "my membership" ---------------------------------------------------
        g = visit(portal, "nl")
        p = g.page
        mine = f"/r/{R}/membership"
        sign_in_by_mail(g, portal, mine, gps["due"]["email"], "GP due", rf"{mine}$")
        assert _("Registration last confirmed") in g.text() and _("Confirm your registration") in g.text()
        p.fill("#registration-number", "123")
        g.click("form[action$='/membership/reconfirm'] button[type=submit]", "membership: reconfirm, wrong number")
        assert p.get_attribute("#registration-number", "aria-invalid") == "true"
        assert p.locator("#registration-number-error").inner_text()
        p.fill("#registration-number", gps["due"]["number"])
        g.click("form[action$='/membership/reconfirm'] button[type=submit]", "membership: confirmed",
                url=rf"{mine}$")
        assert _("Thank you: your registration is confirmed.") in g.text("body")

        # -- the region admin: the list of members due, a member, the settings ----------------
        a = visit(portal, "nl")
        due_list = f"/admin/{R}/members?reverify_due=true"
        sign_in_by_mail(a, portal, due_list, admin_email, "region admin", r"/members\?reverify_due=true$")
        listed = a.text()
        assert "Smolders" in listed and "Vervallen" not in listed, listed  # the GP confirmed above
        assert _("re-confirmation due") in listed
        assert a.page.is_checked("#reverify_due")
        a.click(f"a[href='/admin/{R}/members/{gps['other']['id']}']", "console: member due")
        assert _("Next confirmation due") in a.text()
        a.click("form[action$='/reconfirm'] button[type=submit]", "console: member confirmed by staff",
                url=rf"/members/{gps['other']['id']}$")
        assert _("The registration has been confirmed as still valid.") in a.text("body")
        member = ok(requests.get(f"{m_url}/v1/regions/{R}/members/{gps['other']['id']}", headers=admin_token,
                                 timeout=10))
        due_at = datetime.fromisoformat(member["reverify_due_at"].replace("Z", "+00:00"))
        assert due_at > datetime.now(timezone.utc)
        a.goto(due_list, "console: nobody due any more")
        assert "Smolders" not in a.text() and "Vervallen" not in a.text()
        a.goto(f"/admin/{R}/settings", "console: settings with the re-verification policy")
        assert a.page.input_value("#reverify_months") == "1"
        assert not a.page.is_checked("#unverified_leave_electorate")
