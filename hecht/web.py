"""App-factory helpers shared by the three services.

``create_service_app`` is the common table of contents: logging, request ids
and trace context, auth, RFC 9457 problem responses for every error, health,
readiness, metrics and the OpenAPI document. Views stay thin: they translate
HTTP into a handler call and back.
"""
from __future__ import annotations

import http
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Iterable

from flask import Flask, Response, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from marshmallow import Schema, fields, validate, EXCLUDE, INCLUDE
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest,
                               multiprocess, REGISTRY)
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
from werkzeug.exceptions import HTTPException

from . import audit, auth, jsondepth, logs, mongo
from .proxies import TrustedProxies, parse_networks
from .config import Settings, require_safe, settings as load_settings
from .errors import (Conflict, Forbidden, HechtError, Invalid, InvalidTransition, NotFound, PreconditionFailed,
                     PreconditionRequired, TooManyRequests, Unauthorized, Unavailable)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# One table from error class to HTTP status (most specific first).
ERROR_STATUS: list[tuple[type[HechtError], int]] = [
    (InvalidTransition, 409), (Conflict, 409), (Invalid, 422), (NotFound, 404),
    (PreconditionFailed, 412), (PreconditionRequired, 428), (Unauthorized, 401), (Forbidden, 403),
    (TooManyRequests, 429), (Unavailable, 503), (HechtError, 400),
]

