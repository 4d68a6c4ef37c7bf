"""The consoles (docs/PORTAL.md part 2) over HTTP, every service a real process: staff sign-in,
the region console's pages and forms (approve, reject, roles, stale edits, the agreement
editor, the vote, capacity over time) and the platform console; isolation between regions."""
from __future__ import annotations

import csv
import html
import io
import re
import uuid
from datetime import date

import requests

from tests.conftest import bearer, wait_until

from .conftest import Browser, field_error, mails, new_email, wait_for_link


def etag_of(html_text: str) -> str:
    m = re.search(r'name="etag" value="([^"]*)"', html_text)
    assert m, "no etag field on the page"
    return html.unescape(m.group(1))


def _staff(hecht, *, admin_of=(), platform_admin=False, email=None, language="nl") -> tuple[str, str]:
    email = email or f"staff.{uuid.uuid4().hex[:10]}@example.org"
    r = requests.post(f"{hecht.urls['members']}/v1/staff", headers=bearer("platform-admin"), timeout=10,
                      json={"email": email, "name": f"Coördinator {email[:10]}", "language": language,
                            "platform_admin": platform_admin, "admin_of": list(admin_of)})
    assert r.status_code == 201, r.text
    return r.json()["id"], email


def _staff_browser(portal_fleet, email: str) -> Browser:
    b = Browser(portal_fleet.urls["portal"])
    b.s.headers["Accept-Language"] = "nl"
    b.sign_in(email)
    return b


