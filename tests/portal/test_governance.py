"""Governance in the portal (issue 16) over HTTP, every service a real process: the region
console's mandate policy (body, seats, live tally, proxies, trainees; the 409 confirmation
when removing a municipality strands members), the members list's "outside the region"
filter, registration corrections by staff and by the GP, and a GP giving and revoking a
proxy; another region's ids stay 404."""
from __future__ import annotations

import html
import re

import requests

from tests.conftest import bearer, wait_until

from .conftest import Browser, field_error, new_email
from .test_console import _riziv, _staff, _staff_browser, etag_of


def _settings_form(page_html: str, **over) -> dict:
    """The settings form as the page shows it (a browser submitting it unchanged), with ``over``."""
    form = {"etag": etag_of(page_html), "name": "Regio", "municipalities": "Gent\nMerelbeke", "quorum": "0.5",
            "approval_threshold": "0.5", "voting_period_days": "14", "body": "assembly", "max_proxies": "0",
            "trainees_vote": "y", "seat_rows": "0"}
    m = re.search(r'<textarea id="municipalities" name="municipalities"[^>]*>([^<]*)</textarea>', page_html)
    if m:
        form["municipalities"] = html.unescape(m.group(1))
    m = re.search(r'name="name" value="([^"]*)"', page_html)
    if m:
        form["name"] = html.unescape(m.group(1))
    form.update(over)
    return form


def _member(hecht, region: str, email: str, number: str, town: str = "Gent", given: str = "An",
            family: str = "Peeters", approve: bool = True) -> str:
    r = requests.post(f"{hecht.urls['members']}/v1/regions/{region}/members", timeout=10,
                      headers=bearer("region-admin", region), json={
        "given_name": given, "family_name": family, "email": email, "language": "nl",
        "registration": {"scheme": "RIZIV", "number": number},
        "practice": {"name": f"Praktijk {family}", "postcode": "9000", "municipality": town}})
    assert r.status_code == 201, r.text
    if approve:
        hecht.approve(region, r.json()["id"])
    return r.json()["id"]


def _policy(hecht, region: str) -> dict:
    r = requests.get(f"{hecht.urls['members']}/v1/regions/{region}", headers=bearer("region-admin", region),
                     timeout=10)
    return r.json()


