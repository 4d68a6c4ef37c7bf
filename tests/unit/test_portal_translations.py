"""The portal's catalogues (nl, fr, en) are complete: every message the code and templates use
has a translation in each language, none fuzzy, with the same placeholders. No I/O beyond
reading the catalogues and the portal's own source files."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

PORTAL = Path(__file__).resolve().parents[2] / "services" / "portal"
LANGUAGES = ("nl", "fr", "en")
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def catalog(lang: str):
    with open(PORTAL / "translations" / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=lang)


def used_messages() -> set[str]:
    """What the code and templates ask for (the same extraction as babel.cfg)."""
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None,
                "lazy_ngettext": (1, 2), "_nl": (1, 2)}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(PORTAL), method_map=method_map, keywords=keywords, options_map={"templates/**.html": {}}):
        found.add(message if isinstance(message, str) else message[0])
    return {m for m in found if m}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_message_is_translated(lang):
    cat = catalog(lang)
    assert not cat.fuzzy, f"{lang}: the catalogue header is marked fuzzy"
    messages = {(m.id if isinstance(m.id, str) else m.id[0]): m for m in cat if m.id}
    missing = sorted(used_messages() - set(messages))
    assert not missing, f"{lang}: messages without an entry (run pybabel extract/update): {missing[:5]}"
    for msgid, m in messages.items():
        # a plural message (ngettext): one form per plural category of the language, each
        # with the placeholders of the English plural (the count %(num)s included)
        forms = list(m.string) if m.pluralizable else [m.string]
        wanted = set(PLACEHOLDER.findall(m.id[1] if m.pluralizable else msgid))
        if m.pluralizable:
            assert len(forms) == cat.num_plurals, f"{lang}: {len(forms)} plural forms for {msgid!r}"
        assert not m.fuzzy, f"{lang}: fuzzy translation for {msgid!r}"
        for form in forms:
            assert form and form.strip(), f"{lang}: no translation for {msgid!r}"
            assert set(PLACEHOLDER.findall(form)) == wanted, f"{lang}: placeholders differ in {msgid!r} → {form!r}"


def test_dutch_and_french_are_not_english():
    nl, fr = ({m.id: m.string for m in catalog(lang) if m.id} for lang in ("nl", "fr"))
    same_nl = [k for k, v in nl.items() if v == k and len(k) > 12]
    same_fr = [k for k, v in fr.items() if v == k and len(k) > 12]
    assert not same_nl and not same_fr, (same_nl[:3], same_fr[:3])
