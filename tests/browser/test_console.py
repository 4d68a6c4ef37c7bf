"""The staff's story in a real browser (Dutch), against every service, worker and the portal
as real processes (tests/support/fleet.py) — issue 14:

a platform admin (the first one: ``hecht staff add --platform-admin``) signs in through the
portal's e-mail link → creates a region on ``/platform`` → invites a region admin there → the region
admin signs in from the invitation e-mail → approves two GPs and rejects one (all signed up
through the API) → drafts an agreement with two partners (an API field error shown next to
the field; a stale edit from a second tab refused with "changed by someone else") → opens
the vote → two GPs vote
through the portal (from the vote e-mail's link) → the admin closes the vote early and signs
→ the dashboard shows the agreement active → the capacity chart and its CSV.

Isolation: an admin of another region, signed in the same way, gets 404 pages for every
console page of the first region (and for its members' and agreements' ids under their own
region's URLs, and for a POST), and none of its data (names, e-mail addresses, titles,
ids) appears in any HTML that admin is shown, while their own region's data does.

Every console page state is checked with axe-core (wcag2a, wcag2aa, wcag21aa; see
conftest.Visit). Screenshots of the dashboard, the members table, the agreement editor and
the capacity chart go to docs/screenshots/ with HECHT_SCREENSHOTS=1 (scripts/screenshots.sh).
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from datetime import date, timedelta
from functools import lru_cache

import requests

from tests.browser.conftest import REPO, elapsed, riziv, wait_for_agreements_to_know, wait_for_link
from tests.conftest import bearer
from tests.support.fleet import VENV_BIN, fleet

R = "elz-console-noord"
REGION_NAME = "ELZ Console Noord"
MUNICIPALITIES = ["Gent", "Evergem", "Wachtebeke"]
OTHER = "elz-console-andere"
OTHER_NAME = "ELZ Andere Regio"
TITLE = "Zorgpad dementie thuis"
SECOND_TITLE = "Weekendwacht Meetjesland"
PARTNERS = [("AZ Maria Middelares", "hospital"), ("Familiehulp", "home-nursing")]
# The GPs of R, signed up through the API (public). ``An`` is approved through the API
# beforehand (so the electorate is three and two votes do not close the vote by themselves).
GPS = {
    "an": ("An", "Verhelst", "Gent", 7100),
    "bram": ("Bram", "Declercq", "Evergem", 7101),
    "chloe": ("Chloé", "Van Damme", "Gent", 7102),
    "dirk": ("Dirk", "Vermeulen", "Wachtebeke", 7103),
    "eva": ("Eva", "Goossens", "Evergem", 7104),     # stays pending: the dashboard lists her
}
REJECT_REASON = "Geen praktijk in de regio"


@lru_cache
def catalogue():
    from babel.support import Translations
    return Translations.load(str(REPO / "services" / "portal" / "translations"), ["nl"], domain="messages")


def _(msgid: str) -> str:
    """What the Dutch page says for ``msgid`` (the portal's own catalogue)."""
    return catalogue().gettext(msgid)


def ok(r: requests.Response, *status: int) -> dict:
    assert r.status_code in (status or (200,)), f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else {}


def link_to_sign_in(portal: str, email: str, *, after: int = 0) -> str:
    return wait_for_link(email, rf"{re.escape(portal)}/sign-in/[A-Za-z0-9_\-]+", after=after)


def sign_in_by_mail(v, portal: str, path: str, email: str, label: str, landing: str) -> None:
    """Signed out, ``path`` sends the person to sign in; they ask for a link, follow it from
    the Maildir and land on ``landing`` (a regex)."""
    from tests.support import maildir
    before = len(maildir.messages(email))
    v.goto(path, f"{label}: sign-in (redirected from {path})", url=r"/sign-in\?next=")
    v.page.fill("#email", email)
    v.click("main form button[type=submit]", f"{label}: sign-in link sent", url=r"/sign-in/sent$")
    v.goto(link_to_sign_in(portal, email, after=before), f"{label}: sign-in button")
    v.click("main form button[type=submit]", f"{label}: signed in", url=landing)


def submit(v, form: str, label: str, url: str | None = None) -> None:
    v.click(f"{form} button[type=submit]", label, url=url)


def secrets_absent(html: str, secrets: list[str], where: str) -> None:
    """None of ``secrets`` in ``html``, apart from the path the person asked for itself (the
    language switch echoes it: an id the person typed is not data the page gave away)."""
    low = html.replace(where, "").lower()
    found = [s for s in secrets if s.lower() in low]
    assert not found, f"{where}: the page shows another region's data: {found}"


def signup(m_url: str, key: str, suffix: str) -> dict:
    given, family, municipality, serial = GPS[key]
    email = f"{key}.{suffix}@console.example.org"
    body = {"given_name": given, "family_name": family, "email": email, "language": "nl",
            "registration": {"scheme": "RIZIV", "number": riziv(serial)},
            "practice": {"name": f"Praktijk {family}", "postcode": "9000", "municipality": municipality}}
    mid = ok(requests.post(f"{m_url}/v1/regions/{R}/members", json=body, timeout=10,
                           headers=bearer("region-admin", R)), 201)["id"]
    return {"id": mid, "key": key, "name": f"{given} {family}", **body}


def member(m_url: str, mid: str) -> dict:
    return ok(requests.get(f"{m_url}/v1/regions/{R}/members/{mid}", headers=bearer("region-admin", R), timeout=10))


def test_console_story(hecht_env, tmp_path, visit):
    started = time.monotonic()
    suffix = hecht_env["suffix"]
    platform_email = f"platform.{suffix}@console.example.org"
    admin_email = f"coordinator.{suffix}@console.example.org"
    other_email = f"andere.{suffix}@console.example.org"
    today = date.today()
    with fleet(hecht_env, tmp_path / "logs") as f:
        portal, m_url, a_url = f.urls["portal"], f.urls["members"], f.urls["agreements"]
        platform_token = bearer("platform-admin")
        print(f"fleet up after {elapsed(started)}")

        # -- beforehand (API): the platform admin's account; another region with its admin ---
        # the first platform admin comes from the CLI, straight into the members database
        out = subprocess.run([str(VENV_BIN / "hecht"), "staff", "add", "--email", platform_email,
                              "--name", "Petra Platform", "--platform-admin"], cwd=REPO, env=dict(os.environ),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "created" in out.stdout, (out.returncode, out.stdout, out.stderr)
        ok(requests.post(f"{m_url}/v1/regions", headers=platform_token, timeout=10, json={
            "id": OTHER, "name": OTHER_NAME, "country": "BE", "kind": "eerstelijnszone", "municipalities": ["Aalst"],
            "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}), 201)
        ok(requests.post(f"{m_url}/v1/staff", headers=platform_token, timeout=10, json={
            "email": other_email, "name": "Olivier Anders", "language": "nl", "platform_admin": False,
            "admin_of": [OTHER]}), 201)
        olga = ok(requests.post(f"{m_url}/v1/regions/{OTHER}/members", timeout=10, headers=bearer("region-admin", OTHER), json={
            "given_name": "Olga", "family_name": "Elders", "email": f"olga.{suffix}@console.example.org",
            "language": "nl", "registration": {"scheme": "RIZIV", "number": riziv(7199)},
            "practice": {"name": "Praktijk Elders", "postcode": "9300", "municipality": "Aalst"}}), 201)

        # -- the platform admin signs in and creates the region ------------------------------
        v = visit(portal, "nl", shots=True)
        sign_in_by_mail(v, portal, "/platform", platform_email, "platform admin", r"/platform$")
        create_region(v)
        region = ok(requests.get(f"{m_url}/v1/regions/{R}", headers=platform_token, timeout=10))
        assert region["name"] == REGION_NAME and region["municipalities"] == MUNICIPALITIES, region

        # -- … and invites its region admin (the portal mails the sign-in link) --------------
        invite_region_admin(v, admin_email)
        staff = ok(requests.get(f"{m_url}/v1/staff", headers=platform_token, params={"q": admin_email},
                                timeout=10))["items"]
        assert [(s["email"], s["admin_of"], s["status"]) for s in staff] == [(admin_email, [R], "invited")], staff
        print(f"region created and admin invited after {elapsed(started)}")

        # -- GPs sign up (API); An is approved beforehand -------------------------------------
        gps = {k: signup(m_url, k, suffix) for k in GPS}
        ok(requests.post(f"{m_url}/v1/regions/{R}/members/{gps['an']['id']}/approve",
                         headers=bearer("region-admin", R), json={}, timeout=10))

        # -- the region admin signs in from the invitation ------------------------------------
        a = visit(portal, "nl", shots=True)
        ap = a.page
        a.goto(link_to_sign_in(portal, admin_email), "region admin: invitation's sign-in button")
        a.click("main form button[type=submit]", "dashboard", url=rf"/admin/{R}$")
        dash = a.text()
        assert REGION_NAME in a.text("body")
        # pending sign-ups, oldest first
        order = [dash.find(gps[k]["name"]) for k in ("bram", "chloe", "dirk", "eva")]
        assert all(i >= 0 for i in order) and order == sorted(order), (order, dash[:2000])
        assert ok(requests.get(f"{m_url}/v1/staff", headers=platform_token, params={"q": admin_email},
                               timeout=10))["items"][0]["status"] == "active"

        # -- members: approve two, reject one -------------------------------------------------
        a.goto(f"/admin/{R}/members?status=pending", "members, pending")
        for k in ("bram", "chloe", "dirk", "eva"):
            assert gps[k]["name"] in a.text()
        assert gps["an"]["name"] not in a.text()
        a.goto(f"/admin/{R}/members", "members")
        a.shot("16-console-members")
        for k in ("bram", "chloe"):
            a.goto(f"/admin/{R}/members/{gps[k]['id']}", f"member {k}, pending")
            submit(a, f"form[action$='/members/{gps[k]['id']}/approve']", f"member {k}, approved",
                   url=rf"/admin/{R}/members/{gps[k]['id']}")
            assert member(m_url, gps[k]["id"])["status"] == "active"
            assert _("Active") in a.text("main hgroup")
        d = gps["dirk"]
        a.goto(f"/admin/{R}/members/{d['id']}", "member dirk, pending")
        reject_member(a, d, REJECT_REASON)
        dirk = member(m_url, d["id"])
        assert dirk["status"] == "rejected", dirk
        assert REJECT_REASON in str(dirk), dirk
        print(f"members decided after {elapsed(started)}")

        # capacity: what the active GPs report (API), then today's snapshot (the page or API)
        for k, status in (("an", "open"), ("bram", "limited"), ("chloe", "open")):
            ok(requests.put(f"{m_url}/v1/regions/{R}/members/{gps[k]['id']}/capacity",
                            headers=bearer("region-admin", R), timeout=10,
                            json={"status": status, "since": today.isoformat()}))

        # -- the agreement: a draft with two partners, then the vote --------------------------
        a.goto(f"/admin/{R}/agreements/new", "agreement editor, empty")
        aid = draft_agreement(a, today)
        draft = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}", headers=bearer("region-admin", R),
                                timeout=10))
        assert draft["status"] == "draft" and [(x["name"], x["kind"]) for x in draft["partners"]] == PARTNERS, draft
        assert draft["municipalities"] == ["Gent", "Evergem"], draft
        stale_edit(a, a_url, aid)
        active = {gps[k]["id"] for k in ("an", "bram", "chloe")}
        wait_for_agreements_to_know(R, active)
        a.goto(f"/admin/{R}/agreements/{aid}", "draft, ready for the vote")
        submit(a, f"form[action$='/agreements/{aid}/open-vote']", "agreement, vote opened",
               url=rf"/admin/{R}/agreements/{aid}")
        tally = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate",
                                headers=bearer("region-admin", R), timeout=10))
        assert tally["electorate_size"] == 3, tally

        # -- two GPs vote through the portal, from the vote e-mail's link ---------------------
        for k in ("bram", "chloe"):
            g = visit(portal, "nl")
            ballot = wait_for_link(gps[k]["email"], rf"{re.escape(portal)}/r/{R}/votes/{aid}\b")
            path = ballot[len(portal):]
            sign_in_by_mail(g, portal, path, gps[k]["email"], f"GP {k}", rf"/r/{R}/votes/{aid}$")
            g.page.check("input[name=choice][value=for]")
            g.click("#ballot form button[type=submit]", f"GP {k}: voted", url=rf"/r/{R}/votes/{aid}$")
            assert g.page.is_checked("input[name=choice][value=for]")
        print(f"GPs voted after {elapsed(started)}")

        # -- the admin sees the turnout, closes the vote early and signs ----------------------
        a.goto(f"/admin/{R}", "dashboard, a vote open")
        votes = ap.locator("section[aria-labelledby=votes-heading]").inner_text()
        assert TITLE in votes and re.search(r"\b2 / 3\b", votes), votes
        a.goto(f"/admin/{R}/agreements/{aid}", "agreement, 2 of 3 voted")
        turnout = ap.locator(".turnout").first.inner_text()
        assert re.search(r"\b2\b", turnout) and re.search(r"\b3\b", turnout) and "67" in turnout, turnout
        close_vote(a, aid)
        mandated = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}", headers=bearer("region-admin", R),
                                   timeout=10))
        assert mandated["status"] == "mandated", mandated
        submit(a, f"form[action$='/agreements/{aid}/sign']", "agreement, signed",
               url=rf"/admin/{R}/agreements/{aid}")
        signed = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}", headers=bearer("region-admin", R),
                                 timeout=10))
        assert signed["status"] == "active", signed
        assert _("Active") in a.text("main hgroup")

        # another agreement's vote is open (API), so the dashboard has something in every part
        second = ok(requests.post(f"{a_url}/v1/regions/{R}/agreements", headers=bearer("region-admin", R), json={
            "title": SECOND_TITLE, "theme": "out-of-hours", "summary": "Weekendwacht in de wachtpost.",
            "partners": [{"name": "Wachtpost Meetjesland", "kind": "out-of-hours-post"}],
            "commitments": [{"party": "Wachtpost Meetjesland", "text": "Triage door de wachtpost."}],
            "municipalities": ["Evergem"], "effective_from": (today + timedelta(days=30)).isoformat()},
            timeout=10), 201)["id"]
        ok(requests.post(f"{a_url}/v1/regions/{R}/agreements/{second}/mandate", headers=bearer("region-admin", R),
                         json={}, timeout=10), 200, 201)
        ok(requests.put(f"{a_url}/v1/regions/{R}/agreements/{second}/mandate/votes/{gps['an']['id']}",
                        headers=bearer("gp", R, gps["an"]["id"]), json={"choice": "for"}, timeout=10))

        # -- the dashboard shows it active (it ends within 60 days) ---------------------------
        a.goto(f"/admin/{R}", "dashboard, agreement active")
        active_now = ap.locator("section[aria-labelledby=active-heading] li", has_text=TITLE)
        assert active_now.count() == 1 and _("Active") in active_now.inner_text(), a.text()
        due = ap.locator("section[aria-labelledby=due-heading]").inner_text()
        assert TITLE in due and (today + timedelta(days=45)).strftime("%Y") in due, due
        votes = ap.locator("section[aria-labelledby=votes-heading]").inner_text()
        assert TITLE not in votes and SECOND_TITLE in votes and re.search(r"\b1 / 3\b", votes), votes
        pending = ap.locator("section[aria-labelledby=pending-heading]").inner_text()
        assert gps["eva"]["name"] in pending and gps["bram"]["name"] not in pending, pending
        a.shot("15-console-dashboard")

        # -- capacity over time ---------------------------------------------------------------
        capacity_history(a, m_url, hecht_env["dbs"]["members"], today)
        print(f"console story done after {elapsed(started)}")

        # -- isolation: the other region's admin sees none of it ------------------------------
        secrets = [REGION_NAME, TITLE, SECOND_TITLE, "Wachtpost Meetjesland", admin_email, platform_email,
                   REJECT_REASON, aid, second, *(x for x, _ in PARTNERS)]
        for g in gps.values():
            secrets += [g["email"], g["given_name"] + " " + g["family_name"], g["family_name"], g["id"]]
        o = visit(portal, "nl")
        op = o.page
        sign_in_by_mail(o, portal, f"/admin/{OTHER}", other_email, "other admin", rf"/admin/{OTHER}$")
        secrets_absent(op.content(), secrets, f"/admin/{OTHER}")
        assert "Olga Elders" in o.text(), o.text()        # their own region's data is there
        for path in (f"/admin/{OTHER}/members", f"/admin/{OTHER}/agreements", f"/admin/{OTHER}/capacity",
                     f"/admin/{OTHER}/staff", f"/admin/{OTHER}/notifications", f"/admin/{OTHER}/settings",
                     "/choose-region"):
            o.goto(path, f"other admin: {path}")
            secrets_absent(op.content(), secrets, path)
        forbidden = [f"/admin/{R}", f"/admin/{R}/members", f"/admin/{R}/members?status=pending",
                     f"/admin/{R}/members/{gps['bram']['id']}", f"/admin/{R}/members/{d['id']}",
                     f"/admin/{R}/agreements", f"/admin/{R}/agreements/new", f"/admin/{R}/agreements/{aid}",
                     f"/admin/{R}/notifications", f"/admin/{R}/settings", f"/admin/{R}/capacity",
                     f"/admin/{R}/staff", f"/admin/{R}/members/{olga['id']}",
                     # the first region's ids under the other admin's own region
                     f"/admin/{OTHER}/members/{gps['bram']['id']}", f"/admin/{OTHER}/members/{d['id']}",
                     f"/admin/{OTHER}/agreements/{aid}", f"/admin/{OTHER}/agreements/{second}",
                     "/platform", f"/platform/regions/{R}", "/platform/staff", "/platform/regions/new"]
        for path in forbidden:
            o.goto(path, f"other admin: {path} (not theirs)", status=404)
            secrets_absent(op.content(), secrets, path)
        csv = op.request.get(f"{portal}/admin/{R}/capacity.csv", max_redirects=0)
        assert csv.status == 404, (csv.status, csv.text()[:300])
        secrets_absent(csv.text(), secrets, "capacity.csv")
        # a POST to the first region's forms is refused too (with a valid CSRF token of the
        # other admin's own session, so only the region check can stop it)
        o.goto(f"/admin/{OTHER}/members/{olga['id']}", "other admin: their own pending sign-up")
        token = op.locator("main input[name=csrf_token]").first.get_attribute("value")
        assert token
        for url, form in ((f"/admin/{R}/members/{gps['an']['id']}/suspend", {"reason": "x"}),
                          (f"/admin/{OTHER}/members/{gps['an']['id']}/suspend", {"reason": "x"}),
                          (f"/admin/{R}/agreements/{second}/close-vote", {}),
                          (f"/admin/{OTHER}/agreements/{second}/close-vote", {})):
            r = op.request.post(f"{portal}{url}", form={"csrf_token": token, **form}, max_redirects=0)
            assert r.status == 404, (url, r.status)
            secrets_absent(r.text(), secrets, url)
        assert member(m_url, gps["an"]["id"])["status"] == "active"
        assert ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{second}/mandate",
                               headers=bearer("region-admin", R), timeout=10))["status"] == "open"
        print(f"isolation checked after {elapsed(started)}; {len(v.axe.checked)} states checked with axe")


