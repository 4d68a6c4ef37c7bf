"""Webhook secrets: generated, encrypted at rest, and used to sign per Standard Webhooks.

A secret is ``whsec_`` + base64 of 32 random bytes, shown to the integrator once. At rest
it is a Fernet token under ``HECHT_WEBHOOK_ENCRYPTION_KEY`` (a key per deployment; a
database dump alone reveals no secret). Signing uses the official ``standardwebhooks``
package, the same code an integrator's receiver verifies with.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import secrets as _random
import threading
from datetime import datetime, timezone

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from standardwebhooks import Webhook

from hecht.config import Settings

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Encrypts and decrypts webhook secrets.

    The key comes from the environment. Several comma-separated keys are accepted (the
    first encrypts, all decrypt), so the key itself can be rotated. Without a key, in
    development, one is derived from HECHT_JWT_SECRET and a warning is logged; a
    deployment that verifies tokens through JWKS (production) must set a key.
    """

    _warned = False
    _lock = threading.Lock()

    def __init__(self, settings: Settings):
        raw = settings.webhook_encryption_key
        if raw:
            keys = [k.strip() for k in raw.split(",") if k.strip()]
            try:
                self._fernet = MultiFernet([Fernet(k) for k in keys])
            except (ValueError, TypeError):
                raise ValueError("HECHT_WEBHOOK_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64 bytes); "
                                 "generate one with Fernet.generate_key()") from None
            return
        if settings.jwks_url:
            raise ValueError("HECHT_WEBHOOK_ENCRYPTION_KEY must be set outside development")
        with SecretBox._lock:
            if not SecretBox._warned:
                log.warning("HECHT_WEBHOOK_ENCRYPTION_KEY is not set: deriving the webhook secret key from "
                            "HECHT_JWT_SECRET (development only)")
                SecretBox._warned = True
        derived = hashlib.sha256(b"hecht-webhook-secrets\0" + settings.jwt_secret.encode()).digest()
        self._fernet = MultiFernet([Fernet(base64.urlsafe_b64encode(derived))])

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("a webhook secret cannot be decrypted: was HECHT_WEBHOOK_ENCRYPTION_KEY changed "
                             "without keeping the old key?") from None


def active_secrets(stored: list[dict], now: datetime | None = None) -> list[dict]:
    """The secrets that still sign: the current one, and a rotated-out one inside its grace period."""
    now = now or datetime.now(timezone.utc)
    return [s for s in stored if s.get("expires_at") is None or s["expires_at"] > now]


def sign(secrets_plain: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per active secret, space-separated."""
    return " ".join(Webhook(s).sign(msg_id=msg_id, timestamp=timestamp, data=body) for s in secrets_plain)


def headers(secrets_plain: list[str], msg_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    now = now or datetime.now(timezone.utc)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign(secrets_plain, msg_id, now, body),
        "content-type": "application/json",
        "user-agent": "hecht-webhooks/1",
    }
