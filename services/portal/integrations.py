"""Integrators' self-service pages (``/integrations``; docs/PORTAL.md part 3).

An integrator application is held by the person whose address notify's
``POST /v1/integrator-sign-ins`` named at sign-in (``session["integrators"]``, looked up again
every HECHT_PORTAL_STAFF_RECHECK_S). Each page under ``/integrations/<r>/<app>`` checks the
session holds ``app`` in ``r`` and calls notify with an integrator token minted for this
request (``sub`` = the application id): notify decides what that application may see, so
another application's subscription or delivery is a 404 there and here.

The event catalogue and the signature guide are public: they describe the API, not anyone's data.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _, ngettext

from . import fielderrors
from .admin import api_errors as _api_errors, problem_text
from .client import ApiError
from .i18n import moment_of
from .views import api, check_id, guarded, integrator_apps, public, recheck_integrators, settings

bp = Blueprint("integrations", __name__, url_prefix="/integrations")

SIGNATURES = ("v1", "v1a")
MAX_SECRETS = 2


# -- access -----------------------------------------------------------------------------------
def _admit_integrator(values: dict) -> None:
    r = check_id(values["r"])
    recheck_integrators()
    apps = integrator_apps(r)
    if not apps:
        abort(404)
    g.region, g.apps = r, apps
    app_id = values.get("app")
    if app_id is not None:
        check_id(app_id)
        g.app = next((a for a in apps if a["id"] == app_id), None)
        if g.app is None:
            abort(404)  # another integrator's id, or one this person does not hold


integrator_required = guarded(_admit_integrator)


def call(method: str, path: str, **kw):
    """A call to notify as the application ``g.app``: a token minted for this request only."""
    token = api().integrator_token(g.region, g.app["id"])
    return api().call("notify", method, path, token=token, request_id=g.get("request_id"), **kw)


def apath(suffix: str = "") -> str:
    return f"/v1/regions/{g.region}/integrators/{g.app['id']}{suffix}"


def spath(suffix: str = "") -> str:
    return f"/v1/regions/{g.region}/subscriptions{suffix}"


def _application() -> dict:
    data = call("GET", apath()).data
    if data.get("id") != g.app["id"] or data.get("region") not in (None, g.region):
        abort(404)
    if data.get("status") not in ("invited", "active"):
        abort(404)  # suspended or deleted since the last look-up: access ends now
    return data


def _subscription(s: str) -> tuple[dict, str | None]:
    reply = call("GET", spath(f"/{check_id(s)}"))
    doc = reply.data
    # Defence in depth: notify already answers 404 for another application's subscription.
    if doc.get("id") != s or doc.get("region") not in (None, g.region) or doc.get("owner") not in (None, g.app["id"]):
        abort(404)
    return doc, reply.etag


def api_errors(e: ApiError) -> dict[str, list[str]]:
    return fielderrors.merge_lists(_api_errors(e), "event_types")


LOCAL = ZoneInfo("Europe/Brussels")  # the pages' time zone (BABEL_DEFAULT_TIMEZONE): NL and BE share it


@bp.app_template_filter("rate")
def rate(value) -> str:
    """A rate limit (deliveries per second) in the person's number format: 5, 2,5 or 2.5."""
    from flask_babel import format_decimal
    try:
        return format_decimal(float(value), format="#,##0.##")
    except (TypeError, ValueError):
        return str(value)


# -- the catalogue ----------------------------------------------------------------------------
def event_types() -> list[dict]:
    items = public("GET", "notify", "/v1/event-types").data.get("items") or []
    out = []
    for e in items:
        if not isinstance(e, dict) or not e.get("type"):
            continue
        out.append(dict(e, schema_json=json.dumps(e.get("schema") or {}, indent=2, ensure_ascii=False),
                        example_json=json.dumps(e.get("example") or {}, indent=2, ensure_ascii=False)))
    return sorted(out, key=lambda e: e["type"])


def families(types: list[dict]) -> list[str]:
    return sorted({f"{e['type'].split('.', 1)[0]}.*" for e in types if "." in e["type"]})


def matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def allowed_choices(types: list[dict], patterns: list[str]) -> list[str]:
    """What the picker offers: the families the application holds whole (``agreement.*``),
    then every single event type one of its patterns allows."""
    fams = [f for f in families(types) if f in patterns or "*" in patterns]
    singles = [e["type"] for e in types if any(matches(p, e["type"]) for p in patterns)]
    return fams + singles


@bp.get("/catalogue")
def catalogue():
    types = event_types()
    groups: dict[str, list[dict]] = {}
    for e in types:
        groups.setdefault(e["type"].split(".", 1)[0], []).append(e)
    return render_template("integrations/catalogue.html", groups=groups)


@bp.get("/verify-signatures")
def verify():
    return render_template("integrations/verify.html")


# -- an integrator's applications -------------------------------------------------------------
@bp.get("/<r>")
@integrator_required
def region(r):
    return render_template("integrations/region.html", apps=g.apps)