# --------------------------------------------------------------------------------------------
# Steps that fill the console's forms
# --------------------------------------------------------------------------------------------
def create_region(v) -> None:
    p = v.page
    v.click("main nav a[href='/platform/regions/new']", "platform: new region", url=r"/platform/regions/new$")
    p.fill("#id", R)
    p.select_option("#country", "BE")
    p.fill("#name", REGION_NAME)
    p.select_option("#kind", "eerstelijnszone")
    p.fill("#municipalities", "\n".join(MUNICIPALITIES))
    p.fill("#quorum", "0,5")                 # a Dutch decimal comma is understood
    p.fill("#approval_threshold", "0.5")
    p.fill("#voting_period_days", "14")
    submit(v, "main form", "platform: region created", url=r"/platform$")
    row = v.page.locator("main table tbody tr", has_text=REGION_NAME)
    assert row.count() == 1 and R in row.inner_text(), v.text()


def invite_region_admin(v, email: str) -> None:
    p = v.page
    v.click("main nav a[href='/platform/staff/new']", "platform: invite staff", url=r"/platform/staff/new$")
    p.fill("#name", "Katrien Coördinator")
    p.fill("#email", email)
    p.select_option("#language", "nl")
    p.locator("main form label", has_text=REGION_NAME).locator("input[name=admin_of]").check()
    assert not p.is_checked("#platform_admin")
    submit(v, "main form", "platform: staff invited", url=r"/platform/staff$")
    row = v.page.locator("main table tbody tr", has_text=email)
    assert row.count() == 1 and R in row.inner_text(), v.text()


