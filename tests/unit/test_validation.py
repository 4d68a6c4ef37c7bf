"""hecht/validation.py: the shared validators of names, URLs and PATCH bodies (issue 22, item 11)."""
from __future__ import annotations

import pytest
from marshmallow import Schema, ValidationError, fields

from hecht.validation import PLAIN, ChangesSchema, HttpsUrl, control_characters, one_line


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\x0bb", "a\tb", "\x00", "a\x7f", "a\x85b", "a\x9fb",
                                  "a\u2028b", "a\u2029b", "Gent\n"])
def test_control_characters_and_line_breaks_are_refused(text):
    with pytest.raises(ValidationError, match="control characters"):
        PLAIN(text)
    assert control_characters(text)


@pytest.mark.parametrize("text", ["Gent", "Sint-Martens-Latem", "Zoë D'Hondt", "Liège", "東京", "A & B (vzw)",
                                  "non\u00a0breaking", "Ærø 👍"])
def test_ordinary_names_pass(text):
    assert PLAIN(text) == text and control_characters(text) == []


def test_one_line_checks_the_length_too():
    class S(Schema):
        name = fields.String(validate=one_line(1, 5))
    assert S().load({"name": "Gent"}) == {"name": "Gent"}
    for bad in ("", "Merelbeke", "G\nt"):
        with pytest.raises(ValidationError):
            S().load({"name": bad})


@pytest.mark.parametrize("url", ["https://example.org/", "https://example.org/a/b.pdf?x=1#p",
                                 "https://sub.example.org:8443/x", "HTTPS://EXAMPLE.ORG/"])
def test_https_urls_pass(url):
    assert HttpsUrl()(url) == url


@pytest.mark.parametrize("url, why", [
    ("https://javascript:alert(1)@example.org/", "userinfo"),
    ("https://user@example.org/", "userinfo"),
    ("https://:pw@example.org/", "userinfo"),
    ("https://example.org@evil.example/", "userinfo"),
    ("http://example.org/", "https"),
    ("javascript:alert(1)", "https"),
    ("ftp://example.org/", "https"),
    ("https:///path", "host"),
    ("https://exa mple.org/", "spaces"),
    ("https://example.org/\r\nx", "control"),
    ("https://example.org:port/", "valid"),
])
def test_urls_with_userinfo_other_schemes_or_odd_characters_are_refused(url, why):
    with pytest.raises(ValidationError) as e:
        HttpsUrl()(url)
    assert why in str(e.value)


def test_a_patch_body_must_change_something():
    class Patch(ChangesSchema):
        NOT_CHANGES = ("confirm",)
        name = fields.String()
        policy = fields.Dict()
        confirm = fields.Boolean(load_default=False)
    for body in ({}, {"confirm": True}, {"policy": {}}):
        with pytest.raises(ValidationError) as e:
            Patch().load(body)
        assert e.value.messages == {"_schema": ["send at least one field to change"]}
    assert Patch().load({"name": "x"}) == {"name": "x", "confirm": False}
