"""Two trusted issuers: the OIDC provider (RS256 via JWKS) and the portal (HS256, shared secret).

The JWKS is served by a real HTTP server on loopback, so PyJWKClient does what it does in
production; nothing else here does I/O.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hecht import auth
from hecht.config import Settings
from hecht.errors import Unauthorized

IDP = "https://login.example.org/realms/hecht"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url():
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    body = json.dumps({"keys": [dict(jwk, kid="k1", use="sig", alg="RS256")]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/certs"
    server.shutdown()
    server.server_close()


@pytest.fixture
def production(jwks_url) -> Settings:
    return Settings(service="members", mongo_uri="mongodb://x/hecht_members", kafka_bootstrap_servers="x",
                    jwt_secret="s" * 48, jwt_algorithms=("RS256", "HS256"), jwks_url=jwks_url, jwt_issuer=IDP)


def _idp_token(**claims) -> str:
    now = int(time.time())
    body = {"sub": "staff-1", "roles": ["region-admin"], "region": "zuid", "iss": IDP, "iat": now,
            "exp": now + 300, **claims}
    return jwt.encode(body, KEY, algorithm="RS256", headers={"kid": "k1"})


def test_the_providers_token_is_accepted(production):
    assert auth.decode(_idp_token(), production).roles == {"region-admin"}


def test_the_portals_token_is_accepted_with_its_own_issuer(production):
    token = auth.mint(production, roles=["gp"], region="zuid", member="mem_1", ttl=300)
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "hecht-portal"
    p = auth.decode(token, production)
    assert (p.member, p.region, p.roles) == ("mem_1", "zuid", {"gp"})


def test_a_secret_holder_cannot_pose_as_the_provider(production):
    now = int(time.time())
    forged = jwt.encode({"sub": "x", "roles": ["platform-admin"], "iss": IDP, "iat": now, "exp": now + 60},
                        production.jwt_secret, algorithm="HS256")
    with pytest.raises(Unauthorized):
        auth.decode(forged, production)


def test_a_provider_token_cannot_pose_as_the_portal(production):
    with pytest.raises(Unauthorized):
        auth.decode(_idp_token(iss="hecht-portal"), production)


def test_the_public_key_used_as_an_hmac_secret_is_refused(production):
    """Algorithm confusion: HS256 signed with the provider's public key must not verify."""
    public_pem = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    claims = {"sub": "x", "roles": ["platform-admin"], "iss": IDP, "iat": now, "exp": now + 60}
    import hmac, hashlib, base64  # noqa: E401 - PyJWT refuses to sign with a PEM key, so sign by hand

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    token = head + "." + b64(hmac.new(public_pem, head.encode(), hashlib.sha256).digest())
    with pytest.raises(Unauthorized):
        auth.decode(token, production)


def test_hs256_is_refused_when_not_allowed(production):
    rs_only = replace(production, jwt_algorithms=("RS256",))
    token = auth.mint(rs_only, roles=["gp"], region="zuid", member="mem_1", ttl=300)
    with pytest.raises(Unauthorized):
        auth.decode(token, rs_only)


def test_without_a_jwks_development_tokens_work_as_before():
    dev = Settings(service="members", mongo_uri="mongodb://x/hecht_members", kafka_bootstrap_servers="x")
    token = auth.mint(dev, roles=["platform-admin"])
    assert "iss" not in jwt.decode(token, options={"verify_signature": False})
    assert auth.decode(token, dev).is_platform_admin


# -- token lifetime per issuer (issue 22, item 12) ------------------------------------------------
CENTURY = 100 * 365 * 86400


def _hs(settings: Settings, **claims) -> str:
    now = int(time.time())
    body = {"sub": "x", "roles": ["platform-admin"], "iat": now, "exp": now + 60, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, settings.jwt_secret, algorithm="HS256")


def test_a_development_token_valid_for_a_century_is_refused():
    dev = Settings(service="members", mongo_uri="mongodb://x/hecht_members", kafka_bootstrap_servers="x")
    now = int(time.time())
    with pytest.raises(Unauthorized, match="longer than 86400 s"):
        auth.decode(_hs(dev, exp=now + CENTURY), dev)
    with pytest.raises(Unauthorized, match="longer than"):       # no iat: measured from now
        auth.decode(_hs(dev, iat=None, exp=now + CENTURY), dev)
    with pytest.raises(Unauthorized):                            # an iat in the future does not help
        auth.decode(_hs(dev, iat=now + CENTURY - 60, exp=now + CENTURY), dev)
    assert auth.decode(_hs(dev, exp=now + 86400), dev).is_platform_admin        # the maximum itself
    assert auth.decode(auth.mint(dev, roles=["gp"], ttl=4 * 3600), dev).roles == {"gp"}  # the tests' tokens
    longer = replace(dev, jwt_max_lifetime_s=7 * 86400)                          # HECHT_JWT_MAX_LIFETIME_S
    assert auth.decode(_hs(longer, exp=now + 3 * 86400), longer).is_platform_admin


def test_the_internal_issuers_tokens_live_at_most_five_minutes(production):
    """With a JWKS, HS256 tokens are the portal's and OAuth's (300 s): nothing longer passes."""
    assert auth.decode(auth.mint(production, roles=["gp"], region="zuid", member="m", ttl=300), production)
    with pytest.raises(Unauthorized, match="longer than 300 s"):
        auth.decode(auth.mint(production, roles=["gp"], region="zuid", member="m", ttl=301), production)
    with pytest.raises(Unauthorized, match="longer than 300 s"):
        auth.decode(auth.mint(production, roles=["platform-admin"], ttl=CENTURY), production)


def test_the_providers_tokens_live_at_most_a_day(production):
    now = int(time.time())
    assert auth.decode(_idp_token(exp=now + 86400), production).roles == {"region-admin"}
    with pytest.raises(Unauthorized, match="longer than 86400 s"):
        auth.decode(_idp_token(exp=now + CENTURY), production)


def test_issuer_and_audience_are_required_claims_when_configured(production):
    with_aud = replace(production, jwt_audience="hecht")
    assert auth.decode(_idp_token(aud="hecht"), with_aud)
    with pytest.raises(Unauthorized):
        auth.decode(_idp_token(), with_aud)                          # no aud
    with pytest.raises(Unauthorized):
        auth.decode(_idp_token(aud="other"), with_aud)
    claims = {"sub": "x", "roles": ["region-admin"], "iat": int(time.time()), "exp": int(time.time()) + 60}
    with pytest.raises(Unauthorized):
        auth.decode(jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k1"}), with_aud)  # no iss
