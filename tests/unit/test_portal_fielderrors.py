"""The portal's pure helpers: the services' English field errors shown translated next to
the right form field, and the open-redirect guard on ``next``. No I/O."""
from __future__ import annotations

import os

import pytest
from flask import Flask
from flask_babel import Babel, force_locale

from services.portal import fielderrors
from services.portal.views import safe_next

TRANSLATIONS = os.path.join(os.path.dirname(fielderrors.__file__), "translations")


@pytest.fixture
def app():
    app = Flask("t")
    app.config.update(BABEL_DEFAULT_LOCALE="nl", BABEL_TRANSLATION_DIRECTORIES=TRANSLATIONS)
    Babel(app)
    with app.test_request_context():
        yield app


API_422 = {"registration": {"number": ["the check digits (7th and 8th) do not match the first six digits; "
                                       "please check the number for a typing error"]},
           "practice": {"postcode": ["a Belgian postcode has four digits, 1000–9999"],
                        "municipality": ["not one of the municipalities of region elz: Gent, Merelbeke"]},
           "email": ["The email address is not valid. It must have exactly one @-sign."],
           "given_name": ["Missing data for required field."]}


@pytest.mark.parametrize("lang, expected", [
    ("nl", {"registration_number": "controlecijfers", "practice_postcode": "vier cijfers",
            "practice_municipality": "Gent, Merelbeke", "email": "geen geldig e-mailadres",
            "given_name": "verplicht"}),
    ("fr", {"registration_number": "chiffres de contrôle", "practice_postcode": "quatre chiffres",
            "practice_municipality": "communes de la région", "email": "pas valable",
            "given_name": "obligatoire"}),
    ("en", {"registration_number": "check digits", "practice_postcode": "four digits",
            "practice_municipality": "municipalities", "email": "not a valid e-mail", "given_name": "required"}),
])
def test_api_field_errors_land_on_form_fields_translated(app, lang, expected):
    with force_locale(lang):
        shown = fielderrors.flatten(API_422)
    assert set(shown) == set(expected)
    for field, text in expected.items():
        assert text in shown[field][0], (field, shown[field])


@pytest.mark.parametrize("message, text", [
    ("a RIZIV/INAMI number has exactly 11 digits (P NNNNN CC QQQ)", "11 cijfers"),
    ("this RIZIV/INAMI number is not a physician's (profession digit 4, physicians have 1)", "begint met 4"),
    ("competence code 580 is a specialist's; only general-medicine codes (001–008) can enrol as a GP", "580"),
    ("competence code 000 means 'holder of the medical diploma', not a GP; sign up with your number", "000"),
    ("a BIG number has exactly 11 digits", "BIG-nummer"),
    ("AGB codes of GPs start with 01 (care-provider type); this one is type 03", "03"),
    ("an AGB code has exactly 8 digits", "AGB-code"),
    ("BIG numbers are not used in BE regions; use RIZIV", "gebruik RIZIV"),
    ("a Dutch postcode looks like 1234 AB", "1234 AB"),
    ("Length must be between 1 and 200.", "tussen 1 en 200"),
    ("something new the portal does not know", "something new the portal does not know"),
])
def test_known_messages_are_translated_and_unknown_ones_kept(app, message, text):
    with force_locale("nl"):
        assert text in fielderrors.translate("number", message)


@pytest.mark.parametrize("raw, expected", [
    ("/r/elz/votes/a_1", "/r/elz/votes/a_1"), ("/", "/"), ("", "/"), (None, "/"),
    ("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("/ok\r\nSet-Cookie: x=1", "/"), ("/" + "a" * 600, "/"),
])
def test_next_stays_on_this_site(raw, expected):
    assert safe_next(raw) == expected