def test_settings_policy_seats_and_the_members_affected_confirmation(portal_fleet, hecht):
    region = hecht.region()
    _sid, email = _staff(hecht, admin_of=[region])
    gent = _member(hecht, region, new_email(), _riziv(101), given="Griet", family="Gentenaar")
    merel = _member(hecht, region, new_email(), _riziv(102), town="Merelbeke", given="Mieke", family="Merel")
    b = _staff_browser(portal_fleet, email)
    path = f"/admin/{region}/settings"
    page = b.get(path)
    assert page.status_code == 200
    assert "versie 1" in page.text and 'id="body-assembly"' in page.text and "checked" in page.text
    assert "geheim" in page.text  # the live tally's explanation: it breaks ballot secrecy

    # Seats, without JavaScript: "add a seat row" keeps the input and adds empty rows
    r = b.post(path, _settings_form(page.text, add="seat", body="council", seat_rows="1",
                                    seat_member_0=gent, seat_cluster_0="Huisartsen"), csrf_from=path)
    assert r.status_code == 200 and 'name="seat_member_2"' in r.text and 'value="Huisartsen"' in r.text
    assert f'<option value="{gent}" selected>Griet Gentenaar</option>' in r.text  # the member picker

    # The form's own checks next to the fields: a council without seats, a seat without cluster, a twice-seated member
    r = b.post(path, _settings_form(page.text, body="council"), csrf_from=path)
    assert r.status_code == 422 and field_error(r.text, "seats"), r.text[:2000]
    r = b.post(path, _settings_form(page.text, body="council", seat_rows="2", seat_member_0=gent,
                                    seat_cluster_0="", seat_member_1=gent, seat_cluster_1="Apothekers"),
               csrf_from=path)
    assert r.status_code == 422
    assert field_error(r.text, "seat_cluster_0") and field_error(r.text, "seat_member_1"), r.text[:3000]
    # The API's own check, next to the row: a seat for someone who is not a member of the region
    r = b.post(path, _settings_form(page.text, body="council", seat_rows="1", seat_member_0="m_nobody",
                                    seat_cluster_0="Huisartsen"), csrf_from=path)
    assert r.status_code == 422, r.text[:2000]
    assert "m_nobody" in (field_error(r.text, "seats") or ""), r.text[:4000]
    assert _policy(hecht, region)["mandate_policy"]["version"] == 1  # nothing saved

    # A valid council: two clusters, proxies, live tally, trainees not voting → a new version
    r = b.post(path, _settings_form(page.text, body="council", seat_rows="3", seat_member_0=gent,
                                    seat_cluster_0="Huisartsen", seat_member_1=merel, seat_cluster_1="Apothekers",
                                    max_proxies="2", live_tally="y", trainees_vote=""), csrf_from=path)
    assert r.status_code == 302, r.text[:3000]
    policy = _policy(hecht, region)["mandate_policy"]
    assert policy["body"] == "council" and policy["version"] == 2 and policy["max_proxies"] == 2
    assert policy["live_tally"] is True and policy["trainees_vote"] is False
    assert policy["seats"] == [{"member_id": gent, "cluster": "Huisartsen"},
                               {"member_id": merel, "cluster": "Apothekers"}]
    page = b.get(path)
    assert "versie 2" in page.text and 'value="Apothekers"' in page.text

    # Removing a seat (tick Remove) and a stale form (someone saved in between) → 409, nothing saved
    stale = page.text
    r = b.post(path, _settings_form(page.text, body="council", seat_rows="2", seat_member_0=gent,
                                    seat_cluster_0="Huisartsen", seat_member_1=merel, seat_cluster_1="Apothekers",
                                    seat_remove_1="y", max_proxies="2", live_tally="y", trainees_vote=""),
               csrf_from=path)
    assert r.status_code == 302, r.text[:2000]
    assert [s["member_id"] for s in _policy(hecht, region)["mandate_policy"]["seats"]] == [gent]
    r = b.post(path, _settings_form(stale, body="assembly"), csrf_from=path)
    assert r.status_code == 409 and _policy(hecht, region)["mandate_policy"]["body"] == "council"

    # Removing Merelbeke strands Mieke: 409 listing her by name, a confirmation step, nothing saved yet
    page = b.get(path)
    form = _settings_form(page.text, body="council", seat_rows="1", seat_member_0=gent,
                          seat_cluster_0="Huisartsen", max_proxies="2", live_tally="y", trainees_vote="",
                          municipalities="Gent")
    r = b.post(path, form, csrf_from=path)
    assert r.status_code == 409, r.text[:2000]
    assert "Mieke Merel" in r.text and "Merelbeke" in r.text and 'name="confirm_affected" value="y"' in r.text
    assert "Griet Gentenaar" not in r.text.split('id="affected-heading"')[1].split("</ul>")[0]
    assert _policy(hecht, region)["municipalities"] == ["Gent", "Merelbeke"]
    # The members list flags nobody yet; after confirming, Mieke is flagged "outside the region"
    r = b.post(path, dict(form, confirm_affected="y", etag=etag_of(r.text)), csrf_from=path)
    assert r.status_code == 302, r.text[:2000]
    assert _policy(hecht, region)["municipalities"] == ["Gent"]
    listing = b.get(f"/admin/{region}/members", params={"outside_region": "true"})
    assert listing.status_code == 200 and "Mieke Merel" in listing.text and "Griet Gentenaar" not in listing.text
    assert "buiten de regio" in listing.text
    assert "buiten de regio" in b.get(f"/admin/{region}/members/{merel}").text
    # Odd input never fails
    r = b.post(path, _settings_form(b.get(path).text, quorum="veel", max_proxies="9", body="parliament"),
               csrf_from=path)
    assert r.status_code == 422 and field_error(r.text, "quorum") and field_error(r.text, "body")
    r = b.post(path, _settings_form(b.get(path).text, max_proxies="9"), csrf_from=path)
    assert r.status_code == 422 and field_error(r.text, "max_proxies"), r.text[:3000]