HTTP_REQUESTS = Counter("hecht_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
HTTP_LATENCY = Histogram("hecht_http_request_seconds", "HTTP request latency", ["service", "route"])

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


# --------------------------------------------------------------------------------------------
# Per-app context
# --------------------------------------------------------------------------------------------
@dataclass
class ServiceContext:
    """What a request needs from the platform: settings, the database, per-service stores."""
    settings: Settings
    index_setup: Callable[[Database], None] | None = None
    extras: dict = field(default_factory=dict)
    _indexes_ready: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def db(self) -> Database:
        return mongo.database(self.settings.mongo_uri, self.settings.database_name)

    def ensure_indexes(self) -> None:
        """Once per process, on first use: start-up must not need the database to be up."""
        if self._indexes_ready:
            return
        with self._lock:
            if not self._indexes_ready:
                ensure_platform_indexes(self.db)
                if self.index_setup:
                    self.index_setup(self.db)
                self._indexes_ready = True


def ctx() -> ServiceContext:
    return current_app.extensions["hecht"]


def ensure_platform_indexes(db: Database) -> None:
    """TTL indexes: idempotency records and rate-limit windows go once ``expires_at`` has passed.

    The server's TTL monitor deletes them in the background (MongoDB: a pass every 60 s), so
    an expired record may still be read for a while: readers filter on ``expires_at`` too.
    """
    ensure_ttl_index(db.idempotency, "expires_at", 0)
    ensure_ttl_index(db.rate_limits, "expires_at", 0)


def ensure_ttl_index(collection, field: str, expire_after_s: int, **kwargs) -> None:
    """A TTL index on ``field``, also where a plain index (or another expiry) on it exists.

    Earlier releases had plain indexes on the same keys: creating the TTL index over one is
    an index-options conflict, so the existing index is converted with ``collMod`` (or, on a
    server that cannot convert it, dropped and created again).
    """
    try:
        collection.create_index([(field, ASCENDING)], expireAfterSeconds=expire_after_s, **kwargs)
        return
    except OperationFailure as e:
        if e.code not in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
            raise
    name = kwargs.get("name") or f"{field}_1"
    try:
        collection.database.command("collMod", collection.name,
                                    index={"name": name, "expireAfterSeconds": expire_after_s})
    except OperationFailure:
        collection.drop_index(name)
        collection.create_index([(field, ASCENDING)], expireAfterSeconds=expire_after_s, **kwargs)


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------
def problem(status: int, title: str, detail: str | None = None, *, slug: str | None = None,
            errors: Any = None, headers: dict | None = None, **extra) -> Response:
    body = {"type": f"urn:hecht:problem:{slug}" if slug else "about:blank", "title": title,
            "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.path if request else None
    if errors:
        body["errors"] = errors
    body.update({k: v for k, v in extra.items() if v is not None})
    rid = g.get("request_id") if g else None
    if rid:
        body["request_id"] = rid
    resp = Response(json.dumps(body, default=str), status=status, mimetype=PROBLEM_JSON)
    for k, v in (headers or {}).items():
        resp.headers[k] = str(v)
    return resp


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _handle_hecht_error(e: HechtError) -> Response:
    status = next(code for cls, code in ERROR_STATUS if isinstance(e, cls))
    headers = {}
    if isinstance(e, TooManyRequests):
        headers["Retry-After"] = e.retry_after
    if isinstance(e, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="hecht"'
    if isinstance(e, Unavailable):
        headers["Retry-After"] = 5
    return problem(status, e.title, e.detail, slug=_slug(type(e).__name__), errors=e.errors,
                   headers=headers, **e.extra)


def _handle_http_exception(e: HTTPException) -> Response:
    status = e.code or 500
    errors = None
    data = getattr(e, "data", None) or {}
    messages = data.get("messages") if isinstance(data, dict) else None
    detail = e.description
    if messages:
        # webargs groups messages by location; the body's field map is what clients need.
        errors = messages.get("json", messages) if isinstance(messages, dict) and len(messages) == 1 else messages
        if status == 422:
            detail = "the request body has invalid fields"
        if status == 400 and errors == ["Invalid JSON body."] or errors == {"json": ["Invalid JSON body."]}:
            detail, errors = "the request body is not valid JSON", None
    if status == 413:
        detail = f"the request body exceeds {current_app.config.get('MAX_CONTENT_LENGTH')} bytes"
    headers = {}
    if status == 405 and getattr(e, "valid_methods", None):
        headers["Allow"] = ", ".join(e.valid_methods)
    return problem(status, e.name, detail, errors=errors, headers=headers)


def _handle_mongo_error(e: PyMongoError) -> Response:
    log.error("database unavailable", extra={"error": f"{type(e).__name__}: {e}"})
    return problem(503, "Service unavailable", "the database is not reachable; retry shortly",
                   slug="database-unavailable", headers={"Retry-After": 5})


def _handle_unexpected(e: Exception) -> Response:
    log.exception("unhandled error")
    return problem(500, "Internal server error", "an unexpected error occurred; it has been logged",
                   slug="internal")


# --------------------------------------------------------------------------------------------
# Auth helpers used by views
# --------------------------------------------------------------------------------------------
def principal() -> auth.Principal | None:
    return g.get("principal")


def require(*roles: str, region: str | None = None) -> auth.Principal:
    """The caller, if it has a token, acts in ``region`` and holds one of ``roles``.

    Another region's resources answer 404, not 403: a tenant must not learn
    what exists elsewhere.
    """
    p = principal()
    if p is None:
        raise Unauthorized("a bearer token is required")
    if region is not None and not p.may_act_in(region):
        raise NotFound(f"region {region} not found")
    if roles and not (p.has(*roles) or p.is_platform_admin):
        raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")
    return p


def public(view: Callable) -> Callable:
    """Mark a view as callable without a token (e.g. GP sign-up); every other view needs one."""
    view.hecht_public = True
    return view


def allow(*roles: str) -> Callable[[Callable], Callable]:
    """Declare which roles may call a view; checked before the body is parsed.

    Place it right under the route decorator. platform-admin may do anything.
    Views still check finer rules themselves (a GP acting on their own record).
    """
    def mark(view: Callable) -> Callable:
        view.hecht_roles = frozenset(roles)
        return view
    return mark


def _authenticate_before_parsing() -> None:
    """Token presence and region scope, checked before any body is parsed.

    So a caller without a valid token for the region learns nothing, not even
    which fields a body needs (no 422 before the 401/404). Roles are checked
    by the views (``require``), which know which roles an operation allows.
    """
    endpoint = request.endpoint or ""
    if not endpoint or endpoint.startswith(("ops.", "api-docs.")):
        return
    view = current_app.view_functions.get(endpoint)
    if getattr(view, "hecht_public", False):
        return
    p = principal()
    if p is None:
        raise Unauthorized("a bearer token is required")
    region = (request.view_args or {}).get("region_id")
    if region is not None and not p.may_act_in(region):
        raise NotFound(f"region {region} not found")
    roles = getattr(view, "hecht_roles", None)
    if roles and not (p.has(*roles) or p.is_platform_admin):
        raise Forbidden(f"this needs one of the roles: {', '.join(sorted(roles))}")
    member = (request.view_args or {}).get("member_id")
    if member is not None and p.has("gp") and not p.has("region-admin", "platform-admin") \
            and p.member != member:
        # A GP acts only on their own record and ballot, whatever the operation.
        raise Forbidden("a GP may act only on their own member record")


# --------------------------------------------------------------------------------------------
# ETag / If-Match
# --------------------------------------------------------------------------------------------
def etag(version: int) -> str:
    return f'"{version}"'


def check_if_match(version: int, *, required: bool = False) -> None:
    header = request.headers.get("If-Match")
    if header is None:
        if required:
            raise PreconditionRequired("send If-Match with the ETag you read, to avoid overwriting a change")
        return
    tags = {t.strip() for t in header.split(",")}
    if "*" not in tags and etag(version) not in tags and f"W/{etag(version)}" not in tags:
        raise PreconditionFailed(f"the resource has changed (current ETag {etag(version)}); read it again")


def conditional_version(version: int) -> int | None:
    """``version`` checked against If-Match; the version the write must be guarded by, or None.

    None when the client sent no If-Match: it asked for the change on whatever is current,
    so a handler that loses a race to another writer re-reads and re-applies (the domain
    rules are checked again) instead of answering 412 to a request that set no condition.
    """
    check_if_match(version)
    return version if request.headers.get("If-Match") is not None else None


# --------------------------------------------------------------------------------------------
# Idempotency-Key
# --------------------------------------------------------------------------------------------
def idempotent(view: Callable) -> Callable:
    """Replay the first response to a retried POST that carries the same Idempotency-Key.

    A key reused with a different body is refused (422); a retry while the
    first request is still running gets 409 rather than a second execution.
    """
    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if not key:
            return view(*args, **kwargs)
        if len(key) > 255:
            raise Invalid("Idempotency-Key is too long", errors={"Idempotency-Key": ["at most 255 characters"]})
        p = principal()
        scope = p.sub if p else (request.remote_addr or "anonymous")
        rid = hashlib.sha256(f"{scope}\0{request.method}\0{request.path}\0{key}".encode()).hexdigest()
        fingerprint = hashlib.sha256(request.get_data() or b"").hexdigest()
        db = ctx().db
        now = datetime.now(timezone.utc)
        # ``path`` lets a service forget the stored replies about one resource (GDPR erasure).
        mine = {"_id": rid, "run": secrets.token_hex(8)}  # this execution's record, not a successor's
        record = {**mine, "state": "running", "fingerprint": fingerprint, "path": request.path,
                  "created_at": now, "expires_at": now + timedelta(seconds=ctx().settings.idempotency_ttl_s)}
        prior = _claim_idempotency_key(db, record, now)
        if prior is not None:
            if prior.get("fingerprint") != fingerprint:
                raise Invalid("this Idempotency-Key was used with a different request body",
                              errors={"Idempotency-Key": ["reused with a different body"]})
            if prior.get("state") != "done":
                raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly")
            resp = Response(prior["body"], status=prior["status"], mimetype=prior["mimetype"])
            for k, v in prior.get("headers", {}).items():
                resp.headers[k] = v
            resp.headers["Idempotent-Replayed"] = "true"
            return resp
        try:
            resp = current_app.make_response(view(*args, **kwargs))
        except HechtError as e:
            resp = _handle_hecht_error(e)
        except BaseException:
            db.idempotency.delete_one(mine)
            raise
        if resp.status_code >= 500:
            db.idempotency.delete_one(mine)
        else:
            keep = {k: v for k, v in resp.headers.items() if k in ("Location", "ETag")}
            db.idempotency.update_one(mine, {"$set": {
                "state": "done", "status": resp.status_code, "body": resp.get_data(),
                "mimetype": resp.mimetype, "headers": keep}})
        return resp
    return wrapper


def _claim_idempotency_key(db: Database, record: dict, now: datetime) -> dict | None:
    """Store ``record`` for a key seen for the first time; else the live record stored before.

    A record past its ``expires_at`` counts as absent even before the TTL monitor has
    deleted it: it is replaced, atomically, so of two requests racing for an expired key
    exactly one runs. The record may vanish between our insert and our read (the monitor):
    then we try again.
    """
    for _ in range(5):
        try:
            db.idempotency.insert_one(record)
            return None
        except DuplicateKeyError:
            pass
        prior = db.idempotency.find_one({"_id": record["_id"], "expires_at": {"$gt": now}})
        if prior is not None:
            return prior
        replaced = db.idempotency.find_one_and_replace({"_id": record["_id"], "expires_at": {"$lte": now}},
                                                       record)
        if replaced is not None:
            return None
    raise Conflict("a request with this Idempotency-Key is still being processed; retry shortly")


# --------------------------------------------------------------------------------------------
# Rate limiting (fixed window, shared by every worker through the database)
# --------------------------------------------------------------------------------------------
CLIENT_HEADER = "X-Hecht-Client"


def client_address() -> str:
    """Whom a per-client limit counts: the connection's address, or, for a request the portal
    makes on a person's behalf, the person's address it forwards in ``X-Hecht-Client``.

    Without this every sign-up made through the portal would share the portal's one bucket.
    The header is believed only with a valid pure ``portal`` token (authentication, not network
    position), so nobody else can choose their own bucket.
    """
    p = principal()
    forwarded = (request.headers.get(CLIENT_HEADER) or "").strip()
    if forwarded and p is not None and p.is_portal:
        return forwarded[:64]
    return request.remote_addr or "unknown"


def rate_limit(bucket: str, limit: int, window_s: int) -> None:
    """At most ``limit`` calls per client address in each fixed window of ``window_s``.

    A window's counter is only read during its window and expires when the window ends (TTL
    index), so one the TTL monitor has not removed yet is never read again."""
    now = time.time()
    window = int(now // window_s)
    client = client_address()
    def count():
        return ctx().db.rate_limits.find_one_and_update(
            {"_id": f"{bucket}:{client}:{window}"},
            {"$inc": {"n": 1}, "$setOnInsert": {
                "expires_at": datetime.fromtimestamp((window + 1) * window_s, timezone.utc)}},
            upsert=True, return_document=ReturnDocument.AFTER)
    doc = None
    for _ in range(3):
        try:
            doc = count()
        except DuplicateKeyError:
            # Two first requests of a window raced to insert the counter: an upsert can fail
            # on the _id index when another one inserted between its match and its insert
            # (MongoDB retries some of these itself, not all). It exists now: try again.
            continue
        if doc is not None:
            break
        # An upsert returning no document breaks its contract; SecantusDB 0.7 did so about
        # once in 1,500 racing first requests of a window. Counting again is safe.
    if doc is None:
        log.warning("rate-limit counter not readable; request let through", extra={"bucket": bucket})
        return
    if doc["n"] > limit:
        retry = max(1, int((window + 1) * window_s - now) + 1)
        raise TooManyRequests(f"at most {limit} requests per {window_s} s from one address", retry)


# --------------------------------------------------------------------------------------------
# Cursor pagination
# --------------------------------------------------------------------------------------------
class PageArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # the same query string also carries the filters

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200),
                           metadata={"description": "items per page (1–200)"})
    after = fields.String(load_default=None, validate=validate.Length(max=512),
                          metadata={"description": "the id of the last item already seen (the `next` link "
                                                   "carries it); items come in id order, ids are time-ordered"})


# A resource's history, as the members and agreements services show it.
class EventSchema(Schema):
    """A CloudEvent as stored in the history, with who caused it."""
    id = fields.String()
    type = fields.String()
    source = fields.String()
    subject = fields.String()
    time = fields.String()
    sequence = fields.Integer()
    data = fields.Dict()
    actor = fields.Dict(allow_none=True, metadata={
        "description": "who made the change: the token's sub and roles, or for a public call a keyed hash of "
                       "the client's address (`client`); `system:<service>` for workers. Never in published events"})


class HistorySchema(Schema):
    items = fields.List(fields.Nested(EventSchema))


class PageSchema(Schema):
    next = fields.String(allow_none=True, metadata={"description": "URL of the next page, or null"})


def paginate(collection, query: dict, *, limit: int, after: str | None,
             projection: dict | None = None) -> tuple[list[dict], str | None]:
    """A page in ``_id`` order (ids are time-ordered), and the URL of the next one.

    The cursor is simply the last id seen: any string is a valid cursor, the
    order is stable under concurrent inserts, and the query uses the _id index.
    """
    if after:
        query = {"$and": [query, {"_id": {"$gt": after}}]}
    docs = list(collection.find(query, projection).sort("_id", ASCENDING).limit(limit + 1))
    next_url = None
    if len(docs) > limit:
        docs = docs[:limit]
        args = request.args.to_dict()
        args["after"] = str(docs[-1]["_id"])
        args["limit"] = str(limit)
        from urllib.parse import urlencode
        next_url = f"{request.path}?{urlencode(args)}"
    return docs, next_url


def new_id(prefix: str) -> str:
    """Time-ordered, unguessable ids: a stable pagination order, and no enumeration."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


# --------------------------------------------------------------------------------------------
# Readiness
# --------------------------------------------------------------------------------------------
_kafka_probe_cache: dict[str, tuple[float, bool, str]] = {}


def kafka_ready(settings: Settings) -> tuple[bool, str]:
    """A real metadata request, cached for 2 s so probes do not hammer the broker."""
    key = settings.kafka_bootstrap_servers
    hit = _kafka_probe_cache.get(key)
    if hit and time.monotonic() - hit[0] < 2:
        return hit[1], hit[2]
    from kafka import KafkaAdminClient
    try:
        admin = KafkaAdminClient(bootstrap_servers=key, request_timeout_ms=2000,
                                 bootstrap_timeout_ms=2000, client_id="hecht-readyz")
        try:
            admin.list_topics()
        finally:
            admin.close()
        result = (True, "ok")
    except Exception as e:  # noqa: BLE001
        result = (False, f"{type(e).__name__}")
    _kafka_probe_cache[key] = (time.monotonic(), *result)
    return result


# --------------------------------------------------------------------------------------------
# The factory
# --------------------------------------------------------------------------------------------
class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error response of every service is shaped."""

    class Meta:
        unknown = INCLUDE  # extension members, e.g. current_status or checks

    type = fields.String(metadata={"example": "urn:hecht:problem:invalid"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    instance = fields.String(allow_none=True)
    errors = fields.Raw(metadata={"description": "field-by-field messages"})
    request_id = fields.String()


class _Api(Api):
    """flask-smorest documents errors as its own JSON shape; ours are problem+json."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self):
        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "An error (RFC 9457 problem details)", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)

class _JSONProvider(DefaultJSONProvider):
    @staticmethod
    def default(o):
        if isinstance(o, datetime):
            return o.isoformat().replace("+00:00", "Z")
        if isinstance(o, date):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


def create_service_app(service: str, *, title: str, description: str, blueprints: Iterable,
                       index_setup: Callable[[Database], None] | None = None,
                       test_config: dict | None = None) -> Flask:
    settings = (test_config or {}).get("HECHT_SETTINGS") or load_settings(service)
    # Production (HECHT_ENV unset) without a secret, issuer or audience: refuse to start.
    require_safe(settings)
    logs.setup(service, settings.log_level)
    app = Flask(f"hecht.{service}")
    app.json_provider_class = _JSONProvider
    app.json = _JSONProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE=title,
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_REDOC_PATH="docs",
        # Vendored (hecht/static/redoc): practice and hospital networks often have no internet.
        OPENAPI_REDOC_URL=REDOC_SCRIPT_PATH,
        API_SPEC_OPTIONS={
            "info": {"description": description},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                          "bearerFormat": "JWT"}}},
            "security": [{"bearer": []}],
        },
    )
    app.config.update({k: v for k, v in (test_config or {}).items() if k != "HECHT_SETTINGS"})
    app.extensions["hecht"] = ServiceContext(settings=settings, index_setup=index_setup)
    # Forwarded headers count only from the proxies named in HECHT_TRUSTED_PROXIES (none by default).
    app.wsgi_app = TrustedProxies(app.wsgi_app, parse_networks(settings.trusted_proxies))

    api = _Api(app)
    for bp in blueprints:
        api.register_blueprint(bp)

    _install_hooks(app, service)
    app.register_error_handler(HechtError, _handle_hecht_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(PyMongoError, _handle_mongo_error)
    app.register_error_handler(Exception, _handle_unexpected)
    _install_ops_routes(app, service)
    return app


def _install_hooks(app: Flask, service: str) -> None:
    @app.before_request
    def _start():
        g.started = time.perf_counter()
        rid = request.headers.get("X-Request-Id", "")
        g.request_id = rid if _REQUEST_ID_RE.match(rid) else uuid.uuid4().hex
        m = _TRACEPARENT_RE.match(request.headers.get("traceparent", ""))
        trace = m.group(1) if m else secrets.token_hex(16)
        g.traceparent = f"00-{trace}-{secrets.token_hex(8)}-01"
        logs.request_id.set(g.request_id)
        logs.trace_id.set(trace)
        limit = ctx().settings.max_uri_bytes
        if _request_uri_length() > limit:
            # Below gunicorn's own limit (deploy/gunicorn.conf.py), so the answer is a problem.
            return problem(414, "URI Too Long", f"the request URI exceeds {limit} bytes", slug="uri-too-long")
        header = request.headers.get("Authorization")
        g.principal = None
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("use 'Authorization: Bearer <token>'")
            g.principal = auth.decode(token.strip(), ctx().settings)
        # Who this request's changes are recorded as (hecht/audit.py); set for every request so
        # nothing of an earlier one on this thread can leak into it.
        audit.actor.set(audit.of_request(g.principal, client_address(), ctx().settings.jwt_secret))
        _authenticate_before_parsing()
        if request.method in ("POST", "PUT", "PATCH") and request.content_length:
            if not request.is_json:
                return problem(415, "Unsupported Media Type",
                               "send the request body as application/json")
        if request.content_length or request.headers.get("Transfer-Encoding"):
            # Before anything parses it (webargs, get_json): Python's json recurses per bracket.
            depth = ctx().settings.max_json_depth
            if jsondepth.exceeds(request.get_data(cache=True), depth):
                return problem(400, "Bad Request", f"the request body nests arrays and objects deeper than "
                               f"{depth} levels", slug="json-too-deep")
        if request.endpoint and not request.endpoint.startswith(("ops.", "api-docs.")):
            ctx().ensure_indexes()

    @app.after_request
    def _finish(resp: Response) -> Response:
        resp.headers["X-Request-Id"] = g.get("request_id", "")
        # Every response, the docs and the OpenAPI document included: never sniffed into HTML.
        resp.headers["X-Content-Type-Options"] = "nosniff"
        route = request.url_rule.rule if request.url_rule else "unmatched"
        HTTP_REQUESTS.labels(service, request.method, route, resp.status_code).inc()
        if "started" in g:
            elapsed = time.perf_counter() - g.started
            HTTP_LATENCY.labels(service, route).observe(elapsed)
            if route not in ("/healthz", "/metrics", "/readyz"):
                log.info("request", extra={"method": request.method, "path": request.path,
                                           "status": resp.status_code, "ms": round(elapsed * 1000, 1),
                                           "client": request.remote_addr})  # forwarded only via a trusted proxy
        return resp


def _request_uri_length() -> int:
    """Bytes of the request target as the client sent it (gunicorn's RAW_URI)."""
    env = request.environ
    raw = env.get("RAW_URI") or env.get("REQUEST_URI")
    if raw is not None:
        return len(raw.encode("latin-1", "replace"))
    query = env.get("QUERY_STRING", "")
    return len((env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", "")).encode("latin-1", "replace")) \
        + (len(query) + 1 if query else 0)


REDOC_SCRIPT_PATH = "/docs/redoc.standalone.js"
REDOC_DIR = Path(__file__).resolve().parent / "static" / "redoc"


def metrics_response() -> Response:
    """This process's metrics, or with gunicorn (PROMETHEUS_MULTIPROC_DIR) all its workers' summed."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _install_ops_routes(app: Flask, service: str) -> None:
    from flask import Blueprint, send_from_directory
    ops = Blueprint("ops", __name__)

    @ops.get(REDOC_SCRIPT_PATH)
    def redoc_script():
        return send_from_directory(REDOC_DIR, "redoc.standalone.js", max_age=86400)

    @ops.get("/healthz")
    def healthz():
        return {"status": "ok", "service": service}

    @ops.get("/readyz")
    def readyz():
        checks = {}
        try:
            ctx().db.command("ping")
            checks["mongodb"] = "ok"
        except PyMongoError as e:
            checks["mongodb"] = type(e).__name__
        ok, detail = kafka_ready(ctx().settings)
        checks["kafka"] = detail
        ready = all(v == "ok" for v in checks.values())
        if ready:
            return {"status": "ready", "checks": checks}
        return problem(503, "Not ready", "a dependency is not reachable", slug="not-ready", checks=checks)

    @ops.get("/metrics")
    def metrics():
        return metrics_response()

    app.register_blueprint(ops)
