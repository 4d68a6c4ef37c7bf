"""The portal's pages, driven like a browser without JavaScript: sign-up with field errors in
the person's language, the confirm mail, membership edits, the ballot (turnout only), the
agreements, my data, leaving and erasure, several regions, and language negotiation."""
from __future__ import annotations

import json
import re

from tests.conftest import wait_until

from .conftest import Browser, body_of, field_error, mails, new_email, wait_for_link


def _sign_up_form(email: str, **over) -> dict:
    data = {"given_name": "An", "family_name": "Peeters", "email": email, "language": "nl",
            "category": "practice-owner", "registration_scheme": "RIZIV", "registration_number": "10185748004",
            "practice_name": "Praktijk Zuid", "practice_postcode": "9000", "practice_municipality": "Gent"}
    data.update(over)
    return data


def test_sign_up_shows_field_errors_next_to_the_fields_in_the_persons_language(portal_fleet, hecht):
    region = hecht.region()
    path = f"/regions/{region}/sign-up"
    bad = {"registration_number": "10185748009", "practice_postcode": "900"}
    expected = {
        "nl": {"registration_number": "Bekwaamheidscode 009 betekent", "practice_postcode": "vier cijfers"},
        "fr": {"registration_number": "Le code de compétence 009", "practice_postcode": "quatre chiffres"},
        "en": {"registration_number": "Competence code 009 means", "practice_postcode": "four digits"},
    }
    for lang, wanted in expected.items():
        b = Browser(portal_fleet.urls["portal"])
        b.s.headers["Accept-Language"] = f"{lang};q=1"
        email = new_email()
        r = b.post(path, _sign_up_form(email, **bad))
        assert r.status_code == 422, r.text[:500]
        for field, text in wanted.items():
            shown = field_error(r.text, field)
            assert shown and text in shown, (lang, field, shown)
            # tied to its field for screen readers
            assert re.search(rf'aria-describedby="[^"]*{field}-error"[^>]*id="{field}"|'
                             rf'id="{field}"[^>]*aria-invalid="true"|aria-invalid="true"[^>]*id="{field}"', r.text), field
        # what the person typed stays in the form
        assert f'value="{email}"' in r.text
    b = Browser(portal_fleet.urls["portal"])
    r = b.post(path, _sign_up_form(new_email(), registration_number="10185799004"))
    assert "controlecijfers" in field_error(r.text, "registration_number")
    # The API checks the shape first (an empty name), then the rules: both reach the field.
    r = b.post(path, _sign_up_form(new_email(), given_name=""))
    assert r.status_code == 422 and "verplicht" in field_error(r.text, "given_name"), field_error(r.text, "given_name")


def test_sign_up_confirm_mail_signs_in_and_verifies_the_address(portal_fleet, hecht):
    region = hecht.region()
    b = Browser(portal_fleet.urls["portal"])
    b.s.headers["Accept-Language"] = "fr"
    email = new_email()
    r = b.post(f"/regions/{region}/sign-up", _sign_up_form(email, language="fr"))
    assert r.status_code == 302 and r.headers["Location"] == "/sign-up/sent"
    assert "Consultez vos e-mails" in b.get("/sign-up/sent").text
    msg = wait_until(lambda: mails(email), message="the confirm mail")[-1]
    assert msg["Subject"] == "Confirmez votre adresse e-mail"  # in the person's language
    assert "72" in body_of(msg)
    r = b.use_link(wait_for_link(email))
    assert r.status_code == 302 and r.headers["Location"] == f"/r/{region}/membership"
    page = b.get(r.headers["Location"])
    assert page.status_code == 200 and "En attente d&#39;approbation" in page.text
    # The members service learnt that the address is proven.
    member = b.get(f"/r/{region}/my-data.json").json()["member_id"]
    assert hecht.member(region, member).get("email_verified_at")
    # Signing up again with the same address (another case): the same answer, and the member is
    # told by e-mail that someone tried (issue 22), at the address they confirmed, in their language.
    other = Browser(portal_fleet.urls["portal"])
    before = len(mails(email))
    r = other.post(f"/regions/{region}/sign-up", _sign_up_form(email.upper(), registration_number="10829059003"))
    assert r.status_code == 302 and r.headers["Location"] == "/sign-up/sent"
    tried = wait_until(lambda: mails(email)[before:], timeout=60, message="the someone-tried e-mail")
    assert len(tried) == 1 and tried[0]["Subject"].startswith("Quelqu'un a tenté de s'inscrire auprès de")
    assert "cette adresse e-mail" in body_of(tried[0]) and f"/r/{region}/membership" in body_of(tried[0])
    assert hecht.member(region, member)["status"] == "pending"   # nothing about the membership changed


