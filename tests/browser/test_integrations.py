"""The integrator's story in a real browser (Dutch), every service, worker and the portal as real
processes (tests/support/fleet.py) — issue 15:

a region admin (signed in by e-mail link) invites an integrator on /admin/<r>/integrators,
allowing ``agreement.*`` → notify mails the contact a link to /integrations/<r> → the
integrator follows it from the Maildir, asks for a sign-in link, signs in → creates a client
secret (shown once, with a copy button) → subscribes a local receiver (a real HTTP server
started by this test, stopped at its end) to ``agreement.*`` → sends a test ping and sees its
attempt (HTTP 204, latency) in the delivery log → an agreement is drafted (API) and
delivered → a replay since an hour ago delivers it again → reads the event catalogue (a
schema opened) and the signature guide.

Every page state is checked with axe-core (wcag2a, wcag2aa, wcag21aa; see conftest.Visit).
Screenshots go to docs/screenshots/ with HECHT_SCREENSHOTS=1 (scripts/screenshots.sh).
"""
from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import requests

from tests.browser.conftest import elapsed, riziv, wait_for_agreements_to_know, wait_for_link
from tests.browser.test_console import _, ok, sign_in_by_mail, submit
from tests.conftest import bearer, wait_until
from tests.support import maildir
from tests.support.fleet import fleet
from tests.support.receiver import Receiver

R = "elz-integraties"
REGION_NAME = "ELZ Integraties Zuid"
APP = "AZ Sint-Jan ontslagbrieven"


