"""Marshmallow validators shared by the services' request schemas.

* :data:`PLAIN` — one line of text a person types as a name, a title or a municipality: no
  control characters (Unicode category Cc: ``\\n``, ``\\r``, ``\\t``, ``\\x0b``, NUL, DEL, the C1
  range) and no line or paragraph separators (U+2028, U+2029). Such characters break e-mail
  headers, CSV exports and log lines, and let one name pass for two lines.
  :func:`one_line` is a length check plus :data:`PLAIN`.
* :class:`HttpsUrl` — a link hecht shows to people: ``https`` only, a host name, and no
  userinfo (``https://javascript:alert(1)@example.org/`` reads as something it is not).
* :class:`ChangesSchema` — a PATCH body must change something: an empty one is 422, so no
  version is spent on nothing.
"""
from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, validate, validates_schema

FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def control_characters(text: str) -> list[str]:
    """The forbidden characters in ``text``, as ``U+XXXX`` (for the error message)."""
    return sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in FORBIDDEN_CATEGORIES})


class PlainText(validate.Validator):
    """One line of text: no control characters, no line or paragraph separators."""

    error = "must be one line of text without control characters (found {found})"

    def __call__(self, value):
        if isinstance(value, str):
            found = control_characters(value)
            if found:
                raise ValidationError(self.error.format(found=", ".join(found)))
        return value


PLAIN = PlainText()


def one_line(min_len: int = 1, max_len: int = 200) -> list[validate.Validator]:
    """The validators of a name-like field: its length, and one plain line."""
    return [validate.Length(min_len, max_len), PLAIN]


class HttpsUrl(validate.Validator):
    """An absolute ``https`` URL with a host, without userinfo, whitespace or control characters."""

    def __call__(self, value):
        if not isinstance(value, str):
            raise ValidationError("must be a URL")
        if control_characters(value) or any(c.isspace() for c in value):
            raise ValidationError("must not contain spaces or control characters")
        try:
            parts = urlsplit(value)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValidationError("not a valid URL") from None
        if parts.scheme.lower() != "https":
            raise ValidationError("must be an https URL")
        if "@" in parts.netloc or parts.username is not None or parts.password is not None:
            raise ValidationError("must not contain a user name or password (userinfo)")
        if not host:
            raise ValidationError("must name a host")
        return value


class ChangesSchema(Schema):
    """A PATCH body: at least one field to change. ``NOT_CHANGES`` names fields that only steer
    how a change is made (e.g. ``confirm_affected``); an empty object is no change either."""

    NOT_CHANGES: tuple[str, ...] = ()

    @validates_schema
    def something_to_change(self, data, **kwargs):
        changes = [k for k, v in data.items() if k not in self.NOT_CHANGES and v != {}]
        if not changes:
            raise ValidationError("send at least one field to change", "_schema")
