"""The portal's own e-mails (sign-in link, confirm-your-address) over SMTP, in the person's
language. Sent by the portal itself, synchronously: the link must exist only in the mail.

``HECHT_SMTP_URL``: ``smtp://host:port`` (STARTTLS when offered, unless ``?starttls=0``),
``smtps://`` (implicit TLS), ``user:password@`` for AUTH — as notify reads it.
"""
from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

from flask_babel import force_locale, lazy_gettext as _l

log = logging.getLogger(__name__)


class MailError(Exception):
    pass


def send(smtp_url: str, sender: str, to: str, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="hecht.local")
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body)
    parts = urlsplit(smtp_url)
    if parts.scheme not in ("smtp", "smtps"):
        raise MailError(f"HECHT_SMTP_URL must be smtp:// or smtps://, not {parts.scheme!r}")
    starttls = parse_qs(parts.query).get("starttls", ["auto"])[0]
    host, port = parts.hostname or "127.0.0.1", parts.port or (465 if parts.scheme == "smtps" else 25)
    try:
        if parts.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(host, port, timeout=10, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port, timeout=10)
            smtp.ehlo()
            if starttls in ("1", "true", "yes") or (starttls == "auto" and smtp.has_extn("starttls")):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
        try:
            if parts.username:
                smtp.login(unquote(parts.username), unquote(parts.password or ""))
            smtp.send_message(msg)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
    except (smtplib.SMTPException, OSError) as e:
        raise MailError(type(e).__name__) from None


def _message(language: str, subject, *paragraphs) -> tuple[str, str]:
    """Subject and plain-text body in ``language``: lazy strings are rendered inside its
    locale, anything else (the link) as it is; paragraphs are separated by a blank line."""
    with force_locale(language):
        return str(subject), "\n\n".join(str(p) for p in paragraphs) + "\n"


def sign_in_message(language: str, link: str, minutes: int) -> tuple[str, str]:
    return _message(
        language, _l("Your sign-in link for hecht"),
        _l("Hello,"),
        _l("Use the link below to sign in to the hecht portal. It works once, for %(minutes)s minutes.",
           minutes=minutes),
        link,
        _l("Did you not ask for this? Then you can ignore this e-mail: nobody can sign in without the link."))


def confirm_message(language: str, link: str, hours: int, region_name: str) -> tuple[str, str]:
    return _message(
        language, _l("Confirm your e-mail address"),
        _l("Hello,"),
        _l("Thank you for signing up with %(region)s. Please confirm your e-mail address with the link "
           "below; it also signs you in to the hecht portal. The link works once, for %(hours)s hours.",
           region=region_name, hours=hours),
        link,
        _l("The region checks your sign-up and lets you know by e-mail when it has been approved."),
        _l("Did you not sign up? Then you can ignore this e-mail."))


def invite_message(language: str, link: str, hours: int, place: str) -> tuple[str, str]:
    """A staff member invited to a console (``place``: a region's or the platform's name)."""
    return _message(
        language, _l("You have been invited to hecht"),
        _l("Hello,"),
        _l("You have been given access to %(place)s in hecht. Use the link below to sign in; it works "
           "once, for %(hours)s hours. Later you sign in with your e-mail address on the portal.",
           place=place, hours=hours),
        link,
        _l("Did you not expect this? Then you can ignore this e-mail."))
