"""Read the SMTP sink's Maildir (aiosmtpd Mailbox handler)."""
from __future__ import annotations

import mailbox
import os
from email import policy
from email.parser import BytesParser


def messages(to: str | None = None) -> list:
    path = os.environ.get("HECHT_MAILDIR")
    assert path, "HECHT_MAILDIR is not set: run the tests through `make test`"
    out = []
    for key in mailbox.Maildir(path, create=False).keys():
        with open(os.path.join(path, "new", key) if os.path.exists(os.path.join(path, "new", key))
                  else os.path.join(path, "cur", key), "rb") as f:
            msg = BytesParser(policy=policy.default).parse(f)
        if to is None or to.lower() in str(msg["To"]).lower():
            out.append(msg)
    return out