def reject_member(a, d: dict, reason: str) -> None:
    form = f"form[action$='/members/{d['id']}/reject']"
    a.page.fill(f"{form} textarea[name=reason]", reason)
    submit(a, form, "member dirk, rejected", url=rf"/admin/{R}/members/{d['id']}$")
    assert _("Not approved") in a.text("main hgroup")


def draft_agreement(a, today: date) -> str:
    """The editor: two partner rows to begin with; 'add a partner row' keeps what was typed
    and adds one (the repeatable rows work without JavaScript: the form posts back)."""
    p = a.page
    p.fill("#title", TITLE)
    p.select_option("#theme", "frail-elderly")
    p.fill("#summary", "Afspraken over thuiszorg voor mensen met dementie.")
    p.fill("#effective_from", today.isoformat())
    p.fill("#effective_until", (today + timedelta(days=45)).isoformat())
    p.check("input[name=municipalities][value=Gent]")
    p.check("input[name=municipalities][value=Evergem]")
    p.fill("[name='partners-0-name']", PARTNERS[0][0])
    p.select_option("[name='partners-0-kind']", PARTNERS[0][1])
    rows = p.locator("[name$='-name'][name^='partners-']").count()
    a.click("main form.editor button[name=add][value=partners]", "agreement editor, a partner row added",
            url=rf"/admin/{R}/agreements/new$")
    assert p.locator("[name$='-name'][name^='partners-']").count() == rows + 1
    assert p.input_value("[name='partners-0-name']") == PARTNERS[0][0]      # what was typed is kept
    assert p.input_value("#title") == TITLE
    p.fill("[name='partners-1-name']", PARTNERS[1][0])
    p.select_option("[name='partners-1-kind']", PARTNERS[1][1])
    p.fill("[name='commitments-0-party']", PARTNERS[0][0])
    p.fill("[name='commitments-0-text']", "Een verwijsbrief binnen 48 uur.")
    p.fill("[name='commitments-1-party']", REGION_NAME)
    p.fill("[name='commitments-1-text']", "Huisbezoek binnen 3 werkdagen na ontslag.")
    p.fill("[name='documents-0-title']", "Tekst van de afspraak")
    # the API refuses a plain-http document: its error shows next to that field, and
    # everything typed is kept
    p.fill("[name='documents-0-url']", "http://example.org/dementie.pdf")
    a.click("main form.editor > button[type=submit]:not([name=add])", "agreement editor, a field error",
            url=rf"/admin/{R}/agreements/new$")
    error = p.locator("#documents-0-url-error")
    assert error.is_visible() and "https://" in error.inner_text(), a.text()
    assert p.get_attribute("#documents-0-url", "aria-invalid") == "true"
    assert "documents-0-url-error" in (p.get_attribute("#documents-0-url", "aria-describedby") or "")
    assert p.locator("[aria-invalid=true]").count() == 1, "only the document's address is wrong"
    field, message = p.locator("#documents-0-url").bounding_box(), error.bounding_box()
    assert message["y"] >= field["y"] + field["height"] - 1, f"the error is drawn under its field: {field} {message}"
    a.shot("17-console-agreement-editor")
    assert p.input_value("[name='partners-1-name']") == PARTNERS[1][0] and p.input_value("#title") == TITLE
    assert p.is_checked("input[name=municipalities][value=Evergem]")
    p.fill("[name='documents-0-url']", "https://example.org/dementie.pdf")
    a.click("main form.editor > button[type=submit]:not([name=add])", "agreement, draft saved",
            url=rf"/admin/{R}/agreements/(?!new)[A-Za-z0-9_-]+$")
    return p.url.rstrip("/").rsplit("/", 1)[-1]


