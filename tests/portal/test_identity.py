"""E-mail addresses as identities at the portal (issue 22), every part a real process:

- the account takeover: a sign-in link asked for with a lookalike of an account's address
  (``victim@xn--strae-oqa.…`` or ``victim@straße.…`` for ``victim@strasse.…``) went to the
  lookalike and opened the account. Links now go only to an account's stored address;
- upper-case ASCII still signs the real person in, with the mail to the stored address;
- erasure ends the person's other sessions by member id, also one signed in with another
  spelling of the address (item 5);
- anyone asking for links for an address no longer locks the person out with a 429: the page is
  the same, and the person gets one e-mail saying links were requested (item 6).
"""
from __future__ import annotations

import time
import uuid

import pymongo
import requests

from tests.conftest import bearer, wait_until
from tests.support import maildir

from .conftest import Browser, body_of, mails, new_email, token_of, wait_for_link
from .test_oidc import CLIENT_ID, CLIENT_SECRET, FakeProvider


def _portal_db(fleet):
    uri = fleet.env["HECHT_PORTAL_MONGO_URI"]
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    return client, client.get_default_database()


def _tagged(tag: str) -> list:
    """Every message in the sink addressed to anything holding ``tag`` (any domain, any form)."""
    return [m for m in maildir.messages() if tag in str(m["To"]).lower()]


def _lookalikes(local: str) -> list[str]:
    return [f"{local}@xn--strae-oqa.example.org", f"{local}@straße.example.org", f"{local}@STRAẞE.example.org"]


def _links_for(fleet, tag: str) -> set[str]:
    """The addresses the sign-in links with ``tag`` in their address were made for."""
    client, db = _portal_db(fleet)
    try:
        return {d["email"] for d in db.links.find({"email": {"$regex": tag}}, {"email": 1})}
    finally:
        client.close()


def _ask_as_attacker(fleet, local: str) -> None:
    """Ask for links with the lookalikes: the usual answer, and no link is made (links are
    stored before their mail is handed over, so this is known at once)."""
    attacker = Browser(fleet.urls["portal"])
    for typed in _lookalikes(local):
        r = attacker.ask_link(typed)
        # The same answer as for any address: nothing tells whether an account exists.
        assert r.status_code == 302 and r.headers["Location"] == "/sign-in/sent", (typed, r.status_code)
    assert _links_for(fleet, local.split(".")[-1]) == set(), "a link was made for a lookalike address"
    assert attacker.get("/platform", allow_redirects=False).status_code == 302   # not signed in


def _sign_in_with(browser: Browser, typed: str, stored: str) -> requests.Response:
    """Ask with ``typed``; the link must arrive at exactly ``stored``; use it."""
    before = len(mails(stored))
    assert browser.ask_link(typed).status_code == 302
    link = wait_for_link(stored, before)
    [msg] = [m for m in mails(stored)[before:] if link in body_of(m)]
    assert str(msg["To"]) == stored   # the stored address, not the typed one
    return browser.use_link(link)


def test_a_lookalike_address_gets_no_link_to_a_gp_and_upper_case_reaches_the_gp(portal_fleet, hecht):
    region = hecht.region()
    tag = uuid.uuid4().hex[:10]
    local = f"victim.{tag}"
    stored = f"{local}@strasse.example.org"
    hecht.approve(region, hecht.sign_up(region, stored))

    _ask_as_attacker(portal_fleet, local)

    # The real person, typing in upper case: the link goes to the stored address and signs in.
    owner = Browser(portal_fleet.urls["portal"])
    r = _sign_in_with(owner, f"{local.upper()}@STRASSE.EXAMPLE.ORG", stored)
    assert r.status_code == 302 and r.headers["Location"] == f"/r/{region}/membership"
    assert owner.get(f"/r/{region}/membership", allow_redirects=False).status_code == 200
    export = owner.get(f"/r/{region}/my-data.json").json()
    assert export["portal"]["email"] == stored

    # Only the stored address ever got a link or a mail.
    time.sleep(1)
    assert _links_for(portal_fleet, tag) <= {stored}   # (a used link is gone)
    assert {str(m["To"]) for m in _tagged(tag)} == {stored}