def _gp(hecht, region: str, number: str, given: str = "An", family: str = "Peeters") -> str:
    r = requests.post(f"{hecht.urls['members']}/v1/regions/{region}/members", timeout=10,
                      headers=bearer("region-admin", region), json={
        "given_name": given, "family_name": family, "email": new_email(), "language": "nl",
        "registration": {"scheme": "RIZIV", "number": number},
        "practice": {"name": f"Praktijk {family}", "postcode": "9000", "municipality": "Gent"}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _riziv(seq: int) -> str:
    """A valid GP RIZIV number: 1 NNNNN CC 00x with the check digits 97 - (n mod 97)."""
    base = 100000 + seq
    six = f"1{base % 100000:05d}"
    check = 97 - (int(six) % 97)
    return f"{six}{check:02d}004"


def test_staff_sign_in_dashboard_approve_reject_roles_and_stale_edit(portal_fleet, hecht):
    region = hecht.region()
    _sid, email = _staff(hecht, admin_of=[region])
    first = _gp(hecht, region, _riziv(11), "Bart", "Aerts")
    second = _gp(hecht, region, _riziv(12), "Chloé", "Claes")
    third = _gp(hecht, region, _riziv(13), "Dirk", "Dewulf")

    b = Browser(portal_fleet.urls["portal"])
    r = b.sign_in(email)
    assert r.headers["Location"] == f"/admin/{region}", r.headers
    page = b.get(f"/admin/{region}")
    assert page.status_code == 200, page.text[:500]
    assert "Aerts" in page.text and "Claes" in page.text  # pending sign-ups, oldest first
    assert page.text.index("Aerts") < page.text.index("Claes")
    assert f'href="/admin/{region}/members"' in page.text  # console navigation

    # The members table with a filter and a search
    page = b.get(f"/admin/{region}/members", params={"status": "pending", "q": "Claes"})
    assert page.status_code == 200 and "Claes" in page.text and "Aerts" not in page.text
    assert b.get(f"/admin/{region}/members", params={"status": "nonsense"}).status_code == 422

    # Approve through the form
    detail = f"/admin/{region}/members/{first}"
    page = b.get(detail)
    etag = etag_of(page.text)
    r = b.post(f"{detail}/approve", {"etag": etag}, csrf_from=detail)
    assert r.status_code == 302, re.findall(r'role="alert"[^>]*>([^<]*)', r.text)
    assert hecht.member(region, first)["status"] == "active"
    shown = b.get(detail).text
    assert "goedgekeurd" in shown  # the flash message, in Dutch
    # the history names who did what: this staff member approved, by name, the id kept in the tooltip
    # (issue 28)
    assert "door dev:" in shown   # the sign-up came with a development token: no staff id, shown as it is
    assert f'door <span class="actor" title="staff:{_sid}">Coördinator {email[:10]}</span> (region-admin)' in shown
    assert f">staff:{_sid}" not in shown and f"door staff:{_sid}" not in shown

    # Reject: the reason is required (next to its field), then it works
    d2 = f"/admin/{region}/members/{second}"
    r = b.post(f"{d2}/reject", {"reason": ""}, csrf_from=d2)
    assert r.status_code == 422 and field_error(r.text, "reject-reason")
    r = b.post(f"{d2}/reject", {"reason": "Geen huisarts in deze regio"}, csrf_from=d2)
    assert r.status_code == 302
    got = hecht.member(region, second)
    assert got["status"] == "rejected" and got["reason"] == "Geen huisarts in deze regio"
    assert "Geen huisarts in deze regio" in b.get(d2).text  # shown in the history too

    # A stale edit: the page was read, someone else approves meanwhile, this person rejects
    d3 = f"/admin/{region}/members/{third}"
    page = b.get(d3)
    old_etag = etag_of(page.text)
    hecht.approve(region, third)
    r = b.post(f"{d3}/reject", {"reason": "Dubbele inschrijving", "etag": old_etag}, csrf_from=d3)
    assert r.status_code == 409, r.text[:500]
    assert "door iemand anders" in r.text              # "changed by someone else"
    assert "Dubbele inschrijving" in r.text            # the person's own input kept
    assert "Actief" in r.text                          # the current value shown
    assert hecht.member(region, third)["status"] == "active"  # nothing overwritten

    # Roles: one chair per region (the API's error is shown)
    r = b.post(f"{detail}/roles", {"roles": ["chair"], "etag": ""}, csrf_from=detail)
    assert r.status_code == 302, r.text[:800]
    assert "chair" in hecht.member(region, first)["roles"]
    r = b.post(f"{d3}/roles", {"roles": ["chair", "board"], "etag": ""}, csrf_from=d3)
    assert r.status_code in (409, 422), r.text[:500]
    assert field_error(r.text, "roles"), r.text[:2000]
    assert "chair" not in hecht.member(region, third)["roles"]

    # CSRF: a form without its token is refused, and changes nothing
    r = b.post(f"{d3}/suspend", {"reason": "x"}, csrf=False)
    assert r.status_code == 400
    assert hecht.member(region, third)["status"] == "active"

    # Erase asks for confirmation first
    r = b.post(f"{d3}/erase", {}, csrf_from=f"{d3}/erase")
    assert r.status_code == 422 and field_error(r.text, "confirm")
    assert hecht.member(region, third)["status"] == "active"
    r = b.post(f"{d3}/erase", {"confirm": "y", "etag": etag_of(b.get(f"{d3}/erase").text)}, csrf_from=f"{d3}/erase")
    assert r.status_code == 302, r.text[:500]
    assert hecht.member(region, third)["status"] == "erased"
    assert "Dewulf" not in b.get(d3).text

    # The notifications log names the member (the approval's e-mail to Bart Aerts), the id in the tooltip
    log = wait_until(lambda: (lambda t: t if f'title="{first}">Bart Aerts</a>' in t else None)(
        b.get(f"/admin/{region}/notifications").text), timeout=30, message="the approval e-mail in the log")
    assert f">{first}</a>" not in log

    # Cursor paging through the API's "next"
    page = b.get(f"/admin/{region}/members", params={"limit": 1})
    names = [n for n in ("Aerts", "Claes") if n in page.text]
    assert len(names) == 1, names
    nxt = re.search(r'href="([^"]*after=[^"]*)" rel="next"', page.text)
    assert nxt, page.text[-2000:]
    page2 = b.get(html.unescape(nxt.group(1)))
    assert page2.status_code == 200 and names[0] not in page2.text
    assert "Aerts" in page2.text or "Claes" in page2.text


def test_isolation_between_regions_and_from_gps(portal_fleet, hecht):
    mine, theirs = hecht.region(), hecht.region()
    _sid, email = _staff(hecht, admin_of=[mine])
    secret_member = _gp(hecht, theirs, _riziv(21), "Geheim", "Zzyzxbewoner")
    secret_agreement = hecht.agreement(theirs, title="Vertrouwelijk Qwertyproject")
    b = _staff_browser(portal_fleet, email)
    assert b.get(f"/admin/{mine}").status_code == 200
    leaked = (theirs, secret_member, secret_agreement, "Zzyzxbewoner", "Qwertyproject")
    for path in ("", "/members", f"/members/{secret_member}", "/agreements", f"/agreements/{secret_agreement}",
                 "/agreements/new", "/notifications", "/settings", "/capacity", "/capacity.csv", "/staff"):
        r = b.get(f"/admin/{theirs}{path}")
        assert r.status_code == 404, (path, r.status_code)
        shown = r.text.replace(f"/admin/{theirs}{path}", "")  # the address asked for is echoed (language form)
        for word in leaked:
            assert word not in shown, (path, word)
    # Another region's member or agreement through one's own region's URLs: 404, nothing shown
    for path in (f"/members/{secret_member}", f"/agreements/{secret_agreement}"):
        r = b.get(f"/admin/{mine}{path}")
        assert r.status_code == 404, path
        shown = r.text.replace(f"/admin/{mine}{path}", "")
        for word in leaked:
            assert word not in shown, (path, word)
    # Forms against the other region: 404, and nothing changes
    r = b.post(f"/admin/{theirs}/members/{secret_member}/approve", {"etag": ""}, csrf_from=f"/admin/{mine}")
    assert r.status_code == 404
    assert hecht.member(theirs, secret_member)["status"] == "pending"
    r = b.post(f"/admin/{mine}/members/{secret_member}/approve", {"etag": ""}, csrf_from=f"/admin/{mine}")
    assert r.status_code == 404
    assert hecht.member(theirs, secret_member)["status"] == "pending"
    # Not a platform admin
    assert b.get("/platform").status_code == 404
    # None of it in the pages of one's own region either
    for path in ("", "/members", "/agreements", "/notifications"):
        text = b.get(f"/admin/{mine}{path}").text
        for word in leaked:
            assert word not in text, (path, word)

    # A GP (signed in, no staff account) gets 404 on the console
    gp_email = new_email()
    member = hecht.sign_up(mine, gp_email)
    hecht.approve(mine, member)
    gp = Browser(portal_fleet.urls["portal"])
    gp.sign_in(gp_email)
    for path in (f"/admin/{mine}", f"/admin/{mine}/members", f"/admin/{mine}/members/{member}", "/platform",
                 "/platform/staff"):
        r = gp.get(path)
        assert r.status_code == 404, path
    # Without a session: to sign-in
    anon = Browser(portal_fleet.urls["portal"])
    r = anon.get(f"/admin/{mine}", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].startswith("/sign-in")


def _editor_form(**over) -> dict:
    data = {"title": "Transmurale zorg", "theme": "frail-elderly", "summary": "Ontslag uit het ziekenhuis",
            "effective_from": date.today().isoformat(), "effective_until": "",
            "review_date": "", "municipalities": ["Gent"],
            "partners-0-name": "AZ Sint-Lucas", "partners-0-kind": "hospital", "partners-0-identifier": "",
            "partners-1-name": "Stad Gent", "partners-1-kind": "municipality", "partners-1-identifier": "",
            "commitments-0-party": "AZ Sint-Lucas", "commitments-0-text": "Ontslagbrief binnen 24 uur",
            "commitments-1-party": "", "commitments-1-text": "",
            "documents-0-title": "", "documents-0-url": ""}
    data.update(over)
    return data


def test_agreement_editor_vote_and_sign(portal_fleet, hecht):
    region = hecht.region()
    _sid, email = _staff(hecht, admin_of=[region])
    voter_email = new_email()
    voter = hecht.sign_up(region, voter_email)
    hecht.approve(region, voter)
    b = _staff_browser(portal_fleet, email)
    new = f"/admin/{region}/agreements/new"
    page = b.get(new)
    assert page.status_code == 200
    assert 'name="municipalities" value="Merelbeke"' in page.text  # the region's municipalities
    assert 'name="partners-1-name"' in page.text                  # empty rows without JavaScript
    # "Add a row" re-renders with one more row and keeps the input
    r = b.post(new, _editor_form(add="partners"), csrf_from=new)
    assert r.status_code == 200 and 'name="partners-2-name"' in r.text and 'value="Stad Gent"' in r.text
    # Field errors from the API next to their fields, the input kept
    r = b.post(new, _editor_form(title="", **{"documents-0-title": "Tekst", "documents-0-url": "http://x"}),
               csrf_from=new)
    assert r.status_code == 422, r.text[:500]
    assert field_error(r.text, "title") and field_error(r.text, "documents-0-url"), r.text[:3000]
    assert 'value="AZ Sint-Lucas"' in r.text
    r = b.post(new, _editor_form(), csrf_from=new)
    assert r.status_code == 302, r.text[:2000]
    path = r.headers["Location"]
    agreement = path.rsplit("/", 1)[1]
    got = requests.get(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}",
                       headers=bearer("region-admin", region), timeout=10).json()
    assert [p["name"] for p in got["partners"]] == ["AZ Sint-Lucas", "Stad Gent"]
    assert got["status"] == "draft" and got["municipalities"] == ["Gent"]

    # A stale edit: someone else saves in between; both values shown, nothing overwritten
    page = b.get(path)
    etag = etag_of(page.text)
    other = requests.patch(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}",
                           headers={**bearer("region-admin", region), "If-Match": etag}, timeout=10,
                           json={"title": "Titel van iemand anders"})
    assert other.status_code == 200, other.text
    r = b.post(path, _editor_form(title="Mijn eigen titel", etag=etag), csrf_from=path)
    assert r.status_code == 409, r.text[:500]
    assert "Titel van iemand anders" in r.text and "Mijn eigen titel" in r.text
    got = requests.get(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}",
                       headers=bearer("region-admin", region), timeout=10).json()
    assert got["title"] == "Titel van iemand anders"
    # saving again from that page (its current ETag) is a deliberate overwrite, and works
    new_etag = etag_of(r.text)
    r = b.post(path, _editor_form(title="Mijn eigen titel", etag=new_etag), csrf_from=path)
    assert r.status_code == 302, r.text[:1000]

    # Open the vote (once the agreements service knows the active member), the GP votes, close, sign
    from hecht import mongo
    from hecht.config import settings
    s = settings("agreements")
    db = mongo.database(s.mongo_uri, s.database_name)
    wait_until(lambda: any(db[c].count_documents({"region_id": region, "status": "active"}) >= 1
                           for c in db.list_collection_names()), timeout=60, message="agreements to see the member")
    r = b.post(f"{path}/open-vote", {"etag": ""}, csrf_from=path)
    assert r.status_code == 302, r.text[:1000]
    page = b.get(path)
    assert "Sluit de stemming nu" in page.text
    gp = Browser(portal_fleet.urls["portal"])
    gp.sign_in(voter_email)
    r = gp.post(f"/r/{region}/votes/{agreement}", {"choice": "for"})
    assert r.status_code == 302, r.text[:500]
    page = b.get(path)
    status = requests.get(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}",
                          headers=bearer("region-admin", region), timeout=10).json()
    if status["status"] == "in_consultation":  # not closed by everyone having voted yet
        confirm = b.get(f"{path}/close-vote")   # the confirmation step (issue 28)
        r = b.post(f"{path}/close-vote", {"etag": etag_of(confirm.text), "confirm": "y"}, csrf_from=path)
        assert r.status_code == 302, r.text[:1000]
    page = b.get(path)
    assert '<caption id="result-caption">' in page.text
    assert 'action="/admin/%s/agreements/%s/sign"' % (region, agreement) in page.text
    r = b.post(f"{path}/sign", {"etag": ""}, csrf_from=path)
    assert r.status_code == 302, r.text[:1000]
    got = requests.get(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}",
                       headers=bearer("region-admin", region), timeout=10).json()
    assert got["signed_at"], got
    page = b.get(path)
    assert "Ondertekend" in page.text and "Opgesteld" in page.text  # the history timeline
    assert f'<span class="actor" title="staff:{_sid}">Coördinator {email[:10]}</span>' in page.text  # a name
    # In force from today: the dashboard shows it; amend (a new draft version) and terminate
    wait_until(lambda: "Mijn eigen titel" in b.get(f"/admin/{region}").text.split('id="active-heading"')[1]
               .split("</section>")[0], timeout=20, message="the dashboard to show the agreement in force")
    r = b.post(f"{path}/amend", {}, csrf_from=path)
    assert r.status_code == 302 and r.headers["Location"] != path, r.text[:1000]
    amended = b.get(r.headers["Location"])
    assert amended.status_code == 200 and 'name="partners-0-name"' in amended.text  # the editor, prefilled
    assert 'value="AZ Sint-Lucas"' in amended.text
    r = b.post(f"{path}/terminate", {"reason": "", "etag": ""}, csrf_from=path)
    assert r.status_code == 422 and field_error(r.text, "reason")
    r = b.post(f"{path}/terminate", {"reason": "Partner gestopt", "etag": ""}, csrf_from=path)
    assert r.status_code == 302, r.text[:1000]
    got = requests.get(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}",
                       headers=bearer("region-admin", region), timeout=10).json()
    assert got["status"] == "terminated" and got["termination_reason"] == "Partner gestopt", got
    # The list filters
    page = b.get(f"/admin/{region}/agreements", params={"theme": "frail-elderly"})
    assert page.status_code == 200 and "Mijn eigen titel" in page.text


