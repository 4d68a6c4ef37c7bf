"""Optional OIDC sign-in (Authlib, authorization-code flow): off by default; when configured,
a provider's *verified* e-mail signs the person in as a used e-mail link would.

The provider is a small fake served in a thread: discovery, authorize (redirects straight
back with a code), token (an HS256 ID token whose key is published as an ``oct`` JWK)."""
from __future__ import annotations

import base64
import threading
import time
from urllib.parse import urlencode

import jwt
from flask import Flask, redirect, request
from werkzeug.serving import make_server

from tests.support.fleet import free_port

from .conftest import Browser, new_email

SECRET = "fake-provider-signing-key-0123456789abcdef"
CLIENT_ID, CLIENT_SECRET = "hecht-portal", "client-secret"


class FakeProvider:
    def __init__(self, email: str, verified: bool = True):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.email, self.verified = email, verified
        app = Flask("fake-oidc")
        codes: dict[str, str] = {}

        @app.get("/.well-known/openid-configuration")
        def discovery():
            return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                    "response_types_supported": ["code"], "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["HS256"]}

        @app.get("/jwks")
        def jwks():
            k = base64.urlsafe_b64encode(SECRET.encode()).rstrip(b"=").decode()
            return {"keys": [{"kty": "oct", "k": k, "kid": "k1", "alg": "HS256", "use": "sig"}]}

        @app.get("/authorize")
        def authorize():
            assert request.args["client_id"] == CLIENT_ID and request.args["response_type"] == "code"
            code = f"code-{len(codes)}"
            codes[code] = request.args.get("nonce", "")
            return redirect(f"{request.args['redirect_uri']}?{urlencode({'code': code, 'state': request.args['state']})}")

        @app.post("/token")
        def token():
            nonce = codes.pop(request.form["code"])
            now = int(time.time())
            claims = {"iss": self.issuer, "sub": "u1", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                      "nonce": nonce, "email": self.email, "email_verified": self.verified}
            id_token = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "k1"})
            return {"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}

        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def test_oidc_is_off_by_default(portal_fleet, browser):
    # (without OIDC the path is just an unknown sign-in token)
    assert browser.get("/sign-in/oidc", allow_redirects=False).status_code == 410
    assert "oidc" not in browser.get("/sign-in").text


def test_a_verified_email_from_the_provider_signs_in(portal_fleet, hecht):
    region = hecht.region()
    email = new_email()
    hecht.approve(region, hecht.sign_up(region, email))
    with FakeProvider(email) as provider:
        url = portal_fleet.start_portal("portal-oidc", HECHT_PORTAL_OIDC_ISSUER=provider.issuer,
                                        HECHT_PORTAL_OIDC_CLIENT_ID=CLIENT_ID,
                                        HECHT_PORTAL_OIDC_CLIENT_SECRET=CLIENT_SECRET,
                                        HECHT_PORTAL_OIDC_NAME="Zorg-ID")
        b = Browser(url)
        assert "Inloggen met Zorg-ID" in b.get("/sign-in").text
        r = b.get(f"/sign-in/oidc?next=/r/{region}/votes")
        assert r.status_code == 200 and r.url == f"{url}/r/{region}/votes", (r.status_code, r.url)
        assert b.get(f"/r/{region}/membership", allow_redirects=False).status_code == 200

    with FakeProvider(email, verified=False) as provider:
        url = portal_fleet.start_portal("portal-oidc-unverified", HECHT_PORTAL_OIDC_ISSUER=provider.issuer,
                                        HECHT_PORTAL_OIDC_CLIENT_ID=CLIENT_ID,
                                        HECHT_PORTAL_OIDC_CLIENT_SECRET=CLIENT_SECRET)
        b = Browser(url)
        r = b.get("/sign-in/oidc")
        assert r.status_code == 403 and "<h1>" in r.text  # refused: no session
        assert b.get(f"/r/{region}/membership", allow_redirects=False).status_code == 302