def test_integrator_story(hecht_env, tmp_path, visit):
    started = time.monotonic()
    suffix = hecht_env["suffix"]
    admin_email = f"coordinator.{suffix}@integraties.example.org"
    contact = f"it.{suffix}@azsintjan.example.org"
    with fleet(hecht_env, tmp_path / "logs") as f, Receiver() as receiver:
        portal, m_url, n_url = f.urls["portal"], f.urls["members"], f.urls["notify"]
        platform = bearer("platform-admin")
        ok(requests.post(f"{m_url}/v1/regions", headers=platform, timeout=10, json={
            "id": R, "name": REGION_NAME, "country": "BE", "kind": "eerstelijnszone",
            "municipalities": ["Brugge", "Damme"],
            "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}), 201)
        from tests.integration.test_notify_support import wait_for_region
        wait_for_region(R)  # notify invites integrators only in a region it has learned
        ok(requests.post(f"{m_url}/v1/staff", headers=platform, timeout=10, json={
            "email": admin_email, "name": "Coördinator Zuid", "language": "nl", "platform_admin": False,
            "admin_of": [R]}), 201)
        print(f"fleet up after {elapsed(started)}")

        # -- the region admin invites the integrator ---------------------------------------------
        a = visit(portal, "nl", shots=True)
        sign_in_by_mail(a, portal, f"/admin/{R}/integrators", admin_email, "region admin",
                        rf"/admin/{R}/integrators$")
        a.page.fill("#name", APP)
        a.page.fill("#contact_email", contact)
        a.page.check("main input[name=event_types][value='agreement.*']")
        submit(a, f"main form[action$='/admin/{R}/integrators'][method=post]", "integrators, invited",
               url=rf"/admin/{R}/integrators$")
        assert APP in a.text() and contact in a.text()
        a.shot("19-console-integrators")
        apps = ok(requests.get(f"{n_url}/v1/regions/{R}/integrators", headers=bearer("region-admin", R),
                               timeout=10))["items"]
        assert [(x["name"], x["event_types"], x["status"]) for x in apps] == [(APP, ["agreement.*"], "invited")]
        app_id = apps[0]["id"]

        # -- the integrator follows the invitation and signs in ---------------------------------
        invitation = wait_for_link(contact, rf"{re.escape(portal)}/integrations/{R}\b")
        i = visit(portal, "nl", shots=True)
        sign_in_by_mail(i, portal, invitation, contact, "integrator", rf"/integrations/{R}$")
        assert APP in i.text()
        i.click(f"main a[href='/integrations/{R}/{app_id}']", "application", url=rf"/integrations/{R}/{app_id}$")

        # a client secret, shown once, with a copy button (JavaScript on)
        i.click(f"main form[action$='/{app_id}/secrets'] button", "client secret created",
                url=rf"/integrations/{R}/{app_id}(/secrets)?$")
        secret = i.page.input_value("#client-secret")
        client_id = i.page.input_value("#client-id")
        assert len(secret) >= 20 and client_id
        assert i.page.locator("button[data-copy='client-secret']").is_visible()
        i.shot("20-integrations-credentials")
        token = requests.post(f"{n_url}/oauth/token", timeout=10,
                              data={"grant_type": "client_credentials", "client_id": client_id,
                                    "client_secret": secret})
        assert token.status_code == 200 and token.json()["access_token"], token.text

        # -- subscribe the local receiver to agreement.* ------------------------------------------
        i.click("main nav a[href$='/subscriptions/new']", "new subscription",
                url=rf"/integrations/{R}/{app_id}/subscriptions/new$")
        assert i.page.locator("main input[name=event_types][value^='member.']").count() == 0  # not allowed
        i.page.fill("#url", receiver.url)
        i.page.fill("#description", "Ontslagbrieven naar het ziekenhuis")
        i.page.check("main input[name=event_types][value='agreement.*']")
        i.page.fill("#rate_limit", "5")
        submit(i, "main form[action$='/subscriptions/new']", "subscription created",
               url=rf"/integrations/{R}/{app_id}/subscriptions/new$")
        assert i.page.input_value("#signing-key").startswith("whsec_")
        i.shot("21-integrations-subscription-created")
        sub = ok(requests.get(f"{n_url}/v1/regions/{R}/subscriptions", headers=bearer("region-admin", R),
                              timeout=10))["items"][0]
        assert sub["url"] == receiver.url and sub["rate_limit"] == 5 and sub["owner"] == app_id, sub
        i.click("main a[href$='/subscriptions/" + sub["id"] + "']", "subscription",
                url=rf"/subscriptions/{sub['id']}$")

        # -- a test ping: its attempt in the delivery log ------------------------------------------
        submit(i, "main form[action$='/ping']", "ping sent", url=rf"/subscriptions/{sub['id']}$")
        wait_until(lambda: any(e.get("type", "").endswith("subscription.ping.v1") or "ping" in e.get("type", "")
                               for e in receiver.events()), timeout=30, message="the ping at the receiver")

        def delivered() -> bool:
            i.goto(f"/integrations/{R}/{app_id}/subscriptions/{sub['id']}", "subscription, delivery log")
            return _("Delivered") in i.text("main section[aria-labelledby=log-heading] table")
        wait_until(delivered, timeout=30, interval=1, message="the ping's delivery shown as delivered")
        i.shot("22-integrations-delivery-log")
        i.click("main section[aria-labelledby=log-heading] tbody a", "delivery", url=r"/deliveries/[^/]+$")
        attempts = i.text("main table")
        assert "204" in attempts and " ms" in attempts, attempts
        i.shot("23-integrations-delivery")

        # -- an agreement event, delivered; a replay delivers it again ----------------------------
        # A draft never leaves the agreements service (issue 22): the integrator's first event of
        # the agreement is the vote opening, so the region needs a GP who may vote.
        gp = ok(requests.post(f"{m_url}/v1/regions/{R}/members", headers=bearer("region-admin", R), timeout=10,
                              json={"given_name": "Griet", "family_name": "Integraties",
                                    "email": f"griet.{suffix}@integraties.example.org", "language": "nl",
                                    "registration": {"scheme": "RIZIV", "number": riziv(4242)},
                                    "practice": {"name": "Praktijk Brugge", "postcode": "8000",
                                                 "municipality": "Brugge"}}), 201)["id"]
        ok(requests.post(f"{m_url}/v1/regions/{R}/members/{gp}/approve", headers=bearer("region-admin", R),
                         json={}, timeout=10))
        wait_for_agreements_to_know(R, {gp})
        agreement = ok(requests.post(f"{f.urls['agreements']}/v1/regions/{R}/agreements",
                                     headers=bearer("region-admin", R), timeout=10, json={
                             "title": "Ontslagmanagement AZ Sint-Jan", "theme": "frail-elderly",
                             "summary": "Ontslagbrief binnen 24 uur",
                             "partners": [{"name": "AZ Sint-Jan", "kind": "hospital"}],
                             "commitments": [{"party": "AZ Sint-Jan", "text": "Ontslagbrief binnen 24 uur"}],
                             "municipalities": ["Brugge"],
                             "effective_from": (date.today() + timedelta(days=60)).isoformat()}), 201)
        ok(requests.post(f"{f.urls['agreements']}/v1/regions/{R}/agreements/{agreement['id']}/mandate",
                         headers=bearer("region-admin", R), json={}, timeout=10), 201)

        def opened() -> int:
            return sum(1 for e in receiver.events() if "agreement.mandate_requested" in e.get("type", ""))
        wait_until(lambda: opened() >= 1, timeout=45, message="agreement.mandate_requested at the receiver")
        assert not [e for e in receiver.events() if e.get("subject") == agreement["id"]
                    and (e["data"].get("status") == "draft" or "agreement.drafted" in e["type"])]
        i.goto(f"/integrations/{R}/{app_id}/subscriptions/{sub['id']}", "subscription, agreement delivered")
        since = (datetime.now(ZoneInfo("Europe/Brussels")) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
        i.page.fill("#since", since)
        submit(i, "main form[action$='/replay']", "replay queued", url=rf"/subscriptions/{sub['id']}$")
        assert re.search(r"\d+", i.text("main .flash")), i.text("main")
        wait_until(lambda: opened() >= 2, timeout=45, message="the replayed agreement.mandate_requested")
        print(f"ping, delivery and replay after {elapsed(started)}")

        # -- the catalogue and the signature guide -------------------------------------------------
        i.click("main nav a[href='/integrations/catalogue']", "catalogue", url=r"/integrations/catalogue$")
        assert "agreement.mandate_requested" in i.text() and "agreement.drafted" not in i.text()
        summary = i.page.locator("article[id='agreement.mandate_requested'] details summary").first
        summary.click()
        i.check("catalogue, a schema opened")
        assert '"properties"' in i.text("article[id='agreement.mandate_requested'] details[open]")
        i.shot("24-integrations-catalogue")
        i.click("main a[href='/integrations/verify-signatures']", "signature guide",
                url=r"/integrations/verify-signatures$")
        assert "standardwebhooks" in i.text()

        # the mails: one invitation to the contact (plus the sign-in link), nothing else
        assert any(f"/integrations/{R}" in str(m) for m in maildir.messages(contact))
        print(f"story done after {elapsed(started)}")
