"""The language of the portal and the e-mails (issue 28 items 1 and 3), without I/O beyond
reading the catalogues, the templates and the portal's source:

- every message that carries a count is a plural message (ngettext) and reads right for 0, 1
  and 2 in nl, fr and en (French uses the singular for 0 and 1); notify's e-mails too;
- French puts a narrow no-break space (U+202F) before ``:``, ``;``, ``?`` and ``!`` and
  no-break spaces inside « », in the catalogue, in notify's French e-mails and where a
  template joins a message and a value (``punct()``);
- Dutch addresses people with "u": no "je", "jij", "jou", "jouw" or "jullie" in the Dutch
  catalogue or notify's Dutch e-mails.
"""
from __future__ import annotations

import io
import re
from functools import lru_cache
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from tests.unit.test_portal_translations import PORTAL, catalog, used_messages

REPO = Path(__file__).resolve().parents[2]
NOTIFY_TEMPLATES = REPO / "services" / "notify" / "templates"
LANGUAGES = ("nl", "fr", "en")
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
NNBSP, NBSP = "\u202f", "\u00a0"


@lru_cache
def translations(lang: str) -> Translations:
    """The catalogue as the portal uses it (compiled in memory, whatever the .mo says)."""
    buf = io.BytesIO()
    with open(PORTAL / "translations" / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        write_mo(buf, read_po(f, locale=lang))
    buf.seek(0)
    return Translations(buf)


def render(lang: str, singular: str, plural: str, n: int) -> str:
    text = translations(lang).ungettext(singular, plural, n)
    values = {name: "X" for name in PLACEHOLDER.findall(plural)}
    values["num"] = n
    return text % values


# -- 1. plurals ------------------------------------------------------------------------------------
# Every plural message the portal uses, by a part of its English singular, with what it must say
# for 0, 1 and 2 in each language ({n} is the count).
SAYS = {
    "%(num)s day": {"en": ("{n} days", "{n} day", "{n} days"), "nl": ("{n} dagen", "{n} dag", "{n} dagen"),
                    "fr": ("{n} jour", "{n} jour", "{n} jours")},
    "%(num)s hour": {"en": ("{n} hours", "{n} hour", "{n} hours"), "nl": ("{n} uur",) * 3,
                     "fr": ("{n} heure", "{n} heure", "{n} heures")},
    "%(num)s minute": {"en": ("{n} minutes", "{n} minute", "{n} minutes"),
                       "nl": ("{n} minuten", "{n} minuut", "{n} minuten"),
                       "fr": ("{n} minute", "{n} minute", "{n} minutes")},
    "%(num)s event": {"en": ("{n} events", "{n} event", "{n} events"),
                      "nl": ("{n} gebeurtenissen", "{n} gebeurtenis", "{n} gebeurtenissen"),
                      "fr": ("{n} événement", "{n} événement", "{n} événements")},
    "%(num)s new delivery": {"en": ("{n} new deliveries", "{n} new delivery", "{n} new deliveries"),
                             "nl": ("{n} nieuwe afleveringen", "{n} nieuwe aflevering", "{n} nieuwe afleveringen"),
                             "fr": ("{n} nouvelle livraison", "{n} nouvelle livraison", "{n} nouvelles livraisons")},
    "%(num)s sent again": {"en": ("{n} sent again",) * 3, "nl": ("{n} opnieuw verstuurd",) * 3,
                           "fr": ("{n} renvoyée", "{n} renvoyée", "{n} renvoyées")},
    "%(num)s open": {"en": ("{n} open",) * 3, "nl": ("{n} open",) * 3,
                     "fr": ("{n} ouvert", "{n} ouvert", "{n} ouverts")},
    "%(num)s limited": {"en": ("{n} limited",) * 3, "nl": ("{n} beperkt",) * 3,
                        "fr": ("{n} limité", "{n} limité", "{n} limités")},
    "%(num)s closed": {"en": ("{n} closed",) * 3, "nl": ("{n} gesloten",) * 3,
                       "fr": ("{n} fermé", "{n} fermé", "{n} fermés")},
    "%(num)s failure in a row": {"en": ("{n} failures", "{n} failure", "{n} failures"),
                                 "nl": ("{n} keer na elkaar mislukt",) * 3,
                                 "fr": ("{n} échec consécutif", "{n} échec consécutif",
                                        "{n} échecs consécutifs")},
    "character.": {"en": ("{n} characters", "{n} character", "{n} characters"),
                   "nl": ("{n} tekens", "{n} teken", "{n} tekens"),
                   "fr": ("{n} caractère", "{n} caractère", "{n} caractères")},
    "At most %(num)s seat.": {"en": ("{n} seats", "{n} seat", "{n} seats"),
                              "nl": ("{n} zetels", "{n} zetel", "{n} zetels"),
                              "fr": ("{n} siège", "{n} siège", "{n} sièges")},
    "minute.": {"en": ("{n} minutes", "{n} minute", "{n} minutes"), "nl": ("{n} minuten", "{n} minuut", "{n} minuten"),
                "fr": ("{n} minute", "{n} minute", "{n} minutes")},
    "hour.": {"en": ("{n} hours", "{n} hour", "{n} hours"), "nl": ("{n} uur",) * 3,
              "fr": ("{n} heure", "{n} heure", "{n} heures")},
    "Voted: %(num)s member": {"en": ("{n} members", "{n} member", "{n} members"),
                              "nl": ("{n} leden", "{n} lid", "{n} leden"),
                              "fr": ("{n} membre", "{n} membre", "{n} membres")},
    # the count is the colleagues who gave their proxy (the sentence names them)
    "You vote for %(n)s": {"en": ("their proxies", "their proxy.", "their proxies"),
                           "nl": ("volmacht gaven", "volmacht gaf", "volmacht gaven"),
                           "fr": ("qui vous a donné sa procuration", "qui vous a donné sa procuration",
                                  "qui vous ont donné leur procuration")},
    "You voted for %(n)s": {"en": ("their proxies", "their proxy.", "their proxies"),
                            "nl": ("volmacht gaven", "volmacht gaf", "volmacht gaven"),
                            "fr": ("qui vous avait donné sa procuration", "qui vous avait donné sa procuration",
                                   "qui vous avaient donné leur procuration")},
}


def plural_messages() -> dict[str, str]:
    """{singular: plural} of every ngettext message in the portal's code and templates."""
    from babel.messages.extract import extract_from_dir
    keywords = {"ngettext": (1, 2), "lazy_ngettext": (1, 2), "_nl": (1, 2)}
    found = {}
    for _f, _l, message, _c, _ctx in extract_from_dir(
            str(PORTAL), method_map=[("**.py", "python"), ("templates/**.html", "jinja2")], keywords=keywords,
            options_map={"templates/**.html": {}}):
        if isinstance(message, tuple) and message[0] and message[1]:
            found[message[0]] = message[1]
    return found


def expectations(singular: str) -> dict:
    keys = [k for k in SAYS if k in singular]
    assert keys, f"a plural message without expectations here (add it to SAYS): {singular!r}"
    return SAYS[max(keys, key=len)]


def test_the_count_bearing_messages_are_all_plural_messages():
    plurals = plural_messages()
    assert len(plurals) >= 20, sorted(plurals)
    for key in SAYS:
        assert any(key in s for s in plurals), f"SAYS names a message the portal no longer has: {key!r}"
    # A message with a count in a singular gettext would read "1 membres": the only counts left in
    # singular messages are the ones no language inflects a word for.
    counts = {"n", "num", "count", "cast", "electorate", "days", "hours", "minutes", "matched", "created",
              "reopened", "open", "limited", "closed", "max", "min", "seats", "total"}
    no_noun = {"Enter a number from %(min)s to %(max)s.", "Enter a number above %(min)s and at most %(max)s.",
               "version %(n)s", "Partner %(n)s", "Commitment %(n)s", "Document %(n)s", "Member of seat %(n)s",
               "Cluster of seat %(n)s", "Remove seat %(n)s", "%(n)s per second", "0 to %(n)s; 0 means no proxy votes.",
               "This vote allows proxies: a colleague in the electorate may vote for you (one carries at most "
               "%(n)s). You can revoke your proxy until your colleague has voted; voting yourself also withdraws it.",
               "Votes cast: %(cast)s of %(electorate)s (%(turnout)s). Quorum: %(quorum)s; approval threshold: "
               "%(threshold)s.",
               # each value is a plural message itself ("%(num)s open")
               "On %(day)s: %(open)s, %(limited)s, %(closed)s. The table below has every day."}
    singular = {m for m in used_messages() if m not in plurals and set(PLACEHOLDER.findall(m)) & counts}
    assert not singular - no_noun, f"counts outside ngettext: {sorted(singular - no_noun)}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_count_bearing_message_reads_right_for_0_1_and_2(lang):
    for singular, plural in sorted(plural_messages().items()):
        says = expectations(singular)[lang]
        for n in (0, 1, 2):
            text = render(lang, singular, plural, n)
            wanted = says[n].format(n=n)
            assert re.search(re.escape(wanted) + r"(?!\w)", text), f"{lang}, {n}: {text!r} should say {wanted!r}"
            if "%(num)s" in plural:
                assert re.search(rf"(?<!\d){n}(?!\d)", text), f"{lang}: the count is missing in {text!r}"


def test_french_uses_the_singular_for_0_and_1():
    s, p = "Voted: %(num)s member out of %(electorate)s (%(turnout)s). Quorum: %(quorum)s.", \
        "Voted: %(num)s members out of %(electorate)s (%(turnout)s). Quorum: %(quorum)s."
    assert "0 membre sur" in render("fr", s, p, 0) and "1 membre sur" in render("fr", s, p, 1)
    assert "2 membres sur" in render("fr", s, p, 2) and "1 membres" not in render("fr", s, p, 1)
    assert "1 lid van" in render("nl", s, p, 1) and "0 leden van" in render("nl", s, p, 0)
    assert "1 member out of" in render("en", s, p, 1) and "0 members out of" in render("en", s, p, 0)


@pytest.mark.parametrize("lang, one, many", [("nl", "onthouding", "onthoudingen"), ("fr", "abstention", "abstentions"),
                                             ("en", "abstention", "abstentions")])
def test_notify_outcome_emails_count_abstentions_in_the_right_form(lang, one, many):
    from services.notify import mail
    for template in ("mandate_passed", "mandate_rejected"):
        for n, word in ((0, one if lang == "fr" else many), (1, one), (2, many)):
            _subject, text, html = mail.render(template, lang, {
                "title": "T", "region_name": "R", "votes_for": 1, "votes_against": 1, "votes_abstain": n,
                "turnout": 0.5, "quorum_met": True, "threshold_met": False, "link": None})
            said = re.compile(rf"\b{n} {word}\b")
            assert said.search(text) and said.search(html), (template, lang, n, text)


# -- 1. French typography --------------------------------------------------------------------------
def french_problems(text: str) -> list[str]:
    """Where ``text`` has ``:``, ``;``, ``?`` or ``!`` without the narrow no-break space before
    it, or « » without no-break spaces inside; web addresses, placeholders (%(name)s), HTML and
    Jinja code do not count."""
    t = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "\x00", text, flags=re.S)
    t = re.sub(r"https?://\S+|%\(\w+\)s|<[^>]*>|&\w+;", "\x00", t)
    bad = [t[max(0, m.start() - 15):m.end() + 5] for m in re.finditer(rf"(?<!{NNBSP})[:;?!]", t)]
    bad += [t[max(0, m.start() - 5):m.end() + 10] for m in re.finditer(rf"«(?![{NBSP}{NNBSP}])", t)]
    bad += [t[max(0, m.start() - 10):m.end() + 5] for m in re.finditer(rf"(?<![{NBSP}{NNBSP}])»", t)]
    return bad