def test_registration_corrections_by_staff_and_by_the_gp(portal_fleet, hecht):
    region = hecht.region()
    _sid, email = _staff(hecht, admin_of=[region])
    gp_email = new_email()
    m = _member(hecht, region, gp_email, _riziv(201))
    other = _member(hecht, region, new_email(), _riziv(202), given="Bart", family="Baert")
    b = _staff_browser(portal_fleet, email)
    path = f"/admin/{region}/members/{m}"
    page = b.get(path)
    assert page.status_code == 200 and 'id="registration-number"' in page.text
    # A bad check digit, and another member's number: errors next to the field, nothing saved
    r = b.post(f"{path}/registration", {"etag": etag_of(page.text), "scheme": "RIZIV", "number": "10185748104"},
               csrf_from=path)
    assert r.status_code == 422 and "Bekwaamheidscode 104" in (field_error(r.text, "registration-number") or ""), \
        r.text[:3000]
    r = b.post(f"{path}/registration", {"etag": etag_of(page.text), "scheme": "RIZIV", "number": _riziv(202)},
               csrf_from=path)
    assert r.status_code == 409 and field_error(r.text, "registration-number"), r.text[:3000]
    new_number = _riziv(201)[:8] + "003"  # a new competence code, same person
    r = b.post(f"{path}/registration", {"etag": etag_of(page.text), "scheme": "RIZIV", "number": new_number},
               csrf_from=path)
    assert r.status_code == 302, r.text[:2000]
    assert hecht.member(region, m)["registration"]["number"].replace(" ", "").replace("-", "").replace(".", "") \
        == new_number
    assert other  # untouched

    # The GP corrects their own registration on "my membership"
    gp = Browser(portal_fleet.urls["portal"])
    gp.s.headers["Accept-Language"] = "nl"
    gp.sign_in(gp_email)
    mine = f"/r/{region}/membership"
    page = gp.get(mine)
    assert page.status_code == 200 and 'id="registration-number"' in page.text
    r = gp.post(f"{mine}/registration", {"etag": etag_of(page.text), "scheme": "RIZIV", "number": "123"},
                csrf_from=mine)
    assert r.status_code == 422 and field_error(r.text, "registration-number"), r.text[:3000]
    back = _riziv(201)
    r = gp.post(f"{mine}/registration", {"etag": etag_of(gp.get(mine).text), "scheme": "RIZIV", "number": back},
                csrf_from=mine)
    assert r.status_code == 302, r.text[:2000]
    assert hecht.member(region, m)["registration"]["number"].replace(" ", "").replace("-", "").replace(".", "") \
        == back
    # A GP cannot reach someone else's registration through the portal
    assert gp.post(f"/admin/{region}/members/{other}/registration", {"scheme": "RIZIV", "number": back},
                   csrf_from=mine).status_code in (302, 404)
    assert hecht.member(region, other)["registration"]["number"].replace(".", "").replace("-", "").replace(" ", "") \
        == _riziv(202)