def test_capacity_chart_table_and_csv(portal_fleet, hecht):
    region = hecht.region(municipalities=("Gent", "=Merelbeke"))
    _sid, email = _staff(hecht, admin_of=[region])
    # Today's snapshot is taken before the day's approvals (issue 28: it said "0 reported" while the
    # dashboard said 3); it follows them.
    r = requests.post(f"{hecht.urls['members']}/v1/regions/{region}/capacity/snapshots",
                      headers=bearer("region-admin", region), timeout=10)
    assert r.status_code in (200, 201), r.text
    for i, cap in enumerate(("open", "closed", "limited")):
        m = _gp(hecht, region, _riziv(30 + i), "Eva", f"Capaciteit{i}")
        hecht.approve(region, m)
        r = requests.put(f"{hecht.urls['members']}/v1/regions/{region}/members/{m}/capacity",
                         headers=bearer("region-admin", region), json={"status": cap}, timeout=10)
        assert r.status_code == 200, r.text
    b = _staff_browser(portal_fleet, email)
    page = b.get(f"/admin/{region}/capacity")
    assert page.status_code == 200, page.text[:500]
    assert '<svg viewBox' in page.text and 'role="img"' in page.text and "<title id=" in page.text
    assert "<polyline" in page.text
    assert re.search(r"<caption[^>]*>Capaciteit in Gent per dag</caption>", page.text), page.text[-3000:]
    assert '<th scope="row"><time datetime="%s">' % date.today().isoformat() in page.text
    csv_resp = b.get(f"/admin/{region}/capacity.csv")
    assert csv_resp.status_code == 200 and csv_resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_resp.text)))
    gent = [row for row in rows if row["municipality"] == "Gent"]
    assert gent and gent[-1]["day"] == date.today().isoformat()
    assert (gent[-1]["open"], gent[-1]["limited"], gent[-1]["closed"]) == ("1", "1", "1")
    assert all(not row["municipality"].startswith("=") for row in rows)  # no formulas in a spreadsheet
    # A bad date is an error next to the field, not a 500
    r = b.get(f"/admin/{region}/capacity", params={"from": "gisteren"})
    assert r.status_code == 422 and field_error(r.text, "from")
    # The dashboard shows the capacity by municipality: the same figures as today's point
    dashboard = b.get(f"/admin/{region}").text
    assert "Capaciteit per gemeente" in dashboard
    assert '<th scope="row">Gent</th><td>1</td><td>1</td><td>1</td><td>0</td>' in dashboard


