"""The portal's settings, read from the environment like ``hecht.config`` (12-factor).

``HECHT_ENV=development`` (set by ``make run`` and the tests) is the only switch that
loosens anything: the session cookie is not ``Secure`` (the local portal is plain http)
and sign-in links are also written to the console log.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from hecht.config import Settings, require_safe, settings as hecht_settings


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _url(name: str, default: str) -> str:
    return (os.environ.get(name, "").strip() or default).rstrip("/")


@dataclass(frozen=True)
class PortalSettings:
    hecht: Settings                 # JWT secret, Mongo URI (HECHT_PORTAL_MONGO_URI), SMTP, log level
    development: bool
    portal_url: str                 # what e-mails link to
    members_url: str
    agreements_url: str
    notify_url: str
    notify_public_url: str          # notify as integrators reach it (the token endpoint shown to them)
    secret_key: str                 # signs CSRF tokens (sessions themselves are server-side)
    session_hours: int
    link_minutes: int               # a sign-in link's validity
    confirm_link_hours: int         # the "confirm your address" link after sign-up
    signin_limit_address: int       # sign-in links per address ...
    signin_limit_client: int        # ... and per client address ...
    signin_window_s: int            # ... per this window
    api_timeout_s: float
    staff_recheck_s: int            # how often a console session's staff account is looked up again
    oidc_issuer: str | None
    oidc_client_id: str | None
    oidc_client_secret: str | None

    @property
    def cookie_secure(self) -> bool:
        return not self.development


def load() -> PortalSettings:
    env = os.environ
    # Production (HECHT_ENV unset) refuses to start without its own JWT secret: it signs the
    # portal's tokens for the APIs and, unless HECHT_PORTAL_SECRET_KEY is set, its CSRF tokens.
    base = require_safe(hecht_settings("portal"), verifies_tokens=False)
    development = env.get("HECHT_ENV", "").strip().lower() in ("development", "dev", "test")
    secret = env.get("HECHT_PORTAL_SECRET_KEY", "").strip()
    if not secret:
        # Derived from the JWT secret: stable across workers and restarts, distinct in use.
        import hashlib
        secret = hashlib.sha256(b"hecht-portal-csrf:" + base.jwt_secret.encode()).hexdigest()
    return PortalSettings(
        hecht=base,
        development=development,
        portal_url=_url("HECHT_PORTAL_URL", "http://127.0.0.1:8000"),
        members_url=_url("HECHT_MEMBERS_URL", "http://127.0.0.1:8002"),
        agreements_url=_url("HECHT_AGREEMENTS_URL", "http://127.0.0.1:8001"),
        notify_url=_url("HECHT_NOTIFY_URL", "http://127.0.0.1:8003"),
        notify_public_url=_url("HECHT_NOTIFY_PUBLIC_URL", "") or _url("HECHT_NOTIFY_URL", "http://127.0.0.1:8003"),
        secret_key=secret,
        session_hours=_int("HECHT_PORTAL_SESSION_HOURS", 12),
        link_minutes=_int("HECHT_PORTAL_LINK_MINUTES", 15),
        confirm_link_hours=_int("HECHT_PORTAL_CONFIRM_LINK_HOURS", 72),
        signin_limit_address=_int("HECHT_PORTAL_SIGNIN_LIMIT_ADDRESS", 5),
        signin_limit_client=_int("HECHT_PORTAL_SIGNIN_LIMIT_CLIENT", 30),
        signin_window_s=_int("HECHT_PORTAL_SIGNIN_WINDOW_S", 900),
        api_timeout_s=float(env.get("HECHT_PORTAL_API_TIMEOUT_S", "5") or 5),
        staff_recheck_s=_int("HECHT_PORTAL_STAFF_RECHECK_S", 300),
        oidc_issuer=env.get("HECHT_PORTAL_OIDC_ISSUER") or None,
        oidc_client_id=env.get("HECHT_PORTAL_OIDC_CLIENT_ID") or None,
        oidc_client_secret=env.get("HECHT_PORTAL_OIDC_CLIENT_SECRET") or None,
    )
