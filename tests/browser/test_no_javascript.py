"""Without JavaScript the portal still works: a GP follows the vote's page while signed out,
is sent to sign in, asks for a link, signs in with it, lands on the ballot, votes, changes
the vote and signs out. Every state is checked with axe-core (replayed, see axe.py)."""
from __future__ import annotations

import re

import requests

from tests.browser.conftest import riziv, wait_for_agreements_to_know, wait_for_link
from tests.conftest import bearer
from tests.support.fleet import fleet

R = "elz-zonder-js"


def ok(r: requests.Response, *status: int) -> dict:
    assert r.status_code in (status or (200,)), f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else {}


def test_sign_in_and_vote_without_javascript(hecht_env, tmp_path, visit):
    suffix = hecht_env["suffix"]
    admin = bearer("region-admin", R)
    with fleet(hecht_env, tmp_path / "logs") as f:
        portal, m_url, a_url = f.urls["portal"], f.urls["members"], f.urls["agreements"]
        ok(requests.post(f"{m_url}/v1/regions", headers=bearer("platform-admin"), timeout=10, json={
            "id": R, "name": "ELZ Zonder JavaScript", "country": "BE", "kind": "eerstelijnszone",
            "municipalities": ["Gent"],
            "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}), 201)
        gps = []
        for i in range(3):
            body = {"given_name": f"Arts{i}", "family_name": f"Zonder{i}", "email": f"arts{i}.{suffix}@example.org",
                    "language": "nl", "registration": {"scheme": "RIZIV", "number": riziv(6100 + i)},
                    "practice": {"name": f"Praktijk {i}", "postcode": "9000", "municipality": "Gent"}}
            mid = ok(requests.post(f"{m_url}/v1/regions/{R}/members", json=body, timeout=10, headers=admin), 201)["id"]
            ok(requests.post(f"{m_url}/v1/regions/{R}/members/{mid}/approve", headers=admin, json={}, timeout=10))
            gps.append({"id": mid, **body})
        wait_for_agreements_to_know(R, {g["id"] for g in gps})
        aid = ok(requests.post(f"{a_url}/v1/regions/{R}/agreements", headers=admin, timeout=10, json={
            "title": "Zorgpad diabetes", "theme": "chronic-care", "summary": "Gedeelde zorg voor diabetes type 2.",
            "partners": [{"name": "AZ Jan Palfijn", "kind": "hospital"}],
            "commitments": [{"party": "AZ Jan Palfijn", "text": "Educatie binnen 2 weken."}],
            "municipalities": ["Gent"], "effective_from": "2027-01-01"}), 201)["id"]
        ok(requests.post(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate", headers=admin, json={}, timeout=10),
           200, 201)
        ok(requests.put(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate/votes/{gps[1]['id']}",
                        headers=bearer("gp", R, gps[1]["id"]), json={"choice": "for"}, timeout=10))
        me = gps[0]

        v = visit(portal, "nl", javascript=False)
        p = v.page
        ballot_path = f"/r/{R}/votes/{aid}"
        # signed out: the ballot sends the GP to sign in, and remembers where they were going
        v.goto(ballot_path, "sign-in (redirected from the ballot)", url=r"/sign-in\?next=")
        assert p.input_value("input[name=next]") == ballot_path
        p.fill("#email", me["email"])
        v.click("main form button[type=submit]", "sign-in link sent", url=r"/sign-in/sent$")
        link = wait_for_link(me["email"], rf"{re.escape(portal)}/sign-in/[A-Za-z0-9_\-]+")
        v.goto(link, "sign-in button")
        v.click("main form button[type=submit]", "ballot after sign-in", url=rf"{re.escape(ballot_path)}$")
        assert p.locator("input[name=choice]:checked").count() == 0

        p.check("input[name=choice][value=for]")
        v.click("#ballot form button[type=submit]", "ballot, voted", url=rf"{re.escape(ballot_path)}$")
        assert p.is_checked("input[name=choice][value=for]")
        p.check("input[name=choice][value=abstain]")
        v.click("#ballot form button[type=submit]", "ballot, vote changed", url=rf"{re.escape(ballot_path)}$")
        assert p.is_checked("input[name=choice][value=abstain]")
        turnout = p.locator(".turnout").inner_text()   # 2 of the 3 electors have voted
        assert re.search(r"\b2\b", turnout) and re.search(r"\b3\b", turnout) and "67%" in turnout, turnout
        mine = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate/votes/{me['id']}",
                               headers=bearer("gp", R, me["id"]), timeout=10))
        assert mine["choice"] == "abstain", mine

        v.click("header form[action='/sign-out'] button[type=submit]", "signed out", url=r"/$")
        r = p.request.get(f"{portal}{ballot_path}", max_redirects=0)
        assert r.status in (302, 303) and "/sign-in" in r.headers["location"], (r.status, r.headers)
