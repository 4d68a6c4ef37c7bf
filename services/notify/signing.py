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
    development (``HECHT_ENV=development``, no JWKS), one is derived from HECHT_JWT_SECRET and
    a warning is logged; production must set a key: a key derived from a secret that other
    services share is one leak away from every webhook secret.
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
        if settings.jwks_url or not settings.development:
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
    return headers_for(V1, secrets_plain, msg_id, body, now)


# -- Standard Webhooks asymmetric signatures (v1a, ed25519) -------------------------------------
# A subscription with ``signature: v1a`` holds ed25519 key pairs instead of HMAC secrets: the
# private key (``whsk_`` + base64 of the 32-byte seed) is encrypted at rest like a secret, the
# public key (``whpk_`` + base64 of the 32 raw bytes) is what the integrator verifies with and
# may be shown any time. Each entry of ``webhook-signature`` is ``v1a,<base64 signature>`` over
# ``{webhook-id}.{webhook-timestamp}.{body}``, exactly as for v1 (the Standard Webhooks spec,
# "Asymmetric signatures"). The official Python package (1.1) verifies only v1, so receivers in
# Python verify v1a with ``cryptography`` (see services/notify/README.md).
PUBLIC_KEY_PREFIX = "whpk_"
PRIVATE_KEY_PREFIX = "whsk_"
V1, V1A = "v1", "v1a"
SCHEMES = (V1, V1A)


def new_keypair() -> tuple[str, str]:
    """(private ``whsk_…``, public ``whpk_…``) of a fresh ed25519 key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PRIVATE_KEY_PREFIX + base64.b64encode(seed).decode(), PUBLIC_KEY_PREFIX + base64.b64encode(pub).decode()


def _ed25519(private: str):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(private[len(PRIVATE_KEY_PREFIX):]))


def _signed_content(msg_id: str, timestamp: datetime, body: str) -> bytes:
    return f"{msg_id}.{int(timestamp.timestamp())}.{body}".encode()


def sign_v1a(private_keys: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The ``webhook-signature`` header for ed25519 keys: one ``v1a,<base64>`` per active key."""
    content = _signed_content(msg_id, timestamp, body)
    return " ".join("v1a," + base64.b64encode(_ed25519(k).sign(content)).decode() for k in private_keys)


def verify_v1a(public_key: str, body: str | bytes, hdrs: dict, tolerance_s: int = 300) -> bool:
    """The spec's v1a verification (what a receiver does): timestamp within the tolerance and
    one ``v1a`` entry that verifies under ``public_key``. For tests and the docs' example."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    hdrs = {k.lower(): v for k, v in hdrs.items()}
    body = body.decode() if isinstance(body, bytes) else body
    ts = int(hdrs["webhook-timestamp"])
    if abs(datetime.now(timezone.utc).timestamp() - ts) > tolerance_s:
        return False
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len(PUBLIC_KEY_PREFIX):]))
    content = f"{hdrs['webhook-id']}.{ts}.{body}".encode()
    for entry in hdrs["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version != V1A:
            continue
        try:
            key.verify(base64.b64decode(sig), content)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def headers_for(scheme: str, keys_plain: list[str], msg_id: str, body: str, now: datetime | None = None) -> dict:
    """The delivery headers for a subscription's scheme (v1: HMAC secrets; v1a: ed25519 keys)."""
    now = now or datetime.now(timezone.utc)
    signer = sign_v1a if scheme == V1A else sign
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer(keys_plain, msg_id, now, body),
        "content-type": "application/json",
        "user-agent": "hecht-webhooks/1",
    }
