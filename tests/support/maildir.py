"""Read the SMTP sink's Maildir (aiosmtpd Mailbox handler)."""
from __future__ import annotations

import os
import re
from email import policy
from email.parser import BytesParser


def _arrival(name: str) -> tuple:
    """Python's Maildir names are ``<seconds>.M<microseconds>P<pid>Q<count>.<host>``; the
    microseconds are not zero-padded, so sorting the names as text can put a later message
    first within one second (a test counting "messages before" then missed the new one)."""
    m = re.match(r"^(\d+)\.M(\d+)P\d+Q(\d+)", name)
    return (int(m[1]), int(m[2]), int(m[3]), name) if m else (0, 0, 0, name)


def messages(to: str | None = None) -> list:
    """The messages in the sink (those addressed to ``to``, when given).

    The sink keeps every message of the whole test session, so only files whose raw bytes
    name the address are parsed: parsing them all took ~2.5 ms a message, and the e2e story
    asks ~30 times, which with a few hundred earlier messages in the Maildir added 15–25 s
    to the fault runs' e-mail phase (issue 12, item 5).
    """
    path = os.environ.get("HECHT_MAILDIR")
    assert path, "HECHT_MAILDIR is not set: run the tests through `make test`"
    needle = to.lower().encode() if to else None
    out = []
    for sub in ("new", "cur"):
        folder = os.path.join(path, sub)
        for name in sorted(os.listdir(folder), key=_arrival) if os.path.isdir(folder) else ():
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    raw = f.read()
            except FileNotFoundError:  # moved between listing and reading
                continue
            if needle is not None and needle not in raw.lower():
                continue
            msg = BytesParser(policy=policy.default).parsebytes(raw)
            if to is None or to.lower() in str(msg["To"]).lower():
                out.append(msg)
    return out
