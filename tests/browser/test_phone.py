"""Every GP page and the main console pages on a phone (issue 28 item 11), in a real browser
against every service, worker and the portal as real processes (tests/support/fleet.py).

At 390 × 844 (a common phone) no page may scroll sideways: ``document.documentElement
.scrollWidth`` equals the viewport's width (the top navigation wraps, without JavaScript; a
wide table scrolls inside its own container). A few pages again at 320 px, the narrowest
phone still in use. Every state is checked with axe-core as in the other stories
(conftest.Visit). Screenshots of the ballot and the console's members list at 390 px go to
var/browser/screenshots/ (nl-phone-*.png).
"""
from __future__ import annotations

import re
import time
from datetime import date, timedelta

import requests

from tests.browser.conftest import PHONE, elapsed, riziv, wait_for_agreements_to_know, wait_for_link
from tests.browser.test_console import sign_in_by_mail
from tests.conftest import bearer
from tests.support.fleet import fleet

R = "elz-telefoon"
REGION = {"id": R, "name": "ELZ Telefoon Oudenaarde-Kruisem", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Oudenaarde", "Kruisem", "Wortegem-Petegem", "Zingem"],
          "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}
NARROW = {"width": 320, "height": 640}


def ok(r: requests.Response, *status: int) -> dict:
    assert r.status_code in (status or (200,)), f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else {}


def gp(m_url: str, key: str, family: str, serial: int, suffix: str) -> dict:
    """A GP signed up through the API, with a long e-mail address and practice name (what
    makes a table or a line too wide on a phone)."""
    email = f"{key}.{family.lower().replace(' ', '')}.{suffix}@huisartsenpraktijk-oudenaarde.example.org"
    body = {"given_name": key.capitalize(), "family_name": family, "email": email, "language": "nl",
            "registration": {"scheme": "RIZIV", "number": riziv(serial)},
            "practice": {"name": f"Groepspraktijk {family}", "postcode": "9700", "municipality": "Oudenaarde"}}
    mid = ok(requests.post(f"{m_url}/v1/regions/{R}/members", json=body, timeout=10,
                           headers=bearer("region-admin", R)), 201)["id"]
    return {"id": mid, **body}


def fits(v, label: str, problems: list[str]) -> None:
    """Nothing on the page is wider than the viewport: no sideways scrolling. A page that is
    too wide is noted in ``problems`` (with its widest elements), so that one run names them all."""
    width = v.page.viewport_size["width"]
    got = v.page.evaluate("document.documentElement.scrollWidth")
    if got != width:
        wide = v.page.evaluate("""w => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > w + 0.5)
            .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
                      (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '') +
                      ' ' + Math.round(e.getBoundingClientRect().right))
            .slice(0, 12)""", width)
        problems.append(f"{label} at {width} px: the page is {got} px wide; too wide: {wide}")


def see(v, path: str, label: str, problems: list[str]) -> None:
    v.goto(path, f"{label} ({v.page.viewport_size['width']} px)")
    fits(v, label, problems)


def button_clear_of_heading(v, problems: list[str]) -> None:
    """The region page's sign-up button keeps a section's distance (at least 1.5rem) from the
    next heading (issue 28 item 10: it sat against it)."""
    button = v.page.locator(f"main a[href='/regions/{R}/sign-up'][role=button]").bounding_box()
    heading = v.page.locator("main #agreements-heading").bounding_box()
    gap = heading["y"] - (button["y"] + button["height"])
    if gap < 24:
        problems.append(f"region page at {v.page.viewport_size['width']} px: the sign-up button is "
                        f"{gap:.0f} px from the next heading")


def test_every_page_fits_a_phone(hecht_env, tmp_path, visit):
    started = time.monotonic()
    suffix = hecht_env["suffix"]
    admin_email = f"coordinator.{suffix}@huisartsenkring-oudenaarde.example.org"
    today = date.today()
    problems: list[str] = []
    with fleet(hecht_env, tmp_path / "logs") as f:
        portal, m_url, a_url = f.urls["portal"], f.urls["members"], f.urls["agreements"]
        ok(requests.post(f"{m_url}/v1/regions", headers=bearer("platform-admin"), json=REGION, timeout=10), 201)
        ok(requests.post(f"{m_url}/v1/staff", headers=bearer("platform-admin"), timeout=10, json={
            "email": admin_email, "name": "Katrien Coördinator", "language": "nl", "platform_admin": False,
            "admin_of": [R]}), 201)
        me = gp(m_url, "sofie", "Vanderhaeghen-Desmet", 8100, suffix)
        colleague = gp(m_url, "pieter", "Van den Bossche", 8101, suffix)
        pending = gp(m_url, "lotte", "De Clercq", 8102, suffix)
        for m in (me, colleague):
            ok(requests.post(f"{m_url}/v1/regions/{R}/members/{m['id']}/approve", headers=bearer("region-admin", R),
                             json={}, timeout=10))
        wait_for_agreements_to_know(R, {me["id"], colleague["id"]})
        aid = ok(requests.post(f"{a_url}/v1/regions/{R}/agreements", headers=bearer("region-admin", R), json={
            "title": "Transmurale zorg voor kwetsbare ouderen na ontslag uit het ziekenhuis",
            "theme": "frail-elderly", "summary": "Afspraken over het ontslag van kwetsbare ouderen.",
            "partners": [{"name": "AZ Oudenaarde", "kind": "hospital"}],
            "commitments": [{"party": "AZ Oudenaarde", "text": "Ontslagbrief binnen 24 uur."}],
            "municipalities": ["Oudenaarde"], "effective_from": (today + timedelta(days=30)).isoformat()},
            timeout=10), 201)["id"]
        ok(requests.post(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate", headers=bearer("region-admin", R),
                         json={}, timeout=10), 200, 201)
        print(f"fleet and data ready after {elapsed(started)}")

        # -- the GP: public pages, then signed in from the vote e-mail's link ------------------
        g = visit(portal, "nl", shots=True, viewport=PHONE)
        for path, label in (("/", "start"), ("/regions", "regions"), (f"/regions/{R}", "region"),
                            (f"/regions/{R}/sign-up", "sign-up"), ("/sign-in", "sign-in")):
            see(g, path, label, problems)
            if label == "region":
                button_clear_of_heading(g, problems)
                g.page.set_viewport_size({"width": 1280, "height": 900})
                button_clear_of_heading(g, problems)
                g.page.set_viewport_size(PHONE)
                g.shot("phone-region")
        ballot = wait_for_link(me["email"], rf"{re.escape(portal)}/r/{R}/votes/{aid}\b")[len(portal):]
        sign_in_by_mail(g, portal, ballot, me["email"], "GP", rf"/r/{R}/votes/{aid}$")
        fits(g, "ballot", problems)
        g.shot("phone-ballot")
        # the navigation wraps instead of pushing the page wider: every item is on screen
        for item in g.page.locator("header nav a, header nav button").all():
            box = item.bounding_box()
            if not (box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]):
                problems.append(f"ballot: the navigation's {item.inner_text()!r} is off screen: {box}")
        g.page.check("input[name=choice][value=for]")
        g.click("#ballot form button[type=submit]", "ballot, voted (390 px)", url=rf"/r/{R}/votes/{aid}$")
        fits(g, "ballot, voted", problems)
        for path, label in ((f"/r/{R}/membership", "membership"), (f"/r/{R}/votes", "votes"),
                            (f"/r/{R}/agreements", "agreements"), (f"/r/{R}/agreements/{aid}", "agreement"),
                            (f"/r/{R}/my-data", "my data")):
            see(g, path, label, problems)
        g.page.set_viewport_size(NARROW)
        for path, label in ((f"/r/{R}/votes/{aid}", "ballot"), (f"/r/{R}/membership", "membership"),
                            (f"/regions/{R}/sign-up", "sign-up")):
            see(g, path, label, problems)
        print(f"GP pages checked after {elapsed(started)}")

        # -- the region admin's console --------------------------------------------------------
        a = visit(portal, "nl", shots=True, viewport=PHONE)
        sign_in_by_mail(a, portal, f"/admin/{R}", admin_email, "region admin", rf"/admin/{R}$")
        fits(a, "dashboard", problems)
        see(a, f"/admin/{R}/members", "members", problems)
        # the table scrolls inside its own container, which a keyboard can reach
        a.shot("phone-console-members")
        scroller = a.page.locator("main .table-scroll", has=a.page.locator("table"))
        if not (scroller.count() == 1 and scroller.first.get_attribute("tabindex") == "0"):
            problems.append("members: the table is not in a scrolling container a keyboard can reach")
        for member, state in ((me, "active"), (pending, "pending")):
            see(a, f"/admin/{R}/members/{member['id']}", f"member, {state}", problems)
            a.shot(f"phone-console-member-{state}")
            a.page.set_viewport_size({"width": 1280, "height": 900})
            a.shot(f"console-member-{state}")
            a.page.set_viewport_size(PHONE)
        for path, label in ((f"/admin/{R}/agreements", "agreements"),
                            (f"/admin/{R}/agreements/{aid}", "agreement, vote open"),
                            (f"/admin/{R}/agreements/new", "agreement editor"),
                            (f"/admin/{R}/notifications", "notifications"),
                            (f"/admin/{R}/capacity", "capacity"),
                            (f"/admin/{R}/integrators", "integrators"),
                            (f"/admin/{R}/staff", "admins"),
                            (f"/admin/{R}/settings", "settings")):
            see(a, path, label, problems)
            if label in ("agreement editor", "settings"):
                a.shot(f"phone-console-{label.replace(' ', '-')}")
        a.page.set_viewport_size(NARROW)
        for path, label in ((f"/admin/{R}/members", "members"), (f"/admin/{R}/members/{me['id']}", "member"),
                            (f"/admin/{R}/agreements/new", "agreement editor")):
            see(a, path, label, problems)
        assert not problems, "\n".join(problems)
        print(f"console pages checked after {elapsed(started)}; {len(a.axe.checked)} states checked with axe")
