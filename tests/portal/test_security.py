"""The portal's security properties (issue 13), against real processes: CSRF, single-use and
expiring sign-in links, no account enumeration, cookie flags, session rotation and sign-out,
rate limits, and nobody else's data."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pymongo

from tests.conftest import wait_until

from .conftest import Browser, mails, new_email, token_of, wait_for_link


def _portal_db(fleet):
    uri = fleet.env["HECHT_PORTAL_MONGO_URI"]
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    return client, client.get_default_database()


def _signed_in(browser: Browser, region: str) -> bool:
    r = browser.get(f"/r/{region}/membership", allow_redirects=False)
    return r.status_code == 200


def test_a_post_without_csrf_token_is_refused_and_changes_nothing(portal_fleet, hecht, browser):
    region = hecht.region()
    email = new_email()
    member = hecht.sign_up(region, email)
    hecht.approve(region, member)
    # Asking for a link without a token: 400, and no mail goes out.
    r = browser.post("/sign-in", {"email": email}, csrf=False)
    assert r.status_code == 400
    assert "<h1>" in r.text and "Traceback" not in r.text
    assert mails(email) == []
    # Signed in, a capacity change without a token: 400, and the membership is unchanged.
    browser.sign_in(email)
    r = browser.post(f"/r/{region}/membership/capacity", {"status": "closed", "note": "x"}, csrf=False)
    assert r.status_code == 400
    r = browser.post(f"/r/{region}/membership/capacity", {"status": "closed", "note": "x", "csrf_token": "forged"})
    assert r.status_code == 400
    assert hecht.member(region, member).get("capacity") is None
    # Signing up without a token: 400 and no member.
    r = browser.post(f"/regions/{region}/sign-up", {"given_name": "B", "email": new_email()}, csrf=False)
    assert r.status_code == 400
    # Sign-out without a token does not end the session.
    assert browser.post("/sign-out", csrf=False).status_code == 400
    assert _signed_in(browser, region)


def test_a_link_works_once_and_a_get_never_signs_in(portal_fleet, hecht, browser):
    region = hecht.region()
    email = new_email()
    hecht.sign_up(region, email)  # no confirm mail: signed up through the API
    r = browser.ask_link(email)
    assert r.status_code == 302 and r.headers["Location"].endswith("/sign-in/sent")
    link = wait_for_link(email)
    # Mail scanners fetch links: a GET shows a button and signs nobody in.
    for _ in range(2):
        page = browser.get(link)
        assert page.status_code == 200 and '<button type="submit">' in page.text
    assert not _signed_in(browser, region)
    r = browser.use_link(link)
    assert r.status_code == 302 and r.headers["Location"] == f"/r/{region}/membership"
    assert _signed_in(browser, region)

    # Used once: a second use (another browser) gets the clear page and no session.
    other = Browser(portal_fleet.urls["portal"])
    r = other.get(link)
    assert r.status_code == 410 and "<h1>" in r.text
    page = other.get("/sign-in")
    r = other.post(link, {"csrf_token": token_of(page.text)})
    assert r.status_code == 410
    assert not _signed_in(other, region)


def test_an_expired_link_shows_a_clear_page_and_gives_no_session(portal_fleet, hecht, browser):
    region = hecht.region()
    email = new_email()
    hecht.sign_up(region, email)
    browser.ask_link(email)
    link = wait_for_link(email)
    client, db = _portal_db(portal_fleet)
    try:
        # Only the token's hash is stored; age the link past its 15 minutes.
        docs = list(db.links.find({"email": email}))
        assert len(docs) == 1 and re.fullmatch(r"[0-9a-f]{64}", docs[0]["_id"])
        assert link.rsplit("/", 1)[1] not in str(docs[0])
        assert timedelta(minutes=14) < docs[0]["expires_at"].replace(tzinfo=timezone.utc) - datetime.now(timezone.utc) \
            <= timedelta(minutes=15)
        db.links.update_one({"_id": docs[0]["_id"]},
                            {"$set": {"expires_at": datetime.now(timezone.utc) - timedelta(seconds=1)}})
    finally:
        client.close()
    r = browser.get(link)
    assert r.status_code == 410
    assert "Deze link kan niet meer gebruikt worden" in r.text  # Dutch by default
    r = browser.post(link, {"csrf_token": token_of(browser.get("/sign-in").text)})
    assert r.status_code == 410
    assert not _signed_in(browser, region)


def test_known_and_unknown_addresses_get_the_same_answer(portal_fleet, hecht):
    region = hecht.region()
    known = new_email()
    hecht.sign_up(region, known)
    unknown = new_email()
    answers = []
    for email in (known, unknown):
        b = Browser(portal_fleet.urls["portal"])
        r = b.ask_link(email)
        page = b.get(r.headers["Location"])
        answers.append((r.status_code, r.headers["Location"], page.status_code, _without_tokens(page.text)))
    assert answers[0] == answers[1]
    # Only the known one gets a link, to its stored address (issue 22: never to an address no
    # account stored); the unknown one gets no mail and no link exists for it.
    wait_for_link(known)
    assert mails(unknown) == []
    client, db = _portal_db(portal_fleet)
    try:
        assert db.links.count_documents({"email": unknown}) == 0
        assert db.links.count_documents({"email": known}) == 1
    finally:
        client.close()


def _without_tokens(html: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]+"', "", html)


def test_cookie_flags_and_rotation_and_sign_out(portal_fleet, hecht, browser):
    region = hecht.region()
    email = new_email()
    member = hecht.sign_up(region, email)
    hecht.approve(region, member)

    browser.get("/sign-in")  # an anonymous session (it carries the CSRF token)
    anonymous = browser.session_cookie
    assert anonymous
    r = browser.sign_in(email)
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # HECHT_ENV=development: plain http on loopback
    signed = browser.session_cookie
    assert signed and signed != anonymous, "the session id must change at sign-in"
    assert _signed_in(browser, region)

    # The id held before sign-in is worth nothing afterwards (session fixation).
    fixated = Browser(portal_fleet.urls["portal"])
    fixated.s.cookies.set("hecht_session", anonymous)
    assert not _signed_in(fixated, region)

    # Sign-out ends the session on the server: the old id no longer works.
    r = browser.post("/sign-out", csrf_from=f"/r/{region}/membership")
    assert r.status_code == 302
    assert not _signed_in(browser, region)
    replay = Browser(portal_fleet.urls["portal"])
    replay.s.cookies.set("hecht_session", signed)
    assert not _signed_in(replay, region)

    # Outside development the cookie is Secure.
    url = portal_fleet.start_portal("portal-production", HECHT_ENV="production",
                                    HECHT_JWT_SECRET="production-portal-secret-" + "0" * 24)
    prod = Browser(url)
    r = prod.get("/sign-in")
    set_cookie = r.headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie


def test_sign_in_is_rate_limited_per_address_and_per_client(portal_fleet, hecht):
    # Per client: a portal with a low limit (the counters live in the shared portal database).
    url = portal_fleet.start_portal("portal-strict", HECHT_PORTAL_SIGNIN_LIMIT_CLIENT="3")
    strict = Browser(url)
    statuses = [strict.ask_link(new_email()).status_code for _ in range(4)]
    assert statuses == [302, 302, 302, 429], statuses
    assert "Retry-After" in strict.last.headers and "<h1>" in strict.last.text
    # Per address (default 5 links per window): past it no more links go out, but the page
    # answers as always (anyone could exhaust anyone's limit: tests/portal/test_identity.py).
    email = new_email()
    hecht.sign_up(hecht.region(), email)
    b = Browser(portal_fleet.urls["portal"])
    statuses = [b.ask_link(email).status_code for _ in range(6)]
    assert statuses == [302] * 6, statuses
    assert {b.last.headers["Location"]} == {"/sign-in/sent"} and "Retry-After" not in b.last.headers
    wait_until(lambda: len(mails(email)) == 6, message="five sign-in mails and one notice")
    # Another address from the same client still works.
    other = new_email()
    hecht.sign_up(hecht.region(), other)
    assert b.ask_link(other).status_code == 302
    wait_for_link(other)


def test_nobody_sees_another_region_or_agreement(portal_fleet, hecht, browser):
    mine, other = hecht.region(), hecht.region()
    email = new_email()
    member = hecht.sign_up(mine, email)
    hecht.approve(mine, member)
    stranger = hecht.sign_up(other, new_email(), number="10829059003")
    their_agreement = hecht.agreement(other)
    browser.sign_in(email)
    # A region the person is not a member of: 404, whatever the page.
    for path in (f"/r/{other}/membership", f"/r/{other}/votes", f"/r/{other}/my-data.json",
                 f"/r/{other}/erase", f"/r/{other}/agreements/{their_agreement}"):
        r = browser.get(path, allow_redirects=False)
        assert r.status_code == 404, path
    assert browser.post(f"/r/{other}/erase", {"confirm": "y"}, csrf_from="/sign-in").status_code == 404
    # Another region's agreement (or a made-up id) under my own region: 404 from the API → 404.
    for path in (f"/r/{mine}/agreements/{their_agreement}", f"/r/{mine}/votes/{their_agreement}",
                 f"/r/{mine}/agreements/a_doesnotexist", f"/r/{mine}/agreements/..%2F..%2Fx"):
        r = browser.get(path, allow_redirects=False)
        assert r.status_code == 404, path
    # A URL naming a member id: only one's own (redirected to the page), anyone else's is a 404.
    assert browser.get(f"/r/{mine}/members/{member}", allow_redirects=False).status_code == 302
    for path in (f"/r/{mine}/members/{stranger}", f"/r/{other}/members/{stranger}",
                 f"/r/{mine}/members/{stranger}/export"):
        assert browser.get(path, allow_redirects=False).status_code == 404, path
    # The other member is untouched and their id appears nowhere on my pages.
    assert hecht.member(other, stranger)["status"] == "pending"
    assert stranger not in browser.get(f"/r/{mine}/membership").text


def test_no_stack_trace_on_odd_input(portal_fleet, hecht, browser):
    region = hecht.region()
    odd = ["/sign-in/" + "x" * 500, "/sign-in/%00", "/regions/%2e%2e", "/regions/" + "a" * 300,
           "/r/x/membership", "/sign-in?next=//evil.example", "/nope", "/regions/UPPER case"]
    for path in odd:
        r = browser.get(path, allow_redirects=False)
        assert r.status_code < 500 and "Traceback" not in r.text, (path, r.status_code)
    r = browser.post("/language", {"lang": "xx", "next": "https://evil.example/"}, csrf_from="/")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    r = browser.post(f"/regions/{region}/sign-up", {"given_name": "x" * 5000}, csrf_from=f"/regions/{region}/sign-up")
    assert r.status_code == 422 and "Traceback" not in r.text
    # The open-redirect guard also holds for the link's next.
    email = new_email()
    hecht.sign_up(region, email)
    browser.ask_link(email, "//evil.example/x")
    r = browser.use_link(wait_for_link(email))
    assert r.status_code == 302 and r.headers["Location"].startswith("/")
    assert "evil" not in r.headers["Location"]


def test_a_service_that_is_down_gives_a_clear_503(portal_fleet, hecht, browser):
    region = hecht.region()
    assert browser.get(f"/regions/{region}").status_code == 200
    portal_fleet.processes["members"].stop()
    r = browser.get(f"/regions/{region}")
    assert r.status_code == 503 and "Tijdelijk niet beschikbaar" in r.text and "Traceback" not in r.text
    r = browser.get("/")  # the start page still works, without the list
    assert r.status_code == 200
