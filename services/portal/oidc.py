"""Optional sign-in through an OIDC provider (authorization-code flow, Authlib), off unless
``HECHT_PORTAL_OIDC_ISSUER`` and ``HECHT_PORTAL_OIDC_CLIENT_ID`` are set. E-mail links stay
the embedded default; a provider only replaces the proof of the address: the provider must
say the e-mail is verified, then the person is looked up exactly as after a link.

``HECHT_PORTAL_OIDC_ISSUER``         the issuer URL (its ``/.well-known/openid-configuration`` is read)
``HECHT_PORTAL_OIDC_CLIENT_ID``      the portal's client id at the provider
``HECHT_PORTAL_OIDC_CLIENT_SECRET``  its secret (confidential client)
``HECHT_PORTAL_OIDC_NAME``           the provider's name on the sign-in button (default "OIDC")
The redirect URI to register at the provider: ``$HECHT_PORTAL_URL/sign-in/oidc/callback``.
"""
from __future__ import annotations

import logging
import os

from flask import Blueprint, Flask, abort, current_app, request, session

log = logging.getLogger(__name__)
bp = Blueprint("oidc", __name__)


def enabled(app: Flask) -> bool:
    return "oidc" in app.extensions.get("portal", {})


def install(app: Flask) -> None:
    s = app.extensions["portal"]["settings"]
    app.jinja_env.globals["oidc_name"] = None
    if not (s.oidc_issuer and s.oidc_client_id):
        return
    from authlib.integrations.flask_client import OAuth
    oauth = OAuth(app)
    oauth.register("provider", client_id=s.oidc_client_id, client_secret=s.oidc_client_secret,
                   server_metadata_url=f"{s.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
                   client_kwargs={"scope": "openid email"})
    app.extensions["portal"]["oidc"] = oauth
    app.jinja_env.globals["oidc_name"] = os.environ.get("HECHT_PORTAL_OIDC_NAME", "OIDC")
    app.register_blueprint(bp)


@bp.get("/sign-in/oidc")
def start():
    from .views import safe_next
    oauth = current_app.extensions["portal"]["oidc"]
    session["oidc_next"] = safe_next(request.args.get("next"))
    redirect_uri = f"{current_app.extensions['portal']['settings'].portal_url}/sign-in/oidc/callback"
    try:
        return oauth.provider.authorize_redirect(redirect_uri)
    except Exception as e:  # noqa: BLE001 - the provider's metadata could not be read
        from .client import ApiUnavailable
        raise ApiUnavailable("oidc", type(e).__name__) from None


@bp.get("/sign-in/oidc/callback")
def callback():
    from authlib.common.errors import AuthlibBaseError

    from .views import _link_invalid, _start_session
    oauth = current_app.extensions["portal"]["oidc"]
    try:
        token = oauth.provider.authorize_access_token()
    except (AuthlibBaseError, ValueError, KeyError) as e:
        log.warning("OIDC sign-in refused", extra={"error": type(e).__name__})
        return _link_invalid()
    claims = token.get("userinfo") or {}
    email = claims.get("email")
    if not email or claims.get("email_verified") is not True:
        # Only a verified address may stand in for a used e-mail link.
        abort(403)
    return _start_session(email, session.pop("oidc_next", "/"))
