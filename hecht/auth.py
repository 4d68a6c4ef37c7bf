"""Bearer JWTs: HS256 with a shared secret in development, RS256 via JWKS in production.

Claims: ``sub``, ``roles`` (list), ``region`` (the tenant the token acts in),
``member`` (a GP's own member id). ``platform-admin`` may act in every region.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import jwt

from .config import Settings
from .errors import Unauthorized

ROLES = ("platform-admin", "region-admin", "gp", "integrator")


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: frozenset[str] = field(default_factory=frozenset)
    region: str | None = None
    member: str | None = None

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def is_platform_admin(self) -> bool:
        return "platform-admin" in self.roles

    def may_act_in(self, region: str) -> bool:
        return self.is_platform_admin or self.region == region


_jwks_clients: dict[str, jwt.PyJWKClient] = {}


def decode(token: str, settings: Settings) -> Principal:
    try:
        if settings.jwks_url:
            client = _jwks_clients.setdefault(settings.jwks_url, jwt.PyJWKClient(settings.jwks_url))
            key = client.get_signing_key_from_jwt(token).key
        else:
            key = settings.jwt_secret
        claims = jwt.decode(
            token, key, algorithms=list(settings.jwt_algorithms),
            audience=settings.jwt_audience, issuer=settings.jwt_issuer,
            options={"require": ["exp", "sub"], "verify_aud": bool(settings.jwt_audience)},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.PyJWTError as e:
        raise Unauthorized(f"the token is not valid: {e}") from None
    roles = claims.get("roles") or []
    if isinstance(roles, str):
        roles = [roles]
    return Principal(sub=str(claims["sub"]), roles=frozenset(r for r in roles if isinstance(r, str)),
                     region=claims.get("region"), member=claims.get("member"))


def mint(settings: Settings, *, roles: list[str], region: str | None = None, member: str | None = None,
         ttl: int = 3600, sub: str | None = None) -> str:
    """A development token signed with HECHT_JWT_SECRET (HS256)."""
    now = int(time.time())
    claims = {"sub": sub or (f"member:{member}" if member else f"dev:{uuid.uuid4().hex[:8]}"),
              "roles": roles, "iat": now, "exp": now + ttl}
    if region:
        claims["region"] = region
    if member:
        claims["member"] = member
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