def test_platform_console_creates_a_region_and_invites_its_admin(portal_fleet, hecht):
    _sid, email = _staff(hecht, platform_admin=True)
    b = Browser(portal_fleet.urls["portal"])
    r = b.sign_in(email)
    assert r.headers["Location"] == "/platform"
    assert b.get("/platform").status_code == 200
    rid = f"p-{uuid.uuid4().hex[:8]}"
    form = {"id": rid, "name": "Huisartsen Noord", "country": "NL", "kind": "zorggroep",
            "municipalities": "Groningen\nHaren", "quorum": "0.5", "approval_threshold": "0.5",
            "voting_period_days": "14"}
    r = b.post("/platform/regions/new", dict(form, id="Not A Slug!"), csrf_from="/platform/regions/new")
    assert r.status_code == 422 and field_error(r.text, "id")
    r = b.post("/platform/regions/new", form, csrf_from="/platform/regions/new")
    assert r.status_code == 302, r.text[:1000]
    assert "Huisartsen Noord" in b.get("/platform").text
    invitee = new_email()
    before = len(mails(invitee))
    r = b.post("/platform/staff/new", {"name": "Noor Noord", "email": invitee, "language": "en",
                                       "admin_of": [rid]}, csrf_from="/platform/staff/new")
    assert r.status_code == 302, r.text[:1000]
    link = wait_for_link(invitee, before)
    page = b.get("/platform/staff", params={"q": "Noor"})
    assert invitee in page.text
    other = Browser(portal_fleet.urls["portal"])
    r = other.use_link(link)
    assert r.status_code == 302 and r.headers["Location"] == f"/admin/{rid}", r.headers
    assert "Huisartsen Noord" in other.get(f"/admin/{rid}").text
    # The region admin invites a colleague from the region console: a mail with a link
    colleague = new_email()
    r = other.post(f"/admin/{rid}/staff", {"name": "Collega", "email": colleague, "language": "nl"},
                   csrf_from=f"/admin/{rid}/staff")
    assert r.status_code == 302, r.text[:1000]
    wait_for_link(colleague)
    assert colleague in other.get(f"/admin/{rid}/staff").text
    # The platform console edits the account; a stale edit changes nothing
    sid = re.search(r'href="/platform/staff/(stf_[^"]+)"', page.text).group(1)
    edit = b.get(f"/platform/staff/{sid}")
    etag = etag_of(edit.text)
    r = requests.patch(f"{hecht.urls['members']}/v1/staff/{sid}", json={"name": "Noor van Noord"},
                       headers={**bearer("platform-admin"), "If-Match": etag}, timeout=10)
    assert r.status_code == 200, r.text
    r = b.post(f"/platform/staff/{sid}", {"name": "Noor N.", "language": "en", "admin_of": [rid], "etag": etag},
               csrf_from=f"/platform/staff/{sid}")
    assert r.status_code == 409 and "Noor van Noord" in r.text and "Noor N." in r.text
    got = requests.get(f"{hecht.urls['members']}/v1/staff/{sid}", headers=bearer("platform-admin"), timeout=10)
    assert got.json()["name"] == "Noor van Noord"
    # Region settings (as the region's admin): field errors, and a stale edit that changes nothing
    settings_path = f"/admin/{rid}/settings"
    page = other.get(settings_path)
    assert page.status_code == 200 and "Groningen" in page.text
    etag = etag_of(page.text)
    form = {"name": "Huisartsen Noord", "municipalities": "Groningen\nHaren", "quorum": "2",
            "approval_threshold": "0,5", "voting_period_days": "14", "etag": etag}
    r = other.post(settings_path, form, csrf_from=settings_path)
    assert r.status_code == 422 and field_error(r.text, "quorum"), r.text[:2000]
    r = requests.patch(f"{hecht.urls['members']}/v1/regions/{rid}", json={"name": "Huisartsen Noord-Oost"},
                       headers={**bearer("platform-admin"), "If-Match": etag}, timeout=10)
    assert r.status_code == 200, r.text
    r = other.post(settings_path, dict(form, quorum="0,6", name="Mijn naam"), csrf_from=settings_path)
    assert r.status_code == 409 and "Huisartsen Noord-Oost" in r.text and "Mijn naam" in r.text
    region = requests.get(f"{hecht.urls['members']}/v1/regions/{rid}", headers=bearer("platform-admin"),
                          timeout=10).json()
    assert region["name"] == "Huisartsen Noord-Oost" and region["mandate_policy"]["quorum"] == 0.5
    r = other.post(settings_path, dict(form, quorum="0,6", etag=etag_of(r.text)), csrf_from=settings_path)
    assert r.status_code == 302, r.text[:1000]
    # CSRF on the platform's forms too
    r = b.post("/platform/regions/new", form, csrf=False)
    assert r.status_code == 400


