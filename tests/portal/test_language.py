"""The portal's words, as a person reads them (issue 28): INAMI for a French-speaking GP in
Belgium and only the schemes of the region's country (item 2); after a vote closed, "your
vote" and the result first (item 8); French typography and plurals on the pages (item 1);
"u" in Dutch (item 3)."""
from __future__ import annotations

import html
import re

import requests

from tests.conftest import bearer

from .conftest import Browser, new_email

NNBSP = "\u202f"


def visible(page: str) -> str:
    """The text of the page's main content as a person sees it (no tags, no attributes)."""
    main = page[page.index("<main"):page.index("</main>")]
    main = re.sub(r"<(script|style)\b.*?</\1>", " ", main, flags=re.S)
    # ASCII whitespace only: French keeps its no-break spaces
    return re.sub(r"[ \t\r\n]+", " ", html.unescape(re.sub(r"<[^>]+>", " ", main)))


def speaking(portal: str, lang: str, browser: Browser | None = None) -> Browser:
    b = browser or Browser(portal)
    r = b.post("/language", {"lang": lang, "next": "/"}, csrf_from="/")
    assert r.status_code == 302, r.text
    return b


def test_a_french_speaking_gp_in_belgium_sees_inami_and_only_belgian_schemes(portal_fleet, hecht):
    portal = portal_fleet.urls["portal"]
    region = hecht.region(country="BE")

    # The sign-up form: the scheme is labelled INAMI in French (the stored code stays RIZIV), and
    # the hint names the Belgian number only, not the Dutch BIG/AGB.
    fr = speaking(portal, "fr")
    page = fr.get(f"/regions/{region}/sign-up")
    assert page.status_code == 200 and '<html lang="fr">' in page.text
    assert re.search(r'<option[^>]*value="RIZIV"[^>]*>INAMI</option>', page.text), page.text
    text = visible(page.text)
    assert "Votre numéro INAMI" in text, text
    assert "RIZIV" not in text and "BIG" not in text and "AGB" not in text, text
    # In Dutch, RIZIV (and still no BIG/AGB in a Belgian region).
    text = visible(speaking(portal, "nl").get(f"/regions/{region}/sign-up").text)
    assert "Uw RIZIV-nummer" in text and "INAMI" not in text and "BIG" not in text, text
    # A Dutch region's form names BIG and AGB, not the Belgian scheme.
    nl_region = hecht.region(country="NL", municipalities=("Utrecht", "Zeist"))
    text = visible(speaking(portal, "fr").get(f"/regions/{nl_region}/sign-up").text)
    assert "numéro BIG ou code AGB" in text and "INAMI" not in text and "RIZIV" not in text, text

    # The membership page of a French-speaking GP: INAMI in the registration, the scheme list and
    # the hint; nothing about the Dutch schemes.
    email = new_email()
    hecht.approve(region, hecht.sign_up(region, email, language="fr"))
    fr.sign_in(email)
    page = fr.get(f"/r/{region}/membership")
    assert page.status_code == 200 and '<html lang="fr">' in page.text
    text = visible(page.text)
    assert re.search(r"INAMI\s+10185748004", text), text
    assert re.search(r'<option value="RIZIV" selected>INAMI</option>', page.text), page.text
    assert "code de compétence INAMI" in text, text
    assert "RIZIV" not in text and "BIG" not in text and "AGB" not in text, text
    # The same page in Dutch: RIZIV, addressed with "u".
    text = visible(speaking(portal, "nl", fr).get(f"/r/{region}/membership").text)
    assert re.search(r"RIZIV\s+10185748004", text) and "RIZIV-bekwaamheidscode" in text, text
    assert "INAMI" not in text and "BIG" not in text, text
    assert "Uw registratie verbeteren" in text and not re.search(r"\b(je|jij|jou|jouw|jullie)\b", text, re.I), text


def _close(hecht, region: str, agreement: str) -> None:
    r = requests.post(f"{hecht.urls['agreements']}/v1/regions/{region}/agreements/{agreement}/mandate/close",
                      headers=bearer("region-admin", region), timeout=10)
    assert r.status_code == 200, r.text


def test_a_closed_ballot_says_your_vote_and_shows_the_result_first(portal_fleet, hecht, browser):
    region = hecht.region()
    voter, colleague = new_email(), new_email()
    for email, number in ((voter, "10185748004"), (colleague, "10829059003")):
        hecht.approve(region, hecht.sign_up(region, email, number=number))
    agreement = hecht.agreement(region)
    hecht.open_vote(region, agreement, electorate=2)
    ballot = f"/r/{region}/votes/{agreement}"
    browser.sign_in(voter, ballot)
    assert browser.post(ballot, {"choice": "for"}).status_code == 302

    # Open: the ballot first, then the turnout; "your current vote"; counts in the right form.
    page = browser.get(ballot).text
    assert page.index('id="ballot"') < page.index('id="outcome"')
    text = visible(page)
    assert "Uw huidige stem: Voor." in text and "Gestemd: 1 lid van de 2 (50%)" in text, text
    text = visible(speaking(browser.portal, "fr", browser).get(ballot).text)
    assert f"Vote sur le mandat{NNBSP}: Ouvert" in text, text             # was "Vote sur le mandat: Ouvert"
    assert f"Votre vote actuel{NNBSP}: Pour." in text, text
    assert f"Votants{NNBSP}: 1 membre sur 2 (50%)" in text, text           # was "Ont voté : 1 membres sur 3"

    _close(hecht, region, agreement)
    for lang, yours, current, result in (
            ("fr", f"Votre vote{NNBSP}: Pour.", "Votre vote actuel", "Résultat"),
            ("nl", "Uw stem: Voor.", "Uw huidige stem", "Uitslag"),
            ("en", "Your vote: For.", "Your current vote", "Result")):
        page = speaking(browser.portal, lang, browser).get(ballot).text
        text = visible(page)
        assert yours in text and current not in text, (lang, text)
        # the result first: its section (heading, the counts table) before the person's own vote
        assert page.index('id="outcome"') < page.index('id="ballot"'), lang
        outcome = page[page.index('id="outcome"'):page.index('id="ballot"')]
        assert f">{result}</h2>" in outcome and 'class="result"' in outcome, (lang, outcome)
