"""Governance in a real browser (Dutch), every service a real process (issue 16):

a region admin signs in → on the console's settings page switches the region from a members'
assembly to a care council with four seats in two clusters (the seat rows added without
JavaScript's help: "add a seat row" is a form button), a stale field error shown next to its
row first → removes a municipality, sees the member it strands in the confirmation step and
confirms → the members list flags that member "outside the region" → opens a vote on an
agreement → three seat holders vote through the portal (the ballot shows the frozen body
and policy version) → the admin closes the vote → the vote view shows the result per cluster
(the second cluster without its majority: rejected), and so does a GP's ballot page.

Every page state is checked with axe-core (conftest.Visit). The screenshot
docs/screenshots/25-console-governance.png is the settings page with the council's seats
(HECHT_SCREENSHOTS=1).
"""
from __future__ import annotations

import time

import requests

from tests.browser.conftest import ARTIFACTS, elapsed, riziv
from tests.browser.test_console import _, ok, sign_in_by_mail
from tests.conftest import bearer, wait_until
from tests.support.fleet import fleet

R = "elz-raad-zuid"
REGION_NAME = "ELZ Zorgraad Zuid"
# key: (given, family, municipality, serial, cluster, vote)
GPS = {
    "ann": ("Ann", "Claes", "Gent", 7300, "Huisartsen", "for"),
    "ben": ("Ben", "Wouters", "Gent", 7301, "Huisartsen", "for"),
    "cas": ("Cas", "Jacobs", "Melle", 7302, "Thuiszorg", "against"),
    "dina": ("Dina", "Maes", "Melle", 7303, "Thuiszorg", None),       # does not vote
    "emiel": ("Emiel", "Peeters", "Lochristi", 7304, None, None),     # no seat; Lochristi is removed
}