def test_odd_input_never_fails_and_a_gp_who_is_staff_chooses(portal_fleet, hecht):
    region = hecht.region()
    gp_email = new_email()
    member = hecht.sign_up(region, gp_email, number=_riziv(50))
    hecht.approve(region, member)
    _sid, _ = _staff(hecht, admin_of=[region], platform_admin=True, email=gp_email)
    agreement = hecht.agreement(region)
    b = Browser(portal_fleet.urls["portal"])
    r = b.sign_in(gp_email)
    assert r.headers["Location"].startswith("/choose-region"), r.headers
    page = b.get("/choose-region")
    assert f'href="/admin/{region}"' in page.text and 'href="/platform"' in page.text
    assert 'name="region" value="%s"' % region in page.text      # the membership, as before
    long = "x" * 600
    gets = [f"/admin/{region}/members?after=%00&q={long}&status=active&role=chair&capacity=unknown",
            f"/admin/{region}/members?email_verified=maybe&municipality=Atlantis",
            f"/admin/{region}/agreements?partner={long}&status=nope&theme=nope&after={long}",
            f"/admin/{region}/capacity?from=2026-13-45", f"/admin/{region}/capacity?from=2020-01-01&to=2026-01-01",
            f"/admin/{region}/capacity?to=2020-01-01&from=2026-01-01", f"/admin/{region}/capacity.csv?from=x",
            f"/admin/{region}/notifications?status=x&member={long}&after={long}",
            f"/admin/{region}/members/{long}", f"/admin/{region}/agreements/..%2f..", f"/admin/{region}/members/m_none",
            f"/admin/{region}/agreements/a_none", "/platform/staff?status=x&q=" + long, "/platform/regions/nope",
            "/platform/staff/stf_none", f"/admin/{region}/members/{member}/nonsense"]
    for path in gets:
        r = b.get(path)
        assert r.status_code < 500, (path, r.status_code)
    posts = [(f"/admin/{region}/agreements/new", {"partners-99-name": "x", "partners-1-kind": "nope", "add": "x",
                                                  "effective_from": "gisteren", "municipalities": ["Atlantis"],
                                                  "documents-0-url": "javascript:alert(1)", "title": long * 5}),
             (f"/admin/{region}/agreements/{agreement}", {"etag": "garbage", "title": "", "partners-0-name": ""}),
             (f"/admin/{region}/agreements/{agreement}/terminate", {"reason": ""}),
             (f"/admin/{region}/agreements/{agreement}/sign", {"etag": "\"999\""}),
             (f"/admin/{region}/agreements/{agreement}/close-vote", {}),
             (f"/admin/{region}/agreements/{agreement}/nonsense", {}),
             (f"/admin/{region}/members/{member}/roles", {"roles": ["emperor"], "etag": "x"}),
             (f"/admin/{region}/members/{member}/approve", {}),
             (f"/admin/{region}/members/{member}/reinstate", {}),
             (f"/admin/{region}/settings", {"quorum": "abc", "approval_threshold": "", "voting_period_days": "1.5"}),
             (f"/admin/{region}/settings", {"name": "", "municipalities": "", "quorum": "0.5",
                                            "approval_threshold": "0.5", "voting_period_days": "14"}),
             (f"/admin/{region}/staff", {"email": "not-an-address", "name": "", "language": "xx"}),
             (f"/admin/{region}/staff/stf_none/remove", {}),
             ("/platform/regions/new", {"id": "", "country": "XX", "kind": "", "quorum": "x"}),
             (f"/platform/regions/{region}", {"name": "", "etag": "x", "quorum": "5", "approval_threshold": "0",
                                              "voting_period_days": "0", "municipalities": ""}),
             ("/platform/staff/new", {"email": gp_email, "name": "Dubbel", "admin_of": ["atlantis"]}),
             ("/platform/staff/stf_none", {"name": "x"}), ("/platform/staff/stf_none/revoke", {})]
    for path, data in posts:
        r = b.post(path, data, csrf_from=f"/admin/{region}")
        assert r.status_code < 500, (path, r.status_code, r.text[:300])
    assert hecht.member(region, member)["status"] == "active"