def test_sign_up_with_an_enrolled_registration_number_answers_as_any_other(portal_fleet, hecht):
    """The registration number is as telling as the address (issue 22): the same page, no field
    error; its holder is told by e-mail, the typed address gets nothing."""
    region = hecht.region()
    holder, typed = new_email(), new_email()
    hecht.sign_up(region, holder, language="en")
    b = Browser(portal_fleet.urls["portal"])
    r = b.post(f"/regions/{region}/sign-up", _sign_up_form(typed))   # the holder's number (the default)
    assert r.status_code == 302 and r.headers["Location"] == "/sign-up/sent"
    [msg] = wait_until(lambda: mails(holder), timeout=60, message="the holder's someone-tried e-mail")
    assert msg["Subject"].startswith("Someone tried to sign up with") and "using your details" in msg["Subject"]
    assert "your professional registration number" in body_of(msg)
    assert not mails(typed)


def test_membership_capacity_and_profile_edits(portal_fleet, hecht, browser):
    region = hecht.region()
    email = new_email()
    member = hecht.sign_up(region, email)
    hecht.approve(region, member)
    browser.sign_in(email)
    page = browser.get(f"/r/{region}/membership")
    assert "Actief" in page.text and "Nog niet doorgegeven" in page.text
    etag = re.search(r'name="etag" value="([^"]*)"', page.text).group(1)
    r = browser.post(f"/r/{region}/membership/capacity",
                     {"status": "limited", "since": "2026-11-01", "note": "Alleen gezinsleden", "etag": etag.replace("&#34;", '"')},
                     csrf_from=f"/r/{region}/membership")
    assert r.status_code == 302
    cap = hecht.member(region, member)["capacity"]
    assert cap == {"status": "limited", "since": "2026-11-01", "note": "Alleen gezinsleden"}
    page = browser.get(f"/r/{region}/membership")
    assert "Beperkt" in page.text and "1 november 2026" in page.text and "Alleen gezinsleden" in page.text
    # A stale ETag: nothing changes, the person is told to check.
    r = browser.post(f"/r/{region}/membership/capacity", {"status": "closed", "etag": '"1"'},
                     csrf_from=f"/r/{region}/membership")
    assert r.status_code == 302
    assert "intussen gewijzigd" in browser.get(r.headers["Location"]).text
    assert hecht.member(region, member)["capacity"]["status"] == "limited"
    # Profile: a 422 from the API next to the field; then a good change.
    form = {"given_name": "Anna", "family_name": "Peeters", "language": "nl", "category": "locum",
            "practice_name": "Praktijk Noord", "practice_postcode": "12", "practice_municipality": "Gent"}
    r = browser.post(f"/r/{region}/membership/profile", form, csrf_from=f"/r/{region}/membership")
    assert r.status_code == 422 and "vier cijfers" in field_error(r.text, "practice_postcode")
    form["practice_postcode"] = "9050"
    r = browser.post(f"/r/{region}/membership/profile", form, csrf_from=f"/r/{region}/membership")
    assert r.status_code == 302
    m = hecht.member(region, member)
    assert m["given_name"] == "Anna" and m["category"] == "locum" and m["practice"]["postcode"] == "9050"