def _subscriptions() -> list[dict]:
    items, params = [], {"limit": 200}
    reply = call("GET", spath(), params=params)
    for doc in reply.data.get("items") or []:
        if doc.get("owner") in (None, g.app["id"]):
            items.append(doc)
    return items


def _app_page(*, new_secret=None, errors=None, status=200):
    app = _application()
    secrets = [x for x in (app.get("secrets") or []) if isinstance(x, dict)]
    return render_template("integrations/app.html", app=app, secrets=secrets, subscriptions=_subscriptions(),
                           new_secret=new_secret, errors=errors or {}, max_secrets=MAX_SECRETS,
                           token_url=f"{settings().notify_public_url}/oauth/token"), status


@bp.get("/<r>/<app>")
@integrator_required
def application(r, app):
    return _app_page()


@bp.post("/<r>/<app>/secrets")
@integrator_required
def secret_create(r, app):
    try:
        reply = call("POST", apath("/secrets"), json={})
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        if e.status == 409:
            return _app_page(errors={"secrets": [_("An application has at most two active client secrets. "
                                                   "Revoke one before you create another.")]}, status=409)
        return _app_page(errors={"secrets": [problem_text(e)]}, status=422)
    return _app_page(new_secret=reply.data, status=201)


@bp.get("/<r>/<app>/secrets")
@bp.get("/<r>/<app>/secrets/<sid>/revoke")
@integrator_required
def secrets_get(r, app, sid=None):
    """A reload of the page a POST answered (htmx shows the form's URL): back to the application;
    a secret shown once is not shown again."""
    return redirect(url_for("integrations.application", r=r, app=app))


@bp.post("/<r>/<app>/secrets/<sid>/revoke")
@integrator_required
def secret_revoke(r, app, sid):
    call("DELETE", apath(f"/secrets/{check_id(sid)}"))
    flash(_("The client secret has been revoked: tokens can no longer be requested with it."))
    return redirect(url_for("integrations.application", r=r, app=app))


# -- subscriptions ----------------------------------------------------------------------------
def _form_values(source=None) -> dict:
    if source is None:
        return {"url": "", "description": "", "event_types": [], "rate_limit": "", "signature": "v1"}
    return {"url": source.get("url", "").strip(), "description": source.get("description", "").strip(),
            "event_types": source.getlist("event_types"), "rate_limit": source.get("rate_limit", "").strip(),
            "signature": source.get("signature", "v1")}


def _new_page(app, values, *, errors=None, status=200):
    choices = allowed_choices(event_types(), app.get("event_types") or [])
    return render_template("integrations/subscription_new.html", app=app, v=values, choices=choices,
                           errors=errors or {}, signatures=SIGNATURES), status


@bp.route("/<r>/<app>/subscriptions/new", methods=["GET", "POST"])
@integrator_required
def subscription_new(r, app):
    application = _application()
    if request.method == "GET":
        return _new_page(application, _form_values())
    values = _form_values(request.form)
    errors: dict[str, list[str]] = {}
    body: dict = {"url": values["url"], "event_types": values["event_types"], "description": values["description"],
                  "signature": values["signature"] if values["signature"] in SIGNATURES else "v1"}
    if values["rate_limit"]:
        try:
            body["rate_limit"] = float(values["rate_limit"].replace(",", "."))
        except ValueError:
            errors["rate_limit"] = [_("Enter a number.")]
    else:
        body["rate_limit"] = None
    if not values["event_types"]:
        errors["event_types"] = [_("Choose at least one event type.")]
    if errors:
        return _new_page(application, values, errors=errors, status=422)
    try:
        reply = call("POST", spath(), json=body)
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        return _new_page(application, values, errors=api_errors(e), status=422)
    return render_template("integrations/subscription_created.html", app=application, sub=reply.data,
                           secret=reply.data.get("secret"), public_key=reply.data.get("public_key")), 201


def _deliveries(s: str, args: dict) -> tuple[list[dict], str | None, dict]:
    from .admin import after_of
    params: dict = {"limit": 25}
    errors = {}
    status = args.get("status", "").strip()
    if status:
        if status in ("pending", "succeeded", "failed"):
            params["status"] = status
        else:
            errors["status"] = [_("Choose one of the options.")]
    after = args.get("after", "").strip()[:200]
    if after:
        params["after"] = after
    reply = call("GET", spath(f"/{s}/deliveries"), params=params)
    return reply.data.get("items") or [], after_of(reply.data.get("next")), errors


