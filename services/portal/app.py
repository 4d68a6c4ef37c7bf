"""``create_app()``: the portal's Flask app, run by gunicorn like the services
(``gunicorn -c deploy/gunicorn.conf.py 'services.portal.app:create_app()'``, port 8000)."""
from __future__ import annotations

import logging
import os
import secrets
import time
from datetime import timedelta
from urllib.parse import quote

from flask import Flask, Response, g, render_template, request
from flask_babel import Babel
from flask_wtf.csrf import CSRFError, CSRFProtect
from pymongo.errors import PyMongoError
from werkzeug.exceptions import HTTPException

from hecht import logs
from hecht.proxies import TrustedProxies, parse_networks
from hecht.web import HTTP_LATENCY, HTTP_REQUESTS, metrics_response

from . import config, i18n
from .client import Api, ApiError, ApiUnavailable
from .sessions import MongoSessionInterface
from .store import Store

log = logging.getLogger(__name__)
SERVICE = "portal"


def create_app(test_config: dict | None = None) -> Flask:
    settings = config.load()
    logs.setup(SERVICE, settings.hecht.log_level)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=64 * 1024,
        WTF_CSRF_TIME_LIMIT=None,   # the token lives as long as the session
        WTF_CSRF_SSL_STRICT=False,  # behind TLS-terminating proxies the Referer check misfires
        BABEL_DEFAULT_LOCALE="nl",
        BABEL_DEFAULT_TIMEZONE="Europe/Brussels",  # NL and BE share CET/CEST
        BABEL_TRANSLATION_DIRECTORIES=os.path.join(app.root_path, "translations"),
        SESSION_COOKIE_NAME="hecht_session",
        TEMPLATES_AUTO_RELOAD=settings.development,
    )
    app.config.update(test_config or {})
    # Behind TLS-terminating proxies the client's address (the sign-in rate limit per client)
    # and scheme come from X-Forwarded-*, believed only from the peers HECHT_TRUSTED_PROXIES
    # names, as in the services (a hop count would believe whoever connects directly).
    app.wsgi_app = TrustedProxies(app.wsgi_app, parse_networks(settings.hecht.trusted_proxies))
    if os.environ.get("HECHT_PORTAL_PROXIES", "").strip() not in ("", "0"):
        log.warning("HECHT_PORTAL_PROXIES is no longer read: name the proxies' addresses in "
                    "HECHT_TRUSTED_PROXIES (CIDRs), or every client shares the proxy's sign-in limit")
    store = Store(settings.hecht.mongo_uri, settings.hecht.database_name)
    app.extensions["portal"] = {"settings": settings, "store": store, "api": Api(settings)}
    app.session_interface = MongoSessionInterface(store, timedelta(hours=settings.session_hours),
                                                  secure=settings.cookie_secure)
    CSRFProtect(app)
    Babel(app, locale_selector=i18n.select_locale)
    i18n.install(app)

    from . import admin, integrations, oidc, platform, views
    app.register_blueprint(views.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(integrations.bp)
    app.register_blueprint(platform.bp)
    oidc.install(app)
    _install_ops(app, store)
    _install_hooks(app)
    _install_errors(app)
    return app


def _install_hooks(app: Flask) -> None:
    from .views import signed_in

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        g.request_id = secrets.token_hex(16)
        logs.request_id.set(g.request_id)

    @app.after_request
    def _finish(resp: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        HTTP_REQUESTS.labels(SERVICE, request.method, route, resp.status_code).inc()
        if "started" in g:
            HTTP_LATENCY.labels(SERVICE, route).observe(time.perf_counter() - g.started)
        resp.headers["X-Request-Id"] = g.get("request_id", "")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        # No inline scripts or styles anywhere: a strict policy costs nothing.
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'")
        if request.endpoint != "static" and signed_in():
            # Whatever a signed-in session is answered (pages, my-data.json, capacity.csv,
            # redirects) is that person's: no shared or browser cache may keep it.
            resp.headers["Cache-Control"] = "no-store"
        if request.endpoint != "static" and resp.mimetype == "text/html":
            resp.headers.setdefault("Cache-Control", "no-store")
            if request.headers.get("HX-Request") and request.method == "GET":
                # htmx (hx-boost) follows a redirect inside its request: show the final URL,
                # percent-encoded (a raw CR/LF or non-Latin-1 character is not a valid header).
                resp.headers["HX-Push-Url"] = push_url()
        return resp


# RFC 3986: unreserved and sub-delims, plus the separators a path or query keeps as they are.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?%"


def push_url() -> str:
    """The request's path and query as a header value: ASCII only, no control characters.
    The path is werkzeug's decoded one, encoded again; the query is the bytes the client
    sent, with anything outside the safe set (controls, spaces, non-ASCII) encoded."""
    url = quote(request.path, safe=_PATH_SAFE)
    qs = request.query_string.decode("latin-1")
    if qs:
        url += "?" + quote(qs, safe=_QUERY_SAFE, encoding="latin-1")
    return url


def _install_ops(app: Flask, store: Store) -> None:
    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "service": SERVICE}

    @app.get("/readyz")
    def readyz():
        ok = store.ping()
        body = {"status": "ready" if ok else "not ready", "checks": {"mongodb": "ok" if ok else "unreachable"}}
        return body, 200 if ok else 503

    @app.get("/metrics")
    def metrics():
        return metrics_response()


def _page(template: str, status: int, **ctx):
    try:
        return render_template(template, **ctx), status
    except Exception:  # noqa: BLE001 - an error page must never fail in turn
        log.exception("error page failed to render")
        return Response(f"{status}", status=status, mimetype="text/plain")


def _install_errors(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(e):
        return _page("error.html", 400, kind="csrf")

    @app.errorhandler(ApiUnavailable)
    def api_down(e):
        log.warning("service unavailable", extra={"service": e.service, "detail": str(e)})
        return _page("error.html", 503, kind="unavailable")

    @app.errorhandler(PyMongoError)
    def db_down(e):
        log.warning("portal database unavailable", extra={"error": type(e).__name__})
        return _page("error.html", 503, kind="unavailable")

    @app.errorhandler(ApiError)
    def api_error(e):
        # 403/404 from a service: the page does not exist for this person.
        if e.status in (401, 403, 404):
            return _page("error.html", 404, kind="not-found")
        if e.status == 429:
            return _page("error.html", 429, kind="rate-limited")
        return _page("error.html", 400, kind="api", detail=e.title)

    @app.errorhandler(HTTPException)
    def http_error(e):
        kind = {404: "not-found", 405: "method", 413: "too-large", 429: "rate-limited"}.get(e.code, "bad-request")
        return _page("error.html", e.code or 400, kind=kind)

    @app.errorhandler(Exception)
    def unexpected(e):
        log.exception("unexpected error")
        return _page("error.html", 500, kind="unexpected")
