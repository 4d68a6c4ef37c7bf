"""The portal's own e-mails (sign-in link, confirm-your-address) over SMTP, in the person's
language. Sent by the portal itself (the link must exist only in the mail). The sign-in and
sign-up pages hand theirs to SMTP on a thread of their own after answering, so the answer takes
as long whether or not a mail goes out; the consoles' invitations are sent before answering.

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

from flask_babel import force_locale, lazy_gettext as _l, lazy_ngettext as _nl

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
        _nl("Use the link below to sign in to the hecht portal. It works once, for %(num)s minute.",
            "Use the link below to sign in to the hecht portal. It works once, for %(num)s minutes.", minutes),
        link,
        _l("Did you not ask for this? Then you can ignore this e-mail: nobody can sign in without the link."))


def sign_in_limited_message(language: str, minutes: int) -> tuple[str, str]:
    """Sent once when an address has asked for more sign-in links than the limit allows: anyone
    can ask for links for anyone's address, so the page never says so; this mail does."""
    return _message(
        language, _l("Sign-in links were requested for your address"),
        _l("Hello,"),
        _nl("Sign-in links for the hecht portal were requested for this e-mail address several times in a "
            "short while. To protect your mailbox we are not sending more links for now. You can ask for a new "
            "link again in %(num)s minute.",
            "Sign-in links for the hecht portal were requested for this e-mail address several times in a "
            "short while. To protect your mailbox we are not sending more links for now. You can ask for a new "
            "link again in %(num)s minutes.", minutes),
        _l("Was this not you? Then you can ignore this e-mail: nobody can sign in without a link sent to "
           "this address."))


def confirm_message(language: str, link: str, hours: int, region_name: str) -> tuple[str, str]:
    return _message(
        language, _l("Confirm your e-mail address"),
        _l("Hello,"),
        _nl("Thank you for signing up with %(region)s. Please confirm your e-mail address with the link "
            "below; it also signs you in to the hecht portal. The link works once, for %(num)s hour.",
            "Thank you for signing up with %(region)s. Please confirm your e-mail address with the link "
            "below; it also signs you in to the hecht portal. The link works once, for %(num)s hours.",
            hours, region=region_name),
        link,
        _l("The region checks your sign-up and lets you know by e-mail when it has been approved."),
        _l("Did you not sign up? Then you can ignore this e-mail."))


def invite_message(language: str, link: str, hours: int, place: str) -> tuple[str, str]:
    """A staff member invited to a console (``place``: a region's or the platform's name)."""
    return _message(
        language, _l("You have been invited to hecht"),
        _l("Hello,"),
        _nl("You have been given access to %(place)s in hecht. Use the link below to sign in; it works "
            "once, for %(num)s hour. Later you sign in with your e-mail address on the portal.",
            "You have been given access to %(place)s in hecht. Use the link below to sign in; it works "
            "once, for %(num)s hours. Later you sign in with your e-mail address on the portal.",
            hours, place=place),
        link,
        _l("Did you not expect this? Then you can ignore this e-mail."))