def _subscription_page(s: str, *, errors=None, message=None, secret=None, public_key=None, stale=False,
                       since="", status=200):
    application = _application()
    sub, etag = _subscription(s)
    deliveries, next_after, filter_errors = _deliveries(s, request.args)
    errors = dict(errors or {}, **filter_errors)
    if not since:  # the replay form starts an hour back
        since = (datetime.now(LOCAL) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    return render_template("integrations/subscription.html", app=application, sub=sub, etag=etag or "",
                           deliveries=deliveries, next_after=next_after, first_page=not request.args.get("after"),
                           filter_status=request.args.get("status", ""), errors=errors, message=message,
                           secret=secret, public_key=public_key, stale=stale, since=since), \
        (422 if filter_errors and status == 200 else status)


@bp.get("/<r>/<app>/subscriptions/<s>")
@integrator_required
def subscription(r, app, s):
    return _subscription_page(s)


@bp.get("/<r>/<app>/subscriptions/<s>/<action>")
@integrator_required
def subscription_action_get(r, app, s, action):
    if action not in ("pause", "resume", "ping", "rotate", "replay"):
        abort(404)
    return redirect(url_for("integrations.subscription", r=r, app=app, s=check_id(s)))


@bp.post("/<r>/<app>/subscriptions/<s>/<action>")
@integrator_required
def subscription_action(r, app, s, action):
    check_id(s)
    if action not in ("pause", "resume", "ping", "rotate", "replay"):
        abort(404)
    _subscription(s)  # another application's subscription: 404 before anything is sent
    try:
        if action in ("pause", "resume"):
            call("PATCH", spath(f"/{s}"), json={"enabled": action == "resume"},
                 if_match=request.form.get("etag") or None)
            flash(_("The subscription has been paused.") if action == "pause"
                  else _("The subscription has been resumed."))
        elif action == "ping":
            call("POST", spath(f"/{s}/ping"))
            flash(_("A test event has been sent. Its attempt appears in the delivery log below."))
        elif action == "rotate":
            reply = call("POST", spath(f"/{s}/rotate-secret"), json={})
            return _subscription_page(s, secret=reply.data.get("secret"), public_key=reply.data.get("public_key"),
                                      message=_("A new signing key has been made. The previous one keeps signing "
                                                "for 24 hours, so you can switch without losing deliveries."))
        else:
            since = request.form.get("since", "").strip()
            moment = moment_of(since, LOCAL)  # a datetime-local field: the pages' time zone
            if moment is None:
                return _subscription_page(s, errors={"since": [_("Enter a date and time.")]}, since=since,
                                          status=422)
            try:
                reply = call("POST", spath(f"/{s}/replay"), json={"since": moment.isoformat()})
            except ApiError as e:
                if e.status in (401, 403, 404):
                    raise
                return _subscription_page(s, errors=api_errors(e), since=since, status=422)
            matched, created, reopened = (int(reply.data.get(k) or 0) for k in ("matched", "created", "reopened"))
            flash(_("Replay queued: %(events)s since then, %(deliveries)s, %(again)s.",
                    events=ngettext("%(num)s event", "%(num)s events", matched),
                    deliveries=ngettext("%(num)s new delivery", "%(num)s new deliveries", created),
                    again=ngettext("%(num)s sent again", "%(num)s sent again", reopened)))
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        if e.status == 412:
            return _subscription_page(s, stale=True, status=409)
        return _subscription_page(s, errors={"": [problem_text(e)]}, status=409)
    return redirect(url_for("integrations.subscription", r=r, app=app, s=s))


@bp.route("/<r>/<app>/subscriptions/<s>/delete", methods=["GET", "POST"])
@integrator_required
def subscription_delete(r, app, s):
    application = _application()
    sub, etag = _subscription(s)
    errors: dict = {}
    if request.method == "POST":
        if request.form.get("confirm") != "yes":
            errors = {"confirm": [_("Tick the box to confirm.")]}
        else:
            try:
                call("DELETE", spath(f"/{s}"), if_match=request.form.get("etag") or None)
            except ApiError as e:
                if e.status in (401, 403, 404):
                    raise
                return _subscription_page(s, stale=e.status == 412,
                                          errors={} if e.status == 412 else {"": [problem_text(e)]}, status=409)
            flash(_("The subscription has been deleted."))
            return redirect(url_for("integrations.application", r=r, app=app))
    return render_template("integrations/subscription_delete.html", app=application, sub=sub, etag=etag or "",
                           errors=errors), (422 if errors else 200)


@bp.get("/<r>/<app>/subscriptions/<s>/deliveries/<d>")
@integrator_required
def delivery(r, app, s, d):
    application = _application()
    sub, _etag = _subscription(s)
    doc = call("GET", spath(f"/{s}/deliveries/{check_id(d)}")).data
    if doc.get("id") != d or doc.get("subscription_id") not in (None, s):
        abort(404)
    return render_template("integrations/delivery.html", app=application, sub=sub, d=doc)


@bp.post("/<r>/<app>/subscriptions/<s>/deliveries/<d>/retry")
@integrator_required
def delivery_retry(r, app, s, d):
    _subscription(s)
    try:
        call("POST", spath(f"/{s}/deliveries/{check_id(d)}/retry"))
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        flash(problem_text(e))
        return redirect(url_for("integrations.delivery", r=r, app=app, s=s, d=d))
    flash(_("The delivery has been queued again."))
    return redirect(url_for("integrations.delivery", r=r, app=app, s=s, d=d))