def test_ballot_shows_turnout_and_own_vote_never_the_counts(portal_fleet, hecht, browser):
    region = hecht.region()
    voters = [new_email(), new_email()]
    ids = [hecht.sign_up(region, voters[0]), hecht.sign_up(region, voters[1], number="10829059003")]
    for m in ids:
        hecht.approve(region, m)
    agreement = hecht.agreement(region)
    hecht.open_vote(region, agreement, electorate=2)
    # The link carries next: following it lands on the ballot.
    r = browser.sign_in(voters[0], f"/r/{region}/votes/{agreement}")
    assert r.headers["Location"] == f"/r/{region}/votes/{agreement}"
    votes = browser.get(f"/r/{region}/votes")
    assert "Transmurale zorg" in votes.text
    page = browser.get(f"/r/{region}/votes/{agreement}")
    assert "U hebt nog niet gestemd" in page.text and "AZ Sint-Lucas" in page.text
    assert browser.post(f"/r/{region}/votes/{agreement}", {"choice": "for"}).status_code == 302
    page = browser.get(f"/r/{region}/votes/{agreement}")
    assert "Uw huidige stem: Voor" in page.text and "Gestemd: 1 lid van de 2 (50%)" in page.text
    assert browser.post(f"/r/{region}/votes/{agreement}", {"choice": "against"}).status_code == 302
    page = browser.get(f"/r/{region}/votes/{agreement}")
    assert "Uw huidige stem: Tegen" in page.text and "Gestemd: 1 lid van de 2" in page.text
    # Nothing on the page tells how many voted for or against.
    main = page.text[page.text.index("<main"):page.text.index("</main>")]
    assert not re.search(r"\b(for|against|abstain)\b\W*\d", main, re.I)
    assert "Voor:" not in main and "Tegen:" not in main
    # A nonsense choice is an error next to the ballot, not a 500.
    r = browser.post(f"/r/{region}/votes/{agreement}", {"choice": "maybe"})
    assert r.status_code == 422
    # The region's agreements: the vote is upcoming.
    page = browser.get(f"/r/{region}/agreements")
    assert page.status_code == 200 and "Transmurale zorg" in page.text
    page = browser.get(f"/r/{region}/agreements/{agreement}")
    assert "Ontslagbrief binnen 24 uur" in page.text and "Van kracht vanaf" in page.text


def test_my_data_leave_and_erase_with_confirmation(portal_fleet, hecht, browser):
    region = hecht.region()
    email = new_email()
    member = hecht.sign_up(region, email)
    hecht.approve(region, member)
    browser.sign_in(email)
    r = browser.get(f"/r/{region}/my-data.json")
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    data = r.json()
    assert data["member_id"] == member and data["members"] and data["notify"] is not None
    assert data["portal"]["email"] == email and len(data["portal"]["sessions"]) >= 1
    assert email in json.dumps(data["members"])
    # Leave.
    assert browser.get(f"/r/{region}/leave").status_code == 200
    assert browser.post(f"/r/{region}/leave", {"reason": "Verhuis"}).status_code == 302
    assert hecht.member(region, member)["status"] == "left"
    # Erase: without ticking the box nothing happens.
    r = browser.post(f"/r/{region}/erase", {})
    assert r.status_code == 422 and field_error(r.text, "confirm")
    assert hecht.member(region, member)["status"] == "left"
    r = browser.post(f"/r/{region}/erase", {"confirm": "y"})
    assert r.status_code == 302
    assert hecht.member(region, member)["status"] == "erased"
    # The last membership is gone: so is the session, and the portal forgets the address.
    assert browser.get(f"/r/{region}/membership", allow_redirects=False).status_code == 302
    import pymongo
    client = pymongo.MongoClient(portal_fleet.env["HECHT_PORTAL_MONGO_URI"], serverSelectionTimeoutMS=5000)
    try:
        assert client.get_default_database().sessions.count_documents({"email": email}) == 0
    finally:
        client.close()


def test_a_gp_in_two_regions_chooses_one(portal_fleet, hecht, browser):
    first, second = hecht.region(), hecht.region()
    email = new_email()
    hecht.approve(first, hecht.sign_up(first, email))
    hecht.sign_up(second, email)
    r = browser.sign_in(email)
    assert r.headers["Location"].startswith("/choose-region")
    page = browser.get(r.headers["Location"])
    assert first in page.text and second in page.text
    r = browser.post("/choose-region", {"region": second, "next": ""})
    assert r.status_code == 302 and r.headers["Location"] == f"/r/{second}/membership"
    page = browser.get(r.headers["Location"])
    assert "Wacht op goedkeuring" in page.text and "Actief" in page.text  # both regions' status
    assert browser.post("/choose-region", {"region": "r-notmine"}).status_code == 404


