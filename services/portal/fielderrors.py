"""The services' field errors (English, RFC 9457 ``errors``) in the person's language.

The APIs answer in English; the portal shows each message next to its field. The known
messages (marshmallow's and the members domain's, RIZIV/BIG/AGB checks included) are
matched here and translated; anything unknown is shown as a generic message followed by
the original text, so nothing is lost.
"""
from __future__ import annotations

import re

from flask_babel import gettext as _, ngettext

from .labels import label

# (pattern, message factory taking the match)
_RULES = [
    (r"Missing data for required field\.|required|must not be empty|Field may not be null\.",
     lambda m: _("This field is required.")),
    (r"Length must be between (\d+) and (\d+)\.",
     lambda m: ngettext("Use between %(min)s and %(num)s character.", "Use between %(min)s and %(num)s characters.",
                        int(m[2]), min=m[1])),
    (r"Longer than maximum length (\d+)\.",
     lambda m: ngettext("Use at most %(num)s character.", "Use at most %(num)s characters.", int(m[1]))),
    (r"Shorter than minimum length (\d+)\.",
     lambda m: ngettext("Use at least %(num)s character.", "Use at least %(num)s characters.", int(m[1]))),
    (r"(Must be one of: .*|one of .*|Not a valid choice\.?)", lambda m: _("Choose one of the options.")),
    (r"Not a valid date\.", lambda m: _("Enter a date as YYYY-MM-DD.")),
    (r"Not a valid URL\.", lambda m: _("Enter a web address that starts with https://.")),
    (r"must not be before effective_from", lambda m: _("This date must not be before the start date.")),
    (r"must not be after effective_until", lambda m: _("This date must not be after the end date.")),
    (r"Not a valid number\.|Not a valid integer\.", lambda m: _("Enter a number.")),
    (r"Must be greater than or equal to ([\d.]+) and less than or equal to ([\d.]+)\.",
     lambda m: _("Enter a number from %(min)s to %(max)s.", min=m[1], max=m[2])),
    (r"Must be greater than ([\d.]+) and less than or equal to ([\d.]+)\.",
     lambda m: _("Enter a number above %(min)s and at most %(max)s.", min=m[1], max=m[2])),
    (r"Not a valid string\.", lambda m: _("This value is not valid.")),
    (r"a BIG number has exactly 11 digits", lambda m: _("A BIG number has exactly 11 digits.")),
    (r"an AGB code has exactly 8 digits", lambda m: _("An AGB code has exactly 8 digits.")),
    (r"AGB codes of GPs start with 01 .*this one is type (\S+)",
     lambda m: _("AGB codes of GPs start with 01; this one is of care-provider type %(type)s.", type=m[1])),
    (r"a RIZIV/INAMI number has exactly 11 digits.*",
     lambda m: _("A RIZIV number has exactly 11 digits (P NNNNN CC QQQ).")),
    (r"the check digits \(7th and 8th\) do not match.*",
     lambda m: _("The check digits (7th and 8th) do not match the first six digits. "
                 "Please check the number for a typing error.")),
    (r"this RIZIV/INAMI number is not a physician's \(profession digit (\d)",
     lambda m: _("This RIZIV number is not a physician's (it starts with %(digit)s; physicians' numbers "
                 "start with 1).", digit=m[1])),
    (r"competence code (\d+) means 'holder of the medical diploma'.*",
     lambda m: _("Competence code %(code)s means 'holder of the medical diploma', not GP. Sign up with "
                 "your number ending in a general-medicine code (001–008).", code=m[1])),
    (r"competence code (\d+) is a specialist's.*",
     lambda m: _("Competence code %(code)s is a specialist's; only general-medicine codes (001–008) can "
                 "enrol as a GP.", code=m[1])),
    (r"(\S+) numbers are not used in (\S+) regions; use (.+)",
     lambda m: _("%(scheme)s numbers are not used in this region; use %(allowed)s.",   # INAMI in French
                 scheme=label(m[1], "scheme"),
                 allowed=" / ".join(label(s, "scheme") for s in m[3].split(" or ")))),
    (r"a Dutch postcode looks like 1234 AB", lambda m: _("A Dutch postcode looks like 1234 AB.")),
    (r"Dutch postcodes do not use the letters (\S+)",
     lambda m: _("Dutch postcodes do not use the letters %(letters)s.", letters=m[1])),
    (r"a Belgian postcode has four digits.*", lambda m: _("A Belgian postcode has four digits (1000–9999).")),
    (r"not one of the municipalities of region [^:]+: (.*)",
     lambda m: _("Choose one of the region's municipalities: %(list)s.", list=m[1])),
    (r"'(.+)' is outside the event types this application may receive \((.*)\)",
     lambda m: _("%(pattern)s is not among the event types this application may receive (%(allowed)s).",
                 pattern=m[1], allowed=m[2])),
    (r"already enrolled in this region", lambda m: _("This is already enrolled in this region.")),
    (r"the part before the @ may only contain ASCII .*",   # hecht/emails.py: the region did not opt in
     lambda m: _("Before the @, use only letters without accents (a–z), digits and punctuation.")),
    (r"a council needs its seats.*", lambda m: _("A council needs its seats: add at least one member and cluster.")),
    (r"a member holds at most one seat", lambda m: _("A member holds at most one seat.")),
    (r"every seat names its cluster", lambda m: _("Name the cluster of every seat.")),
    (r"no member (\S+) in region \S+",
     lambda m: _("%(member)s is not a member of this region (or has left it).", member=m[1])),
    (r"not a member id", lambda m: _("Choose one of the options.")),
    (r"not yourself", lambda m: _("Choose a colleague, not yourself.")),
    (r"this \S+ registration is already enrolled.*",
     lambda m: _("This registration number is already enrolled in this region.")),
]
_COMPILED = [(re.compile(p, re.S), f) for p, f in _RULES]


def translate(field: str, message: str) -> str:
    message = str(message).strip()
    for pattern, make in _COMPILED:
        m = pattern.fullmatch(message) or (pattern.match(message) if field != "email" else None)
        if m:
            return make(m)
    if field == "email":  # email_validator's many messages
        return _("This is not a valid e-mail address.")
    return _("This value is not accepted (%(message)s).", message=message)


def merge_lists(errors: dict[str, list[str]], *fields: str) -> dict[str, list[str]]:
    """A list field's per-item errors (``event_types_0``, ``event_types_3``) next to the field
    itself (``event_types``): the form shows the list as one group."""
    out: dict[str, list[str]] = {}
    for key, msgs in errors.items():
        base = next((f for f in fields if re.fullmatch(rf"{re.escape(f)}_\d+", key)), key)
        out.setdefault(base, []).extend(msgs)
    return out


def flatten(errors, prefix: str = "") -> dict[str, list[str]]:
    """``{"practice": {"postcode": ["…"]}}`` → ``{"practice_postcode": ["<translated>"]}``:
    the form's field names. Messages for fields the form does not show go under ``""``."""
    out: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = f"{prefix}_{key}" if prefix else str(key)
            for k, v in flatten(value, name).items():
                out.setdefault(k, []).extend(v)
    elif isinstance(errors, (list, tuple)):
        for item in errors:
            if isinstance(item, (dict, list)):
                for k, v in flatten(item, prefix).items():
                    out.setdefault(k, []).extend(v)
            else:
                out.setdefault(prefix, []).append(translate(prefix.rsplit("_", 1)[-1], item))
    else:
        out.setdefault(prefix, []).append(translate(prefix, errors))
    return out
