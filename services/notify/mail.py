"""E-mail: Jinja2 templates per language (text and HTML parts) and an SMTP sender.

Templates live in ``templates/<language>/<template>.txt.j2`` with two blocks, ``subject``
and ``body`` (plain text, paragraphs separated by blank lines); ``templates/_layout.html.j2``
turns the same paragraphs into the HTML part. Messages carry only what the reader needs:
no names (not even the reader's), no other member's data; the agreement's title, dates
and tallies are business facts.
"""
from __future__ import annotations

import re
import smtplib
import ssl
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import formataddr, make_msgid, parseaddr
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from .domain import LANGUAGES, language_of, parse_datetime

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DISPLAY_TZ = ZoneInfo("Europe/Brussels")  # the Netherlands and Belgium share CET/CEST

_MONTHS = {
    "nl": ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september",
           "oktober", "november", "december"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"],
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
}


def format_date(value, language: str) -> str:
    """``12 maart 2026`` / ``12 mars 2026`` / ``12 March 2026``."""
    if isinstance(value, str):
        dt = parse_datetime(value)
        if dt is None:
            try:
                value = date.fromisoformat(value)
            except ValueError:
                return value
        else:
            value = dt
    if isinstance(value, datetime):
        value = value.astimezone(DISPLAY_TZ).date()
    if not isinstance(value, date):
        return "" if value is None else str(value)
    return f"{value.day} {_MONTHS[language_of(language)][value.month - 1]} {value.year}"


def format_datetime(value, language: str) -> str:
    """A deadline in local time: ``12 maart 2026, 17:00`` (Brussels/Amsterdam time)."""
    dt = parse_datetime(value) if not isinstance(value, datetime) else value
    if dt is None:
        return "" if value is None else str(value)
    local = dt.astimezone(DISPLAY_TZ)
    at = {"nl": "om", "fr": "à", "en": "at"}[language_of(language)]
    return f"{format_date(local, language)} {at} {local:%H:%M}"


def plural(n, language: str, one: str, other: str) -> str:
    """``{{ votes_abstain|plural(lang, "abstention", "abstentions") }}``: the count and the noun
    in the form the language asks for (French uses the singular for 0 and 1 as well)."""
    try:
        n = int(n or 0)
    except (TypeError, ValueError):
        n = 0
    singular = n in (0, 1) if language_of(language) == "fr" else n == 1
    return f"{n} {one if singular else other}"


def percent(value) -> str:
    try:
        return f"{round(float(value) * 100)}%"
    except (TypeError, ValueError):
        return ""


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), undefined=StrictUndefined,
                      autoescape=select_autoescape(enabled_extensions=("html", "html.j2"),
                                                   default_for_string=False, default=False),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["date"] = format_date
    env.filters["datetime"] = format_datetime
    env.filters["percent"] = percent
    env.filters["plural"] = plural
    return env


def render(template: str, language: str, context: dict) -> tuple[str, str, str]:
    """(subject, text, html) of ``template`` in ``language`` (unknown languages fall back to English).

    A template writes the message once, as plain text (blocks ``subject`` and ``body``); the
    HTML part is the same paragraphs in ``_layout.html.j2``, which escapes everything, so a
    title such as "Zorg & <Welzijn>" can never inject markup.
    """
    language = language_of(language)
    env = _env()
    tpl = env.get_template(f"{language}/{template}.txt.j2")
    ctx = tpl.new_context(dict(context, lang=language))
    # every run of whitespace (line breaks included) becomes one space, except French's no-break
    # spaces (before ":" and inside « »), which stay
    subject = re.sub(r"[^\S\u00a0\u202f]+", " ", "".join(tpl.blocks["subject"](ctx))).strip(" ")
    body = "".join(tpl.blocks["body"](tpl.new_context(dict(context, lang=language)))).strip()
    paragraphs = [" ".join(p.split("\n")).strip() for p in body.split("\n\n") if p.strip()]
    link = context.get("link")
    colon = "\u202f:" if language == "fr" else ":"   # French: a narrow no-break space before the colon
    text = (body + (f"\n\n{_LINK_LABEL[language]}{colon} {link}" if link else "") + "\n\n-- \n" + _FOOTER[language]
            + "\n")
    html = env.get_template("_layout.html.j2").render(lang=language, subject=subject, paragraphs=paragraphs,
                                                      link=link, link_label=_LINK_LABEL[language],
                                                      footer=_FOOTER[language])
    return subject, text, html


_FOOTER = {
    "nl": "Dit bericht is automatisch verstuurd door uw regionale huisartsenorganisatie.",
    "fr": "Ce message a été envoyé automatiquement par votre organisation régionale de médecins généralistes.",
    "en": "This message was sent automatically by your regional GP organisation.",
}
_LINK_LABEL = {"nl": "Bekijken", "fr": "Consulter", "en": "View"}


def available() -> dict[str, list[str]]:
    """Templates per language present on disk (the tests check every template in every language)."""
    return {lang: sorted(p.name[:-len(".txt.j2")] for p in (TEMPLATES_DIR / lang).glob("*.txt.j2"))
            for lang in LANGUAGES}


def build_message(sender: str, to: str, subject: str, text: str, html: str, *, language: str,
                  notification_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(idstring=notification_id, domain=parseaddr(sender)[1].split("@")[-1] or None)
    msg["X-Hecht-Notification"] = notification_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    msg["Content-Language"] = language  # after the parts: set_content clears Content-* headers
    return msg


class PermanentMailError(Exception):
    """The server refused the message for good (5xx): retrying will not help."""


class SmtpSender:
    """One SMTP session per batch: ``smtp://host:port`` (STARTTLS when the server offers it
    and ``?starttls=0`` is not given), ``smtps://`` (implicit TLS), ``user:password@`` for AUTH."""

    def __init__(self, url: str, sender: str, timeout: float = 15.0):
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"HECHT_SMTP_URL must be smtp:// or smtps://, not {parts.scheme!r}")
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        self.starttls = query.get("starttls", ["auto"])[0]
        self.sender = sender
        self.timeout = timeout
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> "SmtpSender":
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            smtp.ehlo()
            if self.starttls in ("1", "true", "yes") or (self.starttls == "auto" and smtp.has_extn("starttls")):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
        if self.user:
            smtp.login(self.user, self.password or "")
        self._smtp = smtp
        return self

    def __exit__(self, *exc) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def send(self, msg: EmailMessage) -> None:
        assert self._smtp is not None, "use SmtpSender as a context manager"
        try:
            refused = self._smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as e:
            code = next(iter(e.recipients.values()))[0]
            if 500 <= code < 600:
                raise PermanentMailError(f"recipient refused ({code})") from None
            raise
        except smtplib.SMTPDataError as e:
            if 500 <= e.smtp_code < 600:
                raise PermanentMailError(f"message refused ({e.smtp_code})") from None
            raise
        if refused:
            raise PermanentMailError("recipient refused")


def sender_address(raw: str) -> str:
    name, addr = parseaddr(raw)
    return formataddr((name, addr)) if addr else raw