def test_governance_story(hecht_env, tmp_path, visit):
    started = time.monotonic()
    suffix = hecht_env["suffix"]
    admin_email = f"raad.{suffix}@governance.example.org"
    with fleet(hecht_env, tmp_path / "logs") as f:
        portal, m_url, a_url = f.urls["portal"], f.urls["members"], f.urls["agreements"]
        platform = bearer("platform-admin")
        admin_token = bearer("region-admin", R)
        ok(requests.post(f"{m_url}/v1/regions", headers=platform, timeout=10, json={
            "id": R, "name": REGION_NAME, "country": "BE", "kind": "eerstelijnszone",
            "municipalities": ["Gent", "Melle", "Lochristi"],
            "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}), 201)
        ok(requests.post(f"{m_url}/v1/staff", headers=platform, timeout=10, json={
            "email": admin_email, "name": "Rita Raad", "language": "nl", "platform_admin": False,
            "admin_of": [R]}), 201)
        gps = {}
        for key, (given, family, town, serial, cluster, choice) in GPS.items():
            email = f"{key}.{suffix}@governance.example.org"
            mid = ok(requests.post(f"{m_url}/v1/regions/{R}/members", timeout=10, headers=bearer("region-admin", R), json={
                "given_name": given, "family_name": family, "email": email, "language": "nl",
                "registration": {"scheme": "RIZIV", "number": riziv(serial)},
                "practice": {"name": f"Praktijk {family}", "postcode": "9000", "municipality": town}}), 201)["id"]
            ok(requests.post(f"{m_url}/v1/regions/{R}/members/{mid}/approve", headers=admin_token, json={},
                             timeout=10))
            gps[key] = {"id": mid, "email": email, "name": f"{given} {family}", "cluster": cluster, "vote": choice}
        print(f"region and members ready after {elapsed(started)}")

        # -- the admin switches the region to a care council ----------------------------------
        a = visit(portal, "nl", shots=True)
        p = a.page
        sign_in_by_mail(a, portal, f"/admin/{R}/settings", admin_email, "region admin", rf"/admin/{R}/settings$")
        assert _("Off by default: a running count of for and against breaks the secrecy of the ballot "
                 "(whoever knows in which order colleagues voted learns each choice). Switch it on only "
                 "where your statutes require it.") in a.text()
        assert p.is_checked("#body-assembly") and not p.is_checked("#live_tally")
        p.check("#body-council")
        seated = [k for k in GPS if GPS[k][4]]
        # one empty row to begin with; "add a seat row" (a form button) gives two more each time
        p.select_option("#seat_member_0", gps[seated[0]]["id"])
        p.fill("#seat_cluster_0", GPS[seated[0]][4])
        a.click("button[name=add][value=seat]", "settings: seat rows added")
        assert p.is_checked("#body-council") and p.input_value("#seat_cluster_0") == "Huisartsen"
        for i, key in enumerate(seated[1:3], start=1):
            p.select_option(f"#seat_member_{i}", gps[key]["id"])
            p.fill(f"#seat_cluster_{i}", GPS[key][4])
        a.click("button[name=add][value=seat]", "settings: more seat rows added")
        p.select_option("#seat_member_3", gps[seated[3]]["id"])
        p.fill("#seat_cluster_3", "")  # a seat without its cluster: an error next to the row
        a.click("form[action$='/settings'] button[type=submit]:not([name])", "settings: a seat without cluster",
                url=rf"/admin/{R}/settings$")
        assert p.get_attribute("#seat_cluster_3", "aria-invalid") == "true"
        assert _("Name the seat's cluster.") in a.text("#seat_cluster_3-error")
        p.fill("#seat_cluster_3", "Thuiszorg")
        a.click("form[action$='/settings'] button[type=submit]:not([name])", "settings: council saved",
                url=rf"/admin/{R}/settings$")
        region = ok(requests.get(f"{m_url}/v1/regions/{R}", headers=admin_token, timeout=10))
        policy = region["mandate_policy"]
        assert policy["body"] == "council" and policy["version"] == 2, policy
        assert sorted((s["member_id"], s["cluster"]) for s in policy["seats"]) == sorted(
            (gps[k]["id"], GPS[k][4]) for k in seated), policy
        assert _("version %(n)s") % {"n": 2} in a.text()
        a.shot("25-console-governance")

        # -- removing Lochristi strands Emiel: the confirmation step names him ----------------
        p.fill("#municipalities", "Gent\nMelle")
        a.click("form[action$='/settings'] button[type=submit]:not([name])", "settings: members affected",
                url=rf"/admin/{R}/settings$")
        artifact(p, "governance-affected")
        affected = a.text("section[aria-labelledby=affected-heading]")
        assert gps["emiel"]["name"] in affected and gps["ann"]["name"] not in affected, affected
        assert ok(requests.get(f"{m_url}/v1/regions/{R}", headers=admin_token, timeout=10))["municipalities"] == [
            "Gent", "Melle", "Lochristi"]
        a.click("button[name=confirm_affected]", "settings: municipality removed", url=rf"/admin/{R}/settings$")
        assert ok(requests.get(f"{m_url}/v1/regions/{R}", headers=admin_token, timeout=10))["municipalities"] == [
            "Gent", "Melle"]
        a.goto(f"/admin/{R}/members", "members")
        p.check("#outside_region")
        a.click("form.filters button[type=submit]", "members outside the region", url=r"outside_region=true")
        listing = a.text()
        assert gps["emiel"]["name"] in listing and gps["ann"]["name"] not in listing, listing
        assert _("outside the region") in listing
        print(f"council set up after {elapsed(started)}")

        # -- a vote: opened from the console under the council's policy ------------------------
        aid = ok(requests.post(f"{a_url}/v1/regions/{R}/agreements", headers=admin_token, timeout=10, json={
            "title": "Zorgpad ontslag ziekenhuis", "theme": "frail-elderly", "summary": "Ontslag met zorgplan",
            "partners": [{"name": "AZ Jan Palfijn", "kind": "hospital"}],
            "commitments": [{"party": "AZ Jan Palfijn", "text": "Ontslagbrief binnen 24 uur"}],
            "municipalities": ["Gent"], "effective_from": "2027-03-01"}), 201)["id"]
        wait_for_council()
        a.goto(f"/admin/{R}/agreements/{aid}", "agreement draft")
        a.click(f"form[action$='/agreements/{aid}/open-vote'] button[type=submit]", "vote opened",
                url=rf"/admin/{R}/agreements/{aid}$")
        tally = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate", headers=admin_token,
                                timeout=10))
        assert tally["body"] == "council" and tally["electorate_size"] == 4, tally
        assert _("Care council") in a.text("section[aria-labelledby=vote-heading]")

        # -- three seat holders vote through the portal ----------------------------------------
        path = f"/r/{R}/votes/{aid}"
        for key in [k for k in seated if GPS[k][5]]:
            g = visit(portal, "nl")
            sign_in_by_mail(g, portal, path, gps[key]["email"], f"GP {key}", rf"{path}$")
            assert _("Care council") in g.text()
            g.page.check(f"input[name=choice][value={GPS[key][5]}]")
            g.click("#ballot form button[type=submit]", f"GP {key}: voted", url=rf"{path}$")
            # secret while open: no running count on the GP's page
            assert _("Running count (live tally)") not in g.text()
            last = g
        print(f"votes cast after {elapsed(started)}")

        # -- the admin closes the vote; the result per cluster ---------------------------------
        a.goto(f"/admin/{R}/agreements/{aid}", "vote open, three of four voted")
        # one click asks first (issue 28): the turnout so far and what closing means, then confirm
        a.click(f"form[action$='/agreements/{aid}/close-vote'] button[type=submit]", "close the vote: confirmation",
                url=rf"/admin/{R}/agreements/{aid}/close-vote\??$")
        assert _("Turnout so far") in a.text()
        a.click(f"form[method=post][action$='/agreements/{aid}/close-vote'] button[type=submit]", "vote closed",
                url=rf"/admin/{R}/agreements/{aid}$")
        artifact(p, "governance-council-result")
        clusters = a.text("table.clusters")
        rows = {line.split("\t")[0]: line.split("\t")[1:] for line in clusters.splitlines() if "\t" in line}
        assert rows["Huisartsen"] == ["2", "2", _("Yes"), "2", "0", "0", _("Yes")], rows
        assert rows["Thuiszorg"] == ["2", "1", _("Yes"), "0", "1", "0", _("No")], rows
        tally = ok(requests.get(f"{a_url}/v1/regions/{R}/agreements/{aid}/mandate", headers=admin_token,
                                timeout=10))
        assert tally["status"] == "rejected", tally
        last.goto(path, "GP: the closed vote")
        assert "Thuiszorg" in last.text("table.clusters")
        artifact(last.page, "governance-ballot-closed")
        print(f"story done after {elapsed(started)}")


def artifact(page, name: str) -> None:
    """A screenshot for the test's artifacts only (var/browser/screenshots), not for docs/."""
    ARTIFACTS.joinpath("screenshots").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "screenshots" / f"nl-{name}.png"), full_page=True)


def wait_for_council(timeout: float = 60.0) -> None:
    """The agreements service learns the region's policy from ``region.updated``; a vote opened
    before would freeze the old one."""
    from hecht import mongo
    from hecht.config import settings
    s = settings("agreements")
    db = mongo.database(s.mongo_uri, s.database_name)

    def known():
        doc = db["regions_view"].find_one({"_id": R}) or {}
        pol = doc.get("mandate_policy") or {}
        return pol.get("body") == "council" and "Lochristi" not in (doc.get("municipalities") or [])
    wait_until(known, timeout=timeout, message="agreements to see the council")
