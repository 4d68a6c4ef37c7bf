"""The OAuth 2.0 token endpoint of notify: client credentials (RFC 6749 §4.4) for integrators.

Authlib's authorization server does the protocol (``client_secret_basic`` and
``client_secret_post``, grant checks, the RFC 6749 error codes); hecht supplies the clients
(integrator applications, ``integrators.py``) and the token: a JWT minted with
``hecht.auth.mint`` (HS256, ``HECHT_JWT_SECRET``, the internal issuer), ``sub`` = the
application id, roles ``["integrator"]``, ``region`` = its region, valid ``TOKEN_TTL_S``
seconds. All three services accept it like any other hecht token.

Errors are ``application/problem+json`` (RFC 9457) that also carry RFC 6749's ``error`` and
``error_description`` members, so OAuth client libraries and hecht clients both understand them.

The endpoint takes form bodies and HTTP Basic credentials, which hecht's bearer-token request
hook refuses, so ``handle_before`` answers it ahead of that hook (see ``app.py``).
"""
from __future__ import annotations

import json
import secrets
import uuid

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from flask import Response, current_app, g, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from hecht import auth
from hecht.web import ctx, public

from . import integrators

TOKEN_TTL_S = 300
TOKEN_PATH = "/oauth/token"

tokens = Blueprint("oauth", __name__, url_prefix="/oauth",
                   description="OAuth 2.0 client credentials for integrator applications (RFC 6749 §4.4)")


class _Client(ClientMixin):
    """An active integrator application, as Authlib sees a client."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.client_id = doc["_id"]

    def get_client_id(self):
        return self.client_id

    def check_client_secret(self, client_secret):
        return integrators.authenticate(ctx().db, self.client_id, client_secret) is not None

    def check_endpoint_auth_method(self, method, endpoint):
        return endpoint == "token" and method in ("client_secret_basic", "client_secret_post")

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"

    def get_allowed_scope(self, scope):
        return ""  # hecht has no scopes: what an integrator may do is its role and its region

    def get_default_redirect_uri(self):
        return None

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_response_type(self, response_type):
        return False


class _Grant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class _Server(AuthorizationServer):
    def handle_response(self, status_code, payload, headers):
        """Errors as RFC 9457 problems that keep RFC 6749's members; tokens as Authlib made them."""
        headers = dict(headers or [])
        if isinstance(payload, dict) and "error" in payload:
            status = 401 if payload["error"] == "invalid_client" else status_code
            body = {"type": f"urn:hecht:problem:oauth-{payload['error'].replace('_', '-')}",
                    "title": "Unauthorized" if status == 401 else "Bad request", "status": status,
                    "detail": payload.get("error_description") or payload["error"], "instance": request.path,
                    "error": payload["error"], "error_description": payload.get("error_description") or ""}
            if status == 401:
                # RFC 6749 §5.2: a client that tried Basic is told which scheme to use.
                headers["WWW-Authenticate"] = 'Basic realm="hecht"'
            rid = g.get("request_id")
            if rid:
                body["request_id"] = rid
            return Response(json.dumps(body), status=status, headers=headers,
                            mimetype="application/problem+json")
        return Response(json.dumps(payload), status=status_code, headers=headers, mimetype="application/json")


def _query_client(client_id):
    if not isinstance(client_id, str) or not integrators.is_integrator_id(client_id):
        return None
    doc = ctx().db.integrators.find_one({"_id": client_id, "status": integrators.ACTIVE})
    return _Client(doc) if doc else None


def _save_token(token, req):
    """Nothing to keep: the token is a self-contained JWT that expires in minutes."""


def _generate(client, grant_type, user, scope):
    return auth.mint(ctx().settings, roles=["integrator"], region=client.doc["region"], ttl=TOKEN_TTL_S,
                     sub=client.client_id)


def server() -> _Server:
    app = current_app._get_current_object()
    srv = app.extensions.get("hecht_oauth")
    if srv is None:
        srv = _Server()
        app.config.setdefault("OAUTH2_ACCESS_TOKEN_GENERATOR", _generate)
        app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {"client_credentials": TOKEN_TTL_S})
        srv.init_app(app, query_client=_query_client, save_token=_save_token)
        srv.register_grant(_Grant)
        app.extensions["hecht_oauth"] = srv
    return srv


def handle_before():
    """App-level hook, registered ahead of hecht's own: the token endpoint is answered here."""
    if request.path != TOKEN_PATH:
        return None
    g.request_id = uuid.uuid4().hex
    g.traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    g.principal = None
    if request.method != "POST":
        return None  # the router's 405
    ctx().ensure_indexes()
    srv = server()
    scheme = request.headers.get("Authorization", "").partition(" ")[0].lower()
    if scheme and scheme != "basic":
        # A bearer token is no client authentication (RFC 6749 §2.3): refused, whatever it holds.
        return srv.handle_response(401, {"error": "invalid_client", "error_description":
                                         "authenticate with the client id and secret (HTTP Basic or the form body)"},
                                   [])
    return srv.create_token_response()


class TokenSchema(Schema):
    access_token = fields.String(metadata={"description": "a JWT: sub = the application id, role integrator"})
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"example": TOKEN_TTL_S})


@tokens.post("/token")
@public
@tokens.doc(security=[], requestBody={"content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "required": ["grant_type"], "properties": {
        "grant_type": {"const": "client_credentials"}, "client_id": {"type": "string"},
        "client_secret": {"type": "string"}, "scope": {"type": "string"}}}}}})
@tokens.response(200, TokenSchema)
@tokens.alt_response(400, description="RFC 6749 error (problem + error, error_description)")
@tokens.alt_response(401, description="invalid_client (problem + error, error_description)")
def token():
    """Client credentials grant: ``grant_type=client_credentials`` as a form body, the client id
    (the application id) and a client secret by HTTP Basic or in the body. 401 (problem with
    RFC 6749 ``error``) for a wrong or revoked secret, or an application that is not active."""
    return server().create_token_response()