def test_a_revoked_account_or_a_region_taken_away_stops_working(portal_fleet, hecht):
    """The session looks its staff account up again (HECHT_PORTAL_STAFF_RECHECK_S; 0 here)."""
    url = portal_fleet.start_portal("portal-recheck", HECHT_PORTAL_STAFF_RECHECK_S=0)
    one, two = hecht.region(), hecht.region()
    sid, email = _staff(hecht, admin_of=[one, two])
    b = Browser(url)
    b.sign_in(email)
    assert b.get(f"/admin/{one}").status_code == 200 and b.get(f"/admin/{two}").status_code == 200
    r = requests.delete(f"{hecht.urls['members']}/v1/regions/{two}/staff/{sid}",
                        headers=bearer("region-admin", two), timeout=10)
    assert r.status_code == 204, r.text
    assert b.get(f"/admin/{two}").status_code == 404
    assert b.get(f"/admin/{one}").status_code == 200
    r = requests.post(f"{hecht.urls['members']}/v1/staff/{sid}/revoke", headers=bearer("platform-admin"),
                      json={}, timeout=10)
    assert r.status_code == 200, r.text
    assert b.get(f"/admin/{one}").status_code == 404


def test_closing_a_vote_early_is_confirmed_with_the_turnout_so_far(portal_fleet, hecht):
    """Issue 28 item 5: "Close the vote now" leads to a confirmation step (no JavaScript needed)
    that states the turnout and what closing means; only confirming closes the vote."""
    region = hecht.region()
    _sid, email = _staff(hecht, admin_of=[region])
    voters = [_gp(hecht, region, _riziv(80 + i), "Vera", f"Voter{i}") for i in range(3)]
    for m in voters:
        hecht.approve(region, m)
    agreement = hecht.agreement(region, title="Ouderenzorg aan huis")
    hecht.open_vote(region, agreement, electorate=3)

    def vote(member: str) -> None:
        r = requests.put(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}/mandate/votes/{member}",
                         headers=bearer("gp", region, member=member), json={"choice": "for"}, timeout=10)
        assert r.status_code == 200, r.text

    def mandate() -> dict:
        return requests.get(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}",
                            headers=bearer("region-admin", region), timeout=10).json()["mandate"]

    vote(voters[0])
    b = _staff_browser(portal_fleet, email)
    path = f"/admin/{region}/agreements/{agreement}"
    page = b.get(path)
    # The button asks; it is no form that closes.
    assert f'<form method="get" action="{path}/close-vote">' in page.text and "Sluit de stemming nu" in page.text
    assert f'method="post" action="{path}/close-vote"' not in page.text

    # One click: the confirmation, with the turnout so far and the consequence; nothing closed.
    confirm = b.get(f"{path}/close-vote")
    assert confirm.status_code == 200, confirm.text[:500]
    assert "Uitgebrachte stemmen: 1 van 3 (33%)" in confirm.text, confirm.text[:3000]
    assert "Ouderenzorg aan huis" in confirm.text and "definitief" in confirm.text
    assert "quorum is nog niet gehaald" in confirm.text     # 1 of 3 is below the quorum of 50%
    assert f'<a href="{path}">' in confirm.text              # cancel
    assert mandate()["status"] == "open"
    # A POST without the confirmation (an old form, a replay) shows the step again and closes nothing.
    r = b.post(f"{path}/close-vote", {"etag": etag_of(confirm.text)}, csrf_from=path)
    assert r.status_code == 200 and "Uitgebrachte stemmen: 1 van 3" in r.text
    assert mandate()["status"] == "open"

    # Someone votes while the page is open: confirming shows the new turnout, closes nothing.
    stale = etag_of(confirm.text)
    vote(voters[1])
    r = b.post(f"{path}/close-vote", {"etag": stale, "confirm": "y"}, csrf_from=path)
    assert r.status_code == 409 and "Uitgebrachte stemmen: 2 van 3 (67%)" in r.text, r.text[:3000]
    assert "quorum is nog niet gehaald" not in r.text and mandate()["status"] == "open"

    # Confirming closes it: the counts are final.
    r = b.post(f"{path}/close-vote", {"etag": etag_of(r.text), "confirm": "y"}, csrf_from=path)
    assert r.status_code == 302 and r.headers["Location"] == path, r.text[:1000]
    closed = mandate()
    assert closed["status"] != "open" and closed["cast"] == 2 and closed["for"] == 2, closed
    # Closed: the step is gone (back to the agreement, which says so).
    r = b.get(f"{path}/close-vote", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].endswith(path)