def stale_edit(a, a_url: str, aid: str) -> None:
    """Two tabs edit the same draft: the second save is refused with "changed by someone else",
    shows the current values beside the person's own input, and overwrites nothing."""
    from tests.browser.conftest import Visit
    b = Visit(a.context, a.axe, a.base, javascript=True, lang="nl", shots=None)
    try:
        b.goto(f"/admin/{R}/agreements/{aid}", "draft editor, second tab")
        b.page.fill("#summary", "Aangepast in het tweede tabblad.")
        b.click("main form.editor > button[type=submit]:not([name=add])", "draft saved in the second tab",
                url=rf"/admin/{R}/agreements/{aid}$")
    finally:
        b.close()
    p = a.page                                    # the first tab still has the older version
    p.fill("#title", TITLE + " (herzien)")
    a.click("main form.editor > button[type=submit]:not([name=add])", "draft editor, changed by someone else",
            url=rf"/admin/{R}/agreements/{aid}$")
    assert p.locator("main [role=alert]").first.is_visible()
    assert _("Changed by someone else: this was changed in the meantime and nothing has been saved. The current "
             "values are shown next to your input; check them and save again if you still want your change.") \
        in a.text()
    assert "Aangepast in het tweede tabblad." in p.locator("main .current-values").inner_text()
    assert p.input_value("#title") == TITLE + " (herzien)"            # the person's own input is kept
    now = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}", headers=bearer("region-admin", R),
                          timeout=10))
    assert now["title"] == TITLE and now["summary"] == "Aangepast in het tweede tabblad.", now


