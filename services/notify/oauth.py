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

Failed attempts are limited per client id: at most ``HECHT_OAUTH_FAILURE_LIMIT``
(10) per ``HECHT_OAUTH_FAILURE_WINDOW_S`` (900 s from the window's first attempt). Past that
every request for that client id, even with the right secret, gets 429 with ``Retry-After``
(a problem with RFC 6749 ``error`` ``temporarily_unavailable``) until the window ends. The
counter lives in the database (``rate_limits``), so it holds across gunicorn workers and
processes; an attempt is counted *before* the secret is checked and forgiven when it
succeeds, so parallel guesses cannot get past the limit either.
"""
from __future__ import annotations

import base64
import json
import math
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from flask import Response, current_app, g, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

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
            title = {401: "Unauthorized", 429: "Too many requests"}.get(status, "Bad request")
            body = {"type": f"urn:hecht:problem:oauth-{payload['error'].replace('_', '-')}",
                    "title": title, "status": status,
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
    client_id = _requested_client_id()
    if client_id is None:
        return srv.create_token_response()
    s = ctx().settings
    n, until = _count_attempt(client_id, s.oauth_failure_window_s)
    if n > s.oauth_failure_limit:
        wait = max(1, math.ceil((until - datetime.now(timezone.utc)).total_seconds()))
        return srv.handle_response(429, {
            "error": "temporarily_unavailable",
            "error_description": f"too many failed attempts for this client id (at most {s.oauth_failure_limit} "
                                 f"per {s.oauth_failure_window_s} s); try again in {wait} s"},
            [("Retry-After", str(wait))])
    resp = srv.create_token_response()
    if resp.status_code == 200:
        _forgive(client_id)
    return resp


# -- failed attempts per client id ------------------------------------------------------------
def _requested_client_id() -> str | None:
    """The client id the request authenticates as (HTTP Basic, else the form), if it is one."""
    auth_header = request.headers.get("Authorization", "")
    client_id = None
    if auth_header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth_header[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        client_id = unquote(decoded.partition(":")[0])  # RFC 6749 §2.3.1: form-encoded
    else:
        client_id = request.form.get("client_id")
    if not isinstance(client_id, str) or len(client_id) > 64 or not integrators.is_integrator_id(client_id):
        return None  # no such client can exist: Authlib refuses it without a counter
    return client_id


def _attempts_key(client_id: str) -> str:
    return f"oauth-token-attempts:{client_id}"


def _count_attempt(client_id: str, window_s: int) -> tuple[int, datetime]:
    """Count one attempt in the client id's window (a new window once the last one ended):
    (attempts so far, including this one, net of successes; when the window ends)."""
    db = ctx().db
    key = _attempts_key(client_id)
    for _ in range(5):
        now = datetime.now(timezone.utc)
        doc = db.rate_limits.find_one_and_update({"_id": key, "expires_at": {"$gt": now}}, {"$inc": {"n": 1}},
                                                 return_document=ReturnDocument.AFTER)
        if doc is None:  # none, or one whose window ended (the TTL monitor has not removed it yet)
            until = now + timedelta(seconds=window_s)
            doc = db.rate_limits.find_one_and_update({"_id": key, "expires_at": {"$lte": now}},
                                                     {"$set": {"n": 1, "expires_at": until}},
                                                     return_document=ReturnDocument.AFTER)
            if doc is None:
                try:
                    db.rate_limits.insert_one({"_id": key, "n": 1, "expires_at": until})
                    return 1, until
                except DuplicateKeyError:
                    continue  # another request opened the window: count in it
        expires = doc["expires_at"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=timezone.utc)
        return doc["n"], expires
    return 1, datetime.now(timezone.utc) + timedelta(seconds=window_s)


def _forgive(client_id: str) -> None:
    """A successful attempt does not count against the limit."""
    ctx().db.rate_limits.update_one({"_id": _attempts_key(client_id), "n": {"$gt": 0}}, {"$inc": {"n": -1}})


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
@tokens.alt_response(429, description="too many failed attempts for this client id: temporarily_unavailable "
                                      "(problem + error, error_description) with Retry-After")
def token():
    """Client credentials grant: ``grant_type=client_credentials`` as a form body, the client id
    (the application id) and a client secret by HTTP Basic or in the body. 401 (problem with
    RFC 6749 ``error``) for a wrong or revoked secret, or an application that is not active; 429
    with ``Retry-After`` after too many failed attempts for the client id, until its window ends."""
    return server().create_token_response()