def test_language_choice_then_accept_language_then_dutch(portal_fleet):
    url = portal_fleet.urls["portal"]
    assert '<html lang="nl">' in Browser(url).get("/").text
    b = Browser(url)
    b.s.headers["Accept-Language"] = "fr-BE,fr;q=0.9,en;q=0.5"
    page = b.get("/")
    assert '<html lang="fr">' in page.text and "Le portail des médecins généralistes" in page.text
    b.s.headers["Accept-Language"] = "de"
    assert '<html lang="nl">' in b.get("/").text  # not offered: Dutch
    # The person's own choice wins over Accept-Language, and survives sign-out.
    b.s.headers["Accept-Language"] = "fr"
    r = b.post("/language", {"lang": "en", "next": "/regions"}, csrf_from="/")
    assert r.status_code == 302 and r.headers["Location"] == "/regions"
    page = b.get("/regions")
    assert '<html lang="en">' in page.text and "These regional GP organisations" in page.text
    b.post("/sign-out", csrf_from="/")
    assert '<html lang="en">' in b.get("/").text


def test_a_signed_out_vote_link_says_what_signing_in_is_for(portal_fleet, hecht, browser):
    """Issue 28 item 7: following a vote e-mail's link while signed out, the sign-in page says
    "Sign in to vote on 'X'" (the agreement's public title, in nl/fr/en); never a draft's title
    or anything of another region; after signing in the person lands on the ballot."""
    import requests

    from tests.conftest import bearer
    region = hecht.region()
    voter = new_email()
    hecht.approve(region, hecht.sign_up(region, voter))
    agreement = hecht.agreement(region, title="Zorgpad <diabetes> & co")
    hecht.open_vote(region, agreement)
    draft = hecht.agreement(region, title="Geheim ontwerp")
    ballot = f"/r/{region}/votes/{agreement}"

    r = browser.get(ballot, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].startswith("/sign-in?next="), r.headers
    page = browser.get(r.headers["Location"])
    assert page.status_code == 200
    assert "<h1>Log in om te stemmen over “Zorgpad &lt;diabetes&gt; &amp; co”</h1>" in page.text, page.text[:3000]
    assert f'name="next" value="{ballot}"' in page.text
    for language, text in (("fr", "Connectez-vous pour voter sur «\u202fZorgpad &lt;diabetes&gt; &amp; co\u202f»"),
                           ("en", "Sign in to vote on “Zorgpad &lt;diabetes&gt; &amp; co”")):
        other = Browser(browser.portal)
        other.s.headers["Accept-Language"] = language
        assert text in other.get(r.headers["Location"]).text

    # Nothing that is not public: a draft, the agreement under another region, an unknown id.
    elsewhere = hecht.region()
    for path in (f"/r/{region}/votes/{draft}", f"/r/{elsewhere}/votes/{agreement}", f"/r/{region}/votes/a_none",
                 f"/r/nowhere/votes/{agreement}", f"/r/{region}/votes/{agreement}/../{draft}"):
        page = browser.get("/sign-in", params={"next": path})
        assert page.status_code == 200 and "<h1>Inloggen</h1>" in page.text, path
        assert "Geheim ontwerp" not in page.text and "Zorgpad" not in page.text, path

    # Signing in from there lands on the ballot (the link carries next).
    r = browser.sign_in(voter, ballot)
    assert r.headers["Location"] == ballot
    assert "Zorgpad &lt;diabetes&gt; &amp; co" in browser.get(ballot).text
    # Once the vote is closed the link still says what it is for.
    closed = requests.post(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}/mandate/close",
                           headers=bearer("region-admin", region), timeout=10)
    assert closed.status_code == 200, closed.text
    assert "Log in om de stemming over “Zorgpad" in Browser(browser.portal).get(
        "/sign-in", params={"next": ballot}).text