def test_a_lookalike_address_gets_no_link_to_a_platform_admin(portal_fleet, hecht):
    tag = uuid.uuid4().hex[:10]
    local = f"root.{tag}"
    stored = f"{local}@strasse.example.org"
    r = requests.post(f"{hecht.urls['members']}/v1/staff", headers=bearer("platform-admin"), timeout=10,
                      json={"email": stored, "name": "Root Admin", "language": "en", "platform_admin": True})
    assert r.status_code == 201, r.text

    _ask_as_attacker(portal_fleet, local)

    admin = Browser(portal_fleet.urls["portal"])
    r = _sign_in_with(admin, f"ROOT.{tag.upper()}@Strasse.Example.Org", stored)
    assert r.status_code == 302
    assert admin.get("/platform", allow_redirects=False).status_code == 200

    time.sleep(1)
    assert _links_for(portal_fleet, tag) <= {stored}   # (a used link is gone)
    assert {str(m["To"]) for m in _tagged(tag)} == {stored}


def test_erasure_ends_a_session_signed_in_with_another_spelling(portal_fleet, hecht):
    region = hecht.region()
    email = new_email()
    hecht.approve(region, hecht.sign_up(region, email))
    # A session of the same person with the address in upper case (an OIDC provider's spelling).
    with FakeProvider(email.upper()) as provider:
        url = portal_fleet.start_portal("portal-oidc-upper", HECHT_PORTAL_OIDC_ISSUER=provider.issuer,
                                        HECHT_PORTAL_OIDC_CLIENT_ID=CLIENT_ID,
                                        HECHT_PORTAL_OIDC_CLIENT_SECRET=CLIENT_SECRET)
        other = Browser(url)
        r = other.get(f"/sign-in/oidc?next=/r/{region}/membership")
        assert r.status_code == 200 and r.url == f"{url}/r/{region}/membership", (r.status_code, r.url)
    me = Browser(portal_fleet.urls["portal"])
    me.sign_in(email)
    # "My data" lists both sessions: they hold the same membership.
    assert len(me.get(f"/r/{region}/my-data.json").json()["portal"]["sessions"]) == 2

    r = me.post(f"/r/{region}/erase", {"confirm": "y"}, csrf_from=f"/r/{region}/erase")
    assert r.status_code == 302, r.text
    # Both sessions are over: each page sends its browser to sign in.
    for b in (me, other):
        r = b.get(f"/r/{region}/membership", allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"].startswith("/sign-in"), (b.portal, r.status_code)


def test_anyone_asking_for_links_never_locks_the_person_out(portal_fleet, hecht):
    region = hecht.region()
    email = new_email()
    hecht.approve(region, hecht.sign_up(region, email, language="fr"))
    stranger = Browser(portal_fleet.urls["portal"])
    for typed in [email] * 5 + [email.upper()] * 3:   # the limit counts the identity, in any case
        r = stranger.ask_link(typed)
        assert r.status_code == 302 and r.headers["Location"] == "/sign-in/sent", (r.status_code, r.text[:200])
        assert "Retry-After" not in r.headers
    # Five links, then ONE e-mail (in the person's language) saying that links were requested.
    # (Other mails, such as notify's approval, go to the address too.)
    def sign_in_mails():
        subjects = [str(m["Subject"]) for m in mails(email)]
        return (subjects.count("Uw inloglink voor hecht"),   # the links: in the page's language
                subjects.count("Des liens de connexion ont été demandés pour votre adresse"))
    wait_until(lambda: sign_in_mails() == (5, 1), timeout=20, message="five links and one notice")
    notice = next(m for m in mails(email) if "demandés" in str(m["Subject"]))
    assert "/sign-in/" not in body_of(notice) and "minutes" in body_of(notice)

    # The person, asking now, sees the usual page (no 429 for their own address) ...
    person = Browser(portal_fleet.urls["portal"])
    page = person.get("/sign-in")
    r = person.post("/sign-in", {"email": email, "next": "", "csrf_token": token_of(page.text)})
    assert r.status_code == 302 and r.headers["Location"] == "/sign-in/sent"
    assert person.get("/sign-in/sent").status_code == 200
    # ... and no further mail goes out in this window: neither a link nor a second notice.
    control = new_email()
    hecht.sign_up(hecht.region(), control)
    person.ask_link(control)
    wait_for_link(control)
    time.sleep(1)
    assert sign_in_mails() == (5, 1)
