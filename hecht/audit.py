"""Who made a change: recorded beside each event in the outbox and the archive, never in it.

Every write made while serving a request stores the caller with its events: the token's
``sub`` and roles, or, for a public call (a sign-up), a keyed hash of the client's address
(it tells repeated attempts from one source apart, and cannot be turned back into the
address without the service's secret). Workers and schedulers act as ``system:<service>``.
History endpoints show it to those who may read the history; the events on Kafka, the
webhooks and the e-mails never carry it (``hecht.outbox.envelope`` drops it).
"""
from __future__ import annotations

import contextvars
import hashlib
import hmac

actor: contextvars.ContextVar[dict | None] = contextvars.ContextVar("actor", default=None)


def of_request(principal, client_address: str, secret: str) -> dict:
    """The caller; the portal acting for a visitor (a sign-up through its form) is that
    visitor, known by the keyed hash of the address the portal forwards."""
    if principal is not None and not principal.is_portal:
        return {"sub": principal.sub, "roles": sorted(principal.roles)}
    digest = hmac.new(b"hecht-audit-client\0" + secret.encode(), client_address.encode(), hashlib.sha256)
    actor = {"sub": "anonymous", "roles": [], "client": digest.hexdigest()[:24]}
    if principal is not None:
        actor["via"] = "portal"
    return actor


def current(service: str | None = None) -> dict:
    """The actor of the change being made now."""
    return actor.get() or {"sub": f"system:{service}" if service else "system", "roles": []}
