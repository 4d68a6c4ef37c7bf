"""E-mail addresses as identities: the one rule members, notify and the portal share.

An address is an identity only in the form it was verified in. Each service normalises an
address once, where it comes in (:func:`normalise`, or :func:`validate` where it is stored),
and matches accounts on :func:`key`:

- trimmed, and split at the last ``@``;
- the domain goes through IDNA 2008 with the UTS #46 mapping (non-transitional: ``ß`` stays
  ``ß``) to its ASCII form (A-labels), lower-cased: what DNS resolves, so
  ``Straße.example`` and ``xn--strae-oqa.example`` are one domain and ``strasse.example`` is
  another;
- the local part is kept as given. It must be ASCII, unless the caller allows more (a region
  that opts in, ``unicode_email_local_parts``): then it must be in Unicode NFC already, so no
  character is replaced by another (the Kelvin sign U+212A would become ``K``);
- the key is that form with the ASCII letters of the local part lower-cased: ``An@Example.org``
  and ``an@example.org`` reach the same account. Nothing else is folded: never ``casefold()``
  or ``lower()`` of non-ASCII text (``ß`` is not ``ss``, ``ı`` is not ``i``).

A sign-in link goes only to the address an account stored, never to the one typed (the portal
looks the stored ones up), so two addresses sharing a key can only ever reach the account's
own mailbox.
"""
from __future__ import annotations

import string
import unicodedata

import idna
from email_validator import EmailNotValidError, validate_email

MAX_LENGTH = 254
MAX_LOCAL = 64
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


class AddressError(ValueError):
    """Not an e-mail address under the rule (the message says why, in English)."""


def ascii_lower(text: str) -> str:
    """Lower-case the ASCII letters A–Z only; every other character stays as it is."""
    return text.translate(_ASCII_LOWER)


def ascii_domain(domain: str) -> str:
    """The domain as DNS knows it: UTS #46 mapping (non-transitional), then A-labels, lower-cased."""
    if not domain or domain != domain.strip():
        raise AddressError("the part after the @ is not a valid domain name")
    try:
        encoded = idna.encode(domain, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as e:
        raise AddressError(f"the part after the @ is not a valid domain name ({e})") from None
    return ascii_lower(encoded)


def _check_local(local: str, unicode_local: bool) -> None:
    if not local:
        raise AddressError("an e-mail address looks like name@example.org")
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in local):
        raise AddressError("the part before the @ must not contain spaces or control characters")
    if not local.isascii():
        if not unicode_local:
            raise AddressError("the part before the @ may only contain ASCII letters, digits and punctuation")
        if not unicodedata.is_normalized("NFC", local):
            raise AddressError("the part before the @ is not in Unicode normal form NFC")
    if len(local.encode()) > MAX_LOCAL:
        raise AddressError(f"the part before the @ is longer than {MAX_LOCAL} bytes")


def normalise(raw: str, *, unicode_local: bool = False) -> str:
    """The normal form of an address (``local@a-label-domain``), or AddressError.

    The shape only: enough to look an address up. What is stored passes :func:`validate` too."""
    value = (raw or "").strip()
    local, at, domain = value.rpartition("@")
    if not at or not domain:
        raise AddressError("an e-mail address looks like name@example.org")
    _check_local(local, unicode_local)
    address = f"{local}@{ascii_domain(domain)}"
    if len(address.encode()) > MAX_LENGTH:
        raise AddressError(f"an e-mail address has at most {MAX_LENGTH} characters")
    return address


def validate(raw: str, *, unicode_local: bool = False, test_environment: bool = False) -> str:
    """:func:`normalise`, plus the full syntax check of an address one may store and mail to
    (``email_validator``, no DNS lookups: special-use domains such as ``.local`` are refused;
    ``test_environment`` lets ``.test`` through)."""
    address = normalise(raw, unicode_local=unicode_local)
    try:
        validate_email(address, check_deliverability=False, allow_smtputf8=unicode_local,
                       test_environment=test_environment)
    except EmailNotValidError as e:
        raise AddressError(str(e)) from None
    return address


def key(address: str) -> str:
    """The matching key: the normal form with the local part's ASCII letters lower-cased.

    Never raises: also the key of an address stored before this rule (a domain that is not
    valid IDNA keeps its text, with only its ASCII letters lower-cased)."""
    local, at, domain = (address or "").strip().rpartition("@")
    if not at:
        return ascii_lower((address or "").strip())
    try:
        domain = ascii_domain(domain)
    except AddressError:
        domain = ascii_lower(domain)
    return f"{ascii_lower(local)}@{domain}"


def lookup_key(raw: str) -> str:
    """The key of a typed address, for a look-up across regions (a region may allow non-ASCII
    local parts, so they are looked up too; they match only what such a region stored)."""
    return key(normalise(raw, unicode_local=True))