def test_the_typography_check_itself():
    assert french_problems("Vote sur le mandat: Ouvert") and french_problems("Quorum : 50%")
    assert french_problems("Vous ?") and french_problems("« titre »")
    assert not french_problems(f"Quorum{NNBSP}: 50%{NNBSP}; «{NBSP}titre{NBSP}»{NNBSP}!")
    assert not french_problems("https://example.org/a?b=c %(name)s <a href=\"x:y\">lien</a> {{ x|d('a:b') }}")


def test_the_french_catalogue_puts_a_narrow_no_break_space_before_high_punctuation():
    problems = []
    for m in catalog("fr"):
        if m.id:
            for form in (m.string if m.pluralizable else [m.string]):
                problems += [f"{form!r}: …{p}…" for p in french_problems(form)]
    assert not problems, "\n".join(problems)


def test_notify_french_emails_put_a_narrow_no_break_space_before_high_punctuation():
    from services.notify import mail
    problems = []
    for path in sorted((NOTIFY_TEMPLATES / "fr").glob("*.j2")):
        problems += [f"{path.name}: …{p}…" for p in french_problems(path.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)
    # the text part's link line is joined in code
    _s, text, _h = mail.render("vote_opened", "fr", {"title": "T", "region_name": "R", "partners": [],
                                                      "deadline": "2026-03-12T16:00:00Z", "quorum": 0.5,
                                                      "approval_threshold": 0.5, "link": "https://p.example/x"})
    assert f"Consulter{NNBSP}: https://p.example/x" in text
    subject, _t, _h = mail.render("mandate_passed", "fr", {"title": "T", "region_name": "R", "votes_for": 1,
                                                            "votes_against": 0, "votes_abstain": 0, "turnout": 1,
                                                            "link": None})
    assert subject == f"Mandat accordé{NNBSP}: «{NBSP}T{NBSP}»"   # the subject keeps its no-break spaces


def test_templates_join_a_message_and_its_value_with_punct():
    """A colon typed into a template after a message ("{{ _("Mandate vote") }}: Open") is
    wrong in French; templates use ``{{ punct(":") }}``, which adds the narrow no-break space."""
    problems = []
    for path in sorted((PORTAL / "templates").rglob("*.html")):
        t = re.sub(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", " ", path.read_text(encoding="utf-8"), flags=re.S)
        t = re.sub(r"<(script|style|pre|code)\b.*?</\1>", " ", t, flags=re.S)
        t = re.sub(r"<[^>]*>|&#?\w+;", " ", t, flags=re.S)
        problems += [f"{path.relative_to(PORTAL)}: {t[max(0, m.start() - 20):m.end() + 10]!r}"
                     for m in re.finditer(r"[:;?!]", t)]
    assert not problems, "\n".join(problems)


def test_punct_adds_the_narrow_no_break_space_in_french_only():
    from flask import Flask
    from flask_babel import Babel, force_locale

    from services.portal.i18n import punct
    app = Flask(__name__)
    Babel(app)
    with app.test_request_context():
        for lang, colon in (("fr", f"{NNBSP}:"), ("nl", ":"), ("en", ":")):
            with force_locale(lang):
                assert punct(":") == colon and punct(";") == colon.replace(":", ";")


# -- 3. one voice in Dutch: "u" ---------------------------------------------------------------------
INFORMAL = re.compile(r"\b(je|jij|jou|jouw|jouwe|jullie|jezelf)\b", re.I)


def test_the_informal_check_itself():
    assert INFORMAL.search("Je stem is geregistreerd") and INFORMAL.search("Kies een collega, niet jezelf.")
    assert INFORMAL.search("zoals jullie statuten") and INFORMAL.search("Heb je dit gevraagd?")
    assert not INFORMAL.search("Uw stem is geregistreerd; bijvoorbeeld een jeugdarts, Jeroen")


def test_the_dutch_catalogue_says_u():
    informal = []
    for m in catalog("nl"):
        if m.id:
            informal += [form for form in (m.string if m.pluralizable else [m.string]) if INFORMAL.search(form)]
    assert not informal, "\n".join(informal)


def test_notify_dutch_emails_say_u():
    informal = [f"{p.name}: {line.strip()}" for p in sorted((NOTIFY_TEMPLATES / "nl").glob("*.j2"))
                for line in p.read_text(encoding="utf-8").splitlines() if INFORMAL.search(line)]
    assert not informal, "\n".join(informal)
    from services.notify import mail
    assert not INFORMAL.search(mail._FOOTER["nl"] + mail._LINK_LABEL["nl"])