def test_a_gp_gives_and_revokes_a_proxy_and_other_regions_stay_404(portal_fleet, hecht):
    region = hecht.region()
    elsewhere = hecht.region()
    emails = [new_email() for _ in range(3)]
    ids = [_member(hecht, region, e, _riziv(300 + i), given=f"GP{i}", family=f"Nr{i}") for i, e in enumerate(emails)]
    r = requests.patch(f"{hecht.urls['members']}/v1/regions/{region}", headers=bearer("region-admin", region),
                       timeout=10, json={"mandate_policy": {"max_proxies": 1, "live_tally": True}})
    assert r.status_code == 200, r.text
    # The agreements service learns the new policy from region.updated before the vote opens
    from hecht import mongo
    from hecht.config import settings
    s = settings("agreements")
    db = mongo.database(s.mongo_uri, s.database_name)
    wait_until(lambda: any((db[c].find_one({"_id": region}) or {}).get("mandate_policy", {}).get("max_proxies") == 1
                           or (db[c].find_one({"region_id": region, "mandate_policy.max_proxies": 1}) is not None)
                           for c in db.list_collection_names()), timeout=60,
               message="agreements to see the region's proxy policy")
    agreement = hecht.agreement(region)
    hecht.open_vote(region, agreement, electorate=3)
    giver = Browser(portal_fleet.urls["portal"])
    giver.s.headers["Accept-Language"] = "nl"
    giver.sign_in(emails[0])
    path = f"/r/{region}/votes/{agreement}"
    page = giver.get(path)
    assert page.status_code == 200 and 'id="proxy-heading"' in page.text, page.text[:3000]
    assert ids[0] in page.text  # the GP's own member number, to tell a colleague
    # Field errors: empty, oneself, someone outside the electorate
    r = giver.post(f"{path}/proxy", {"holder": ""}, csrf_from=path)
    assert r.status_code == 422 and field_error(r.text, "holder")
    r = giver.post(f"{path}/proxy", {"holder": ids[0]}, csrf_from=path)
    assert r.status_code == 422 and field_error(r.text, "holder")
    r = giver.post(f"{path}/proxy", {"holder": "m_elsewhere"}, csrf_from=path)
    assert r.status_code in (409, 422) and (field_error(r.text, "holder") or 'role="alert"' in r.text)
    # Give to GP1; a second proxy is refused (revoke first); revoke; give again; the holder votes
    r = giver.post(f"{path}/proxy", {"holder": ids[1]}, csrf_from=path)
    assert r.status_code == 302, r.text[:2000]
    r = giver.post(f"{path}/proxy", {"holder": ids[2]}, csrf_from=path)
    assert r.status_code == 409 and "Trek" in r.text, r.text[:3000]
    r = giver.post(f"{path}/proxy/revoke", {}, csrf_from=path)
    assert r.status_code == 302, r.text[:2000]
    r = giver.post(f"{path}/proxy/revoke", {}, csrf_from=path)
    assert r.status_code == 409 and "geen volmacht" in r.text, r.text[:3000]
    r = giver.post(f"{path}/proxy", {"holder": ids[1]}, csrf_from=path)
    assert r.status_code == 302
    holder = Browser(portal_fleet.urls["portal"])
    holder.sign_in(emails[1])
    r = holder.post(path, {"choice": "for"})
    assert r.status_code == 302, r.text[:1000]
    # Used: the giver can no longer revoke, nor vote themself
    r = giver.post(f"{path}/proxy/revoke", {}, csrf_from=path)
    assert r.status_code == 409 and "gebruikt" in r.text, r.text[:3000]
    # A live tally (the region opted in): the running count shows on the ballot page
    page = giver.get(path)
    assert "Tussenstand (live telling)" in page.text and 'id="holder"' not in page.text, page.text[:3000]
    tally = requests.get(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}/mandate",
                         headers=bearer("region-admin", region), timeout=10).json()
    assert tally["cast"] == 2 and tally["max_proxies"] == 1 and tally["body"] == "assembly", tally
    assert tally["for"] == 2 and tally["live_tally"] is True, tally
    # CSRF on the proxy forms; another region's ids are 404
    assert giver.post(f"{path}/proxy", {"holder": ids[2]}, csrf=False).status_code in (400, 403)
    assert giver.post(f"/r/{elsewhere}/votes/{agreement}/proxy", {"holder": ids[1]},
                      csrf_from=path).status_code == 404
    other_agreement = hecht.agreement(elsewhere)
    assert giver.post(f"/r/{region}/votes/{other_agreement}/proxy", {"holder": ids[1]},
                      csrf_from=path).status_code == 404
    assert giver.get(f"/r/{region}/votes/{other_agreement}").status_code == 404