def close_vote(a, aid: str) -> None:
    # one click asks first (issue 28): the turnout so far and what closing means, then confirm
    submit(a, f"form[action$='/agreements/{aid}/close-vote']", "close the vote: confirmation",
           url=rf"/admin/{R}/agreements/{aid}/close-vote")
    assert _("Turnout so far") in a.text(), a.text()
    submit(a, f"form[method=post][action$='/agreements/{aid}/close-vote']", "agreement, vote closed",
           url=rf"/admin/{R}/agreements/{aid}$")
    assert f"{_('Mandate vote')}: {_('Passed')}" in a.text(), a.text()


def capacity_history(a, m_url: str, members_db: str, today: date) -> None:
    """Eight weeks of earlier days backfilled into the members database (the repository's
    ``write_snapshots``, as the daily job would have left them), today's snapshot taken on
    demand (API); then the chart per municipality with its table, and the CSV."""
    from hecht import mongo
    from services.members.repository import write_snapshots
    from tests.conftest import MONGO_BASE
    earlier = []
    for back in range(56, 0, -1):     # a patient stop in Gent eased over the weeks, Evergem steady
        day = today - timedelta(days=back)
        earlier.append((day, [
            {"municipality": "Gent", "open": 2 + (back > 21) + (back > 42), "limited": int(10 <= back <= 30),
             "closed": int(back > 45), "unknown": 0},
            {"municipality": "Evergem", "open": 1, "limited": 1 + (back > 28), "closed": 0, "unknown": 1},
            {"municipality": "Wachtebeke", "open": 0, "limited": 0, "closed": 1, "unknown": 0}]))
    write_snapshots(mongo.database(f"{MONGO_BASE}/{members_db}", members_db), R, earlier)
    ok(requests.post(f"{m_url}/v1/regions/{R}/capacity/snapshots", headers=bearer("region-admin", R),
                     json={}, timeout=10), 200, 201)
    p = a.page
    a.goto(f"/admin/{R}/capacity", "capacity chart")
    for m in MUNICIPALITIES:
        town = p.locator("main section.capacity-town", has=p.locator("h2", has_text=m))
        assert town.locator("svg[role=img] polyline").count() == 3, m
        rows = town.locator("table tbody tr")
        assert rows.count() == 57, (m, rows.count())             # 56 earlier days and today
    # today's counts are the active members' (An and Chloé open in Gent, Bram limited in
    # Evergem, Dirk was rejected); a backfilled day is what was written
    def row(town: str, day: date) -> list[str]:
        tr = p.locator("main section.capacity-town", has=p.locator("h2", has_text=town)) \
            .locator("table tbody tr", has=p.locator(f"time[datetime='{day.isoformat()}']"))
        return [c.strip() for c in tr.locator("td").all_text_contents()]
    assert row("Gent", today) == ["2", "0", "0", "0"], row("Gent", today)
    assert row("Evergem", today) == ["0", "1", "0", "0"], row("Evergem", today)
    assert row("Wachtebeke", today) == ["0", "0", "0", "0"], row("Wachtebeke", today)
    earlier_day = today - timedelta(days=14)
    assert row("Gent", earlier_day) == ["2", "1", "0", "0"], row("Gent", earlier_day)
    a.shot("18-console-capacity")
    # every chart has its table of every day beside it, visible (not only for screen readers)
    assert p.locator("main section.capacity-town table").first.is_visible()
    csv = p.request.get(f"{a.base}/admin/{R}/capacity.csv")
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv"), csv.status
    lines = csv.text().splitlines()
    assert lines[0] == "day,municipality,open,limited,closed,unknown", lines[0]
    assert f"{today.isoformat()},Gent,2,0,0,0" in lines, lines[-6:]
    assert f"{earlier_day.isoformat()},Gent,2,1,0,0" in lines, lines[-6:]
    assert len(lines) == 1 + 57 * len(MUNICIPALITIES), len(lines)
