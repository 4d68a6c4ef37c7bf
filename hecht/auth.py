"""Bearer JWTs: HS256 with a shared secret in development, RS256 via JWKS in production.

Claims: ``sub``, ``roles`` (list), ``region`` (the tenant the token acts in),
``member`` (a GP's own member id). ``platform-admin`` may act in every region.
``portal`` is the web portal's service role: it reads public data of every region and
reports sign-ins (docs/PORTAL.md); views name it explicitly, so no other view opens to it.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import jwt

from .config import Settings
from .errors import Unauthorized

ROLES = ("platform-admin", "region-admin", "gp", "integrator", "portal")
# The roles that act inside a region: "anyone of the region" in a view means these, never the
# portal, which is no one's tenant and sees only what docs/PORTAL.md lists.
REGION_ROLES = ("platform-admin", "region-admin", "gp", "integrator")
PORTAL = "portal"


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

    @property
    def is_portal(self) -> bool:
        """A pure portal token: one that carries any other role is not trusted across regions."""
        return self.roles == frozenset({PORTAL})

    def may_act_in(self, region: str) -> bool:
        """Region scope. The portal passes it for every region, so what it may do there is
        decided by the views' role lists alone (it is in none but the public reads)."""
        return self.is_platform_admin or self.region == region or self.is_portal


_jwks_clients: dict[str, jwt.PyJWKClient] = {}


def max_lifetime(settings: Settings, *, internal: bool) -> int:
    """The longest lifetime (``exp`` - ``iat``) accepted from an issuer.

    With a JWKS the internal issuer's HS256 tokens (the portal's and OAuth's, 300 s) get
    ``HECHT_INTERNAL_JWT_MAX_LIFETIME_S``; the provider's tokens, and without a JWKS every
    token (development tokens of ``hecht token``), get ``HECHT_JWT_MAX_LIFETIME_S``.
    """
    if internal and settings.jwks_url:
        return settings.internal_jwt_max_lifetime_s
    return settings.jwt_max_lifetime_s


def _verification(token: str, settings: Settings) -> tuple[object, list[str], str | None, int]:
    """The key, algorithms, issuer and longest lifetime a token is checked with.

    Two issuers can be trusted at once. People and integrators get RS256/ES256 tokens
    from the OIDC provider (``HECHT_JWKS_URL``); the portal mints short-lived HS256
    tokens for the person signed in to it, with the shared ``HECHT_JWT_SECRET`` and its
    own issuer (``HECHT_INTERNAL_JWT_ISSUER``), so a provider's token can never pass as
    the portal's or the reverse. The key follows the header's algorithm, and each
    family only ever meets its own key: an HS token is never checked against a public
    key (the classic algorithm-confusion attack). Without a JWKS everything is HS256
    with the secret, as in development.
    """
    algorithms = list(settings.jwt_algorithms)
    if not settings.jwks_url:
        return settings.jwt_secret, algorithms, settings.jwt_issuer, max_lifetime(settings, internal=False)
    alg = str(jwt.get_unverified_header(token).get("alg", ""))
    if alg.startswith("HS"):
        return (settings.jwt_secret, [a for a in algorithms if a.startswith("HS")], settings.internal_jwt_issuer,
                max_lifetime(settings, internal=True))
    client = _jwks_clients.setdefault(settings.jwks_url, jwt.PyJWKClient(settings.jwks_url))
    return (client.get_signing_key_from_jwt(token).key, [a for a in algorithms if not a.startswith("HS")],
            settings.jwt_issuer, max_lifetime(settings, internal=False))


def _check_lifetime(claims: dict, longest: int) -> None:
    """A token valid for longer than its issuer's maximum is refused, whatever its signature:
    a leaked long-lived token would otherwise outlive every revocation. Measured from ``iat``
    (from now when there is none, or when ``iat`` lies in the future)."""
    exp, iat = claims.get("exp"), claims.get("iat", None)
    now = int(time.time())
    start = now if not isinstance(iat, (int, float)) or isinstance(iat, bool) else min(iat, now)
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp - start > longest:
        raise jwt.InvalidTokenError(f"the token is valid for longer than {longest} s")


def decode(token: str, settings: Settings) -> Principal:
    try:
        key, algorithms, issuer, longest = _verification(token, settings)
        if not algorithms:
            raise jwt.InvalidAlgorithmError("the token's algorithm is not allowed")
        # iss and aud are required whenever configured (production refuses to start without them).
        required = ["exp", "sub"] + (["iss"] if issuer else []) + (["aud"] if settings.jwt_audience else [])
        claims = jwt.decode(
            token, key, algorithms=algorithms,
            audience=settings.jwt_audience, issuer=issuer,
            options={"require": required, "verify_aud": bool(settings.jwt_audience)},
        )
        _check_lifetime(claims, longest)
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
    """An HS256 token signed with HECHT_JWT_SECRET: development tokens, and the portal's
    per-request tokens (with the internal issuer when an OIDC provider is configured)."""
    now = int(time.time())
    claims = {"sub": sub or (f"member:{member}" if member else f"dev:{uuid.uuid4().hex[:8]}"),
              "roles": roles, "iat": now, "exp": now + ttl}
    if region:
        claims["region"] = region
    if member:
        claims["member"] = member
    issuer = settings.internal_jwt_issuer if settings.jwks_url else settings.jwt_issuer
    if issuer:
        claims["iss"] = issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
