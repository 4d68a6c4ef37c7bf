"""The GP's story in a real browser, against every service, worker and the portal as real
processes (tests/support/fleet.py):

sign up through the portal's form (first with a wrong RIZIV number: the field error shows
next to the field) → confirm the address through the link in the Maildir → approved by the
region (API) → the approval e-mail's link → set capacity → an agreement's vote opens (API) →
the vote e-mail's link → vote, change the vote, see turnout and never the counts → the open
votes and agreements pages → download my data (JSON).

Run in Dutch (with screenshots), French and English; every state is checked with axe-core.
"""
from __future__ import annotations

import json
import re
import time
from datetime import date, timedelta
from functools import lru_cache

import pytest
import requests

from tests.browser.conftest import REPO, elapsed, riziv, wait_for_agreements_to_know, wait_for_link
from tests.conftest import bearer
from tests.support.fleet import fleet

R = "elz-verhaal"
REGION = {"id": R, "name": "ELZ Verhaal Gent", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Gent", "Merelbeke", "Melle"],
          "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}
NAMES = {"nl": ("Sofie", "Maes"), "fr": ("Élodie", "Lambert"), "en": ("Grace", "Hopper")}


@lru_cache
def tr(lang: str):
    """The portal's own catalogue: what the page must say in ``lang``."""
    from babel.support import Translations
    t = Translations.load(str(REPO / "services" / "portal" / "translations"), [lang], domain="messages")
    return t.gettext


def ok(r: requests.Response, *status: int) -> dict:
    assert r.status_code in (status or (200,)), f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else {}


def api_member(members_url: str, email: str) -> dict:
    items = ok(requests.get(f"{members_url}/v1/regions/{R}/members", headers=bearer("region-admin", R),
                            params={"limit": 100}, timeout=10))["items"]
    found = [m for m in items if (m.get("email") or "").lower() == email.lower()]
    assert len(found) == 1, (email, items)
    return found[0]


def other_gps(members_url: str, suffix: str, n: int = 4) -> list[dict]:
    """Colleagues signed up and approved through the API: they make the electorate bigger."""
    out = []
    for i in range(n):
        body = {"given_name": f"Collega{i}", "family_name": f"Verhaal{i}",
                "email": f"collega{i}.{suffix}@example.org",
                "language": "nl", "registration": {"scheme": "RIZIV", "number": riziv(5200 + i)},
                "practice": {"name": f"Praktijk {i}", "postcode": "9000", "municipality": "Gent"}}
        mid = ok(requests.post(f"{members_url}/v1/regions/{R}/members", json=body, timeout=10,
                               headers=bearer("region-admin", R)), 201)["id"]
        ok(requests.post(f"{members_url}/v1/regions/{R}/members/{mid}/approve", headers=bearer("region-admin", R),
                         json={}, timeout=10))
        out.append({"id": mid, **body})
    return out


def no_counts(text: str, gettext) -> None:
    """The ballot page shows turnout only: no number next to a choice's name."""
    for word in (gettext("For"), gettext("Against"), gettext("Abstain")):
        w = re.escape(word)
        hit = re.search(rf"{w}\W{{0,4}}\d|\d\W{{0,4}}{w}", text, re.IGNORECASE)
        assert hit is None, \
            f"the page shows a count next to {word!r}: …{text[max(0, hit.start() - 60):hit.end() + 60]}…"


@pytest.mark.parametrize("lang", ["nl", "fr", "en"])
def test_gp_story(lang, hecht_env, tmp_path, visit):
    started = time.monotonic()
    _ = tr(lang)
    suffix = hecht_env["suffix"]
    given, family = NAMES[lang]
    email = f"{given.lower().replace('é', 'e')}.{lang}.{suffix}@example.org"
    with fleet(hecht_env, tmp_path / "logs") as f:
        portal, m_url, a_url = f.urls["portal"], f.urls["members"], f.urls["agreements"]
        print(f"fleet up after {elapsed(started)}")
        ok(requests.post(f"{m_url}/v1/regions", headers=bearer("platform-admin"), json=REGION, timeout=10), 201)
        colleagues = other_gps(m_url, suffix)
        v = visit(portal, lang, shots=True)

        # -- public pages, then the sign-up form --------------------------------------------
        v.goto("/", "start page")
        v.shot("01-start")
        v.click("header a[href='/regions']", "regions", url=r"/regions$")
        assert REGION["name"] in v.text()
        v.shot("02-regions")
        v.click(f"main a[href='/regions/{R}']", "region page", url=rf"/regions/{R}$")
        assert "Merelbeke" in v.text()
        v.shot("03-region")
        v.click(f"main a[href='/regions/{R}/sign-up']", "sign-up form", url=rf"/regions/{R}/sign-up$")
        assert v.page.locator("h1").inner_text() == _("Sign up as a GP")
        if lang != "en":
            assert _("Sign up as a GP") != "Sign up as a GP", f"no {lang} translation for the sign-up page"
        v.shot("04-sign-up")

        p = v.page
        p.fill("#given_name", given)
        p.fill("#family_name", family)
        p.fill("#email", email)
        p.select_option("#language", lang)
        p.fill("#registration_number", "12345678901")          # wrong check digits
        p.fill("#practice_name", f"Praktijk {family}")
        p.fill("#practice_postcode", "9000")
        p.select_option("#practice_municipality", "Gent")
        v.click("main form button[type=submit]", "sign-up form with a field error", url=rf"/regions/{R}/sign-up$")
        error = p.locator("#registration_number-error")
        assert error.is_visible(), v.text()
        assert p.get_attribute("#registration_number", "aria-invalid") == "true"
        assert "registration_number-error" in (p.get_attribute("#registration_number", "aria-describedby") or "")
        assert p.input_value("#given_name") == given          # what was typed is kept
        v.shot("05-sign-up-error")

        p.fill("#registration_number", riziv(5300))
        v.click("main form button[type=submit]", "sign-up sent", url=r"/sign-up/sent$")
        assert _("Check your e-mail") in v.text()
        v.shot("06-sign-up-sent")

        # -- confirm the address: the link from the Maildir signs in --------------------------
        link = wait_for_link(email, rf"{re.escape(portal)}/sign-in/[A-Za-z0-9_\-]+")
        v.goto(link, "sign-in button (confirm link)")
        v.shot("07-sign-in-link")
        v.click("main form button[type=submit]", "membership, pending", url=rf"/r/{R}/membership$")
        assert _("Waiting for approval") in v.text()
        v.shot("08-membership-pending")
        me = api_member(m_url, email)
        assert me["status"] == "pending" and me.get("email_verified_at"), me
        print(f"signed up and confirmed after {elapsed(started)}")

        # -- approved by the region (API); the approval e-mail links to my membership ---------
        ok(requests.post(f"{m_url}/v1/regions/{R}/members/{me['id']}/approve", headers=bearer("region-admin", R),
                         json={}, timeout=10))
        approved = wait_for_link(email, rf"{re.escape(portal)}/r/{R}/membership\b")
        v.goto(approved, "membership, active")
        assert _("Active") in v.text() and _("Waiting for approval") not in v.text()
        p.check("input[name=status][value=limited]")
        p.fill("#note", "Alleen gezinsleden van patiënten")
        v.click("form[action$='/membership/capacity'] button[type=submit]", "membership, capacity saved",
                url=rf"/r/{R}/membership$")
        assert _("Your capacity has been saved.") in v.text()
        assert ok(requests.get(f"{m_url}/v1/regions/{R}/members/{me['id']}", headers=bearer("region-admin", R),
                               timeout=10))["capacity"]["status"] == "limited"
        v.shot("09-membership")

        # -- a vote opens (API); the e-mail links to the ballot -------------------------------
        wait_for_agreements_to_know(R, {me["id"]} | {c["id"] for c in colleagues})
        today = date.today()
        agreement = ok(requests.post(f"{a_url}/v1/regions/{R}/agreements", headers=bearer("region-admin", R), json={
            "title": "Transmurale zorg kwetsbare ouderen", "theme": "frail-elderly",
            "summary": "Afspraken over het ontslag van kwetsbare ouderen uit het ziekenhuis.",
            "partners": [{"name": "AZ Sint-Lucas", "kind": "hospital"},
                         {"name": "Wit-Gele Kruis", "kind": "home-nursing"}],
            "commitments": [{"party": "AZ Sint-Lucas", "text": "Ontslagbrief binnen 24 uur."},
                            {"party": "ELZ Verhaal Gent", "text": "Huisbezoek binnen 3 dagen."}],
            "municipalities": ["Gent"], "effective_from": (today + timedelta(days=30)).isoformat(),
            "documents": [{"title": "Tekst", "url": "https://example.org/afspraak.pdf"}]}, timeout=10), 201)
        aid = agreement["id"]
        ok(requests.post(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate", headers=bearer("region-admin", R),
                         json={}, timeout=10), 200, 201)
        for c, choice in zip(colleagues, ("for", "for", "abstain")):   # the fourth colleague never votes
            ok(requests.put(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate/votes/{c['id']}",
                            headers=bearer("gp", R, c["id"]), json={"choice": choice}, timeout=10))
        ballot_link = wait_for_link(email, rf"{re.escape(portal)}/r/{R}/votes/{aid}\b")
        v.goto(ballot_link, "ballot, not voted yet")
        assert p.locator("input[name=choice]:checked").count() == 0
        v.shot("10-ballot")

        p.check("input[name=choice][value=for]")
        v.click("#ballot form button[type=submit]", "ballot, voted", url=rf"/r/{R}/votes/{aid}$")
        assert p.is_checked("input[name=choice][value=for]")
        assert _("For") in p.locator("#ballot p").first.inner_text()
        p.check("input[name=choice][value=against]")
        v.click("#ballot form button[type=submit]", "ballot, vote changed", url=rf"/r/{R}/votes/{aid}$")
        text = v.text()
        assert p.is_checked("input[name=choice][value=against]")
        assert _("Against") in p.locator("#ballot p").first.inner_text()
        turnout = p.locator(".turnout").inner_text()     # 4 of the 5 electors have voted
        assert re.search(r"\b4\b", turnout) and re.search(r"\b5\b", turnout) and "80%" in turnout, turnout
        no_counts(text, _)
        html = p.content()
        assert "for_" not in html and '"against":' not in html   # no tally data hidden in the page
        v.shot("11-ballot-voted")
        mine = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate/votes/{me['id']}",
                               headers=bearer("gp", R, me["id"]), timeout=10))
        assert mine["choice"] == "against", mine

        v.click(f"header a[href='/r/{R}/votes']", "open votes", url=rf"/r/{R}/votes$")
        assert agreement["title"] in v.text()
        v.shot("12-votes")
        v.click(f"header a[href='/r/{R}/agreements']", "agreements", url=rf"/r/{R}/agreements$")
        assert agreement["title"] in v.text()
        v.shot("13-agreements")

        # -- my data --------------------------------------------------------------------------
        v.click(f"header a[href='/r/{R}/my-data']", "my data", url=rf"/r/{R}/my-data$")
        v.shot("14-my-data")
        with p.expect_download() as dl:
            p.locator(f"main a[href='/r/{R}/my-data.json']").click()
        path = tmp_path / "my-data.json"
        dl.value.save_as(path)
        data = json.loads(path.read_text())
        assert data["member_id"] == me["id"] and data["region_id"] == R
        assert email.lower() in json.dumps(data["members"]).lower()
        assert "vote_opened" in json.dumps(data["notify"]), "the vote e-mail is not in the notify export"
        assert data["portal"]["email"].lower() == email.lower() and data["portal"]["sessions"]
        # a colleague's data is nowhere in it
        assert all(c["email"] not in path.read_text() for c in colleagues)
        print(f"story in {lang} done after {elapsed(started)}; {len(v.axe.checked)} states checked with axe")
