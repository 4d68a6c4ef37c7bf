"""The platform console (``/platform``, docs/PORTAL.md part 2): regions and staff accounts.

Only for a session whose staff account is a platform admin (as ``POST /v1/sign-ins``
returned it); the calls carry a ``platform-admin`` token minted for this request.
"""
from __future__ import annotations

import re

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from .admin import LANGUAGES, after_of, api_errors, problem_text
from .client import ApiError
from .views import api, check_id, guarded, recheck_staff, send_invite, staff_account

bp = Blueprint("platform", __name__, url_prefix="/platform")

COUNTRIES = ("NL", "BE")
REGION_KINDS = ("zorggroep", "huisartsenkring", "regio-organisatie", "eerstelijnszone", "other")
STAFF_STATUSES = ("invited", "active", "revoked")


def _admit_platform_admin(_values: dict) -> None:
    recheck_staff()
    s = staff_account()
    if not s or not s.get("platform_admin"):
        abort(404)
    g.staff = s


platform_required = guarded(_admit_platform_admin)


def call(method: str, service: str, path: str, **kw):
    token = api().staff_platform_token(g.staff["id"])
    return api().call(service, method, path, token=token, request_id=g.get("request_id"), **kw)


def _all_regions() -> list[dict]:
    items, params = [], {"limit": 200}
    for _i in range(20):
        reply = call("GET", "members", "/v1/regions", params=params)
        items.extend(reply.data.get("items") or [])
        cursor = after_of(reply.data.get("next"))
        if not cursor:
            break
        params = {"limit": 200, "after": cursor}
    return sorted(items, key=lambda r: str(r.get("name", "")).lower())


@bp.get("")
@platform_required
def home():
    return render_template("platform/home.html", regions=_all_regions())


# -- regions ----------------------------------------------------------------------------------
def _region_values(source=None, region: dict | None = None) -> dict:
    if source is not None:
        return {k: source.get(k, "").strip() for k in ("id", "name", "country", "kind", "municipalities",
                                                          "quorum", "approval_threshold", "voting_period_days")}
    region = region or {}
    policy = region.get("mandate_policy") or {}
    return {"id": region.get("id", ""), "name": region.get("name", ""), "country": region.get("country", ""),
            "kind": region.get("kind", ""), "municipalities": "\n".join(region.get("municipalities") or []),
            "quorum": str(policy.get("quorum", "0.5")), "approval_threshold": str(policy.get("approval_threshold",
                                                                                             "0.5")),
            "voting_period_days": str(policy.get("voting_period_days", "14"))}


def _region_body(v: dict, *, create: bool) -> tuple[dict, dict]:
    errors: dict = {}
    body: dict = {"name": v["name"], "kind": v["kind"],
                  "municipalities": [t.strip() for t in re.split(r"[\r\n]+", v["municipalities"]) if t.strip()]}
    if create:
        body["id"], body["country"] = v["id"], v["country"]
    policy = {}
    for key, kind in (("quorum", float), ("approval_threshold", float), ("voting_period_days", int)):
        try:
            policy[key] = kind(v[key].replace(",", "."))
        except ValueError:
            errors[f"mandate_policy_{key}"] = [_("Enter a number.")]
    body["mandate_policy"] = policy
    return {k: x for k, x in body.items() if x not in ("", None)}, errors


def _region_form(v, *, region=None, etag="", errors=None, stale=False, status=200):
    return render_template("platform/region.html", v=v, region=region, etag=etag, errors=errors or {},
                           stale=stale, countries=COUNTRIES, kinds=REGION_KINDS), status


@bp.route("/regions/new", methods=["GET", "POST"])
@platform_required
def region_new():
    if request.method == "GET":
        return _region_form(_region_values(region={}))
    v = _region_values(request.form)
    body, errors = _region_body(v, create=True)
    if errors:
        return _region_form(v, errors=errors, status=422)
    try:
        call("POST", "members", "/v1/regions", json=body)
    except ApiError as e:
        if e.status in (401, 403):
            raise
        errors = api_errors(e)
        if e.status == 409 and not e.errors:
            errors = {"id": [_("This id is already taken.")]}
        return _region_form(v, errors=errors, status=422)
    flash(_("The region has been created."))
    return redirect(url_for("platform.home"))


@bp.route("/regions/<r>", methods=["GET", "POST"])
@platform_required
def region_edit(r):
    check_id(r)
    reply = call("GET", "members", f"/v1/regions/{r}")
    region, etag = reply.data, reply.etag or ""
    if request.method == "GET":
        return _region_form(_region_values(region=region), region=region, etag=etag)
    v = _region_values(request.form)
    v["id"], v["country"] = region.get("id", r), region.get("country", "")
    body, errors = _region_body(v, create=False)
    if errors:
        return _region_form(v, region=region, etag=etag, errors=errors, status=422)
    try:
        call("PATCH", "members", f"/v1/regions/{r}", json=body, if_match=request.form.get("etag") or None)
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        if e.status == 412:
            return _region_form(v, region=region, etag=etag, stale=True, status=409)
        return _region_form(v, region=region, etag=etag, errors=api_errors(e), status=422)
    flash(_("The region has been saved."))
    return redirect(url_for("platform.home"))


# -- staff accounts ---------------------------------------------------------------------------
@bp.get("/staff")
@platform_required
def staff():
    params: dict = {"limit": 50}
    errors: dict = {}
    for key in ("status", "region", "q"):
        v = request.args.get(key, "").strip()
        if not v:
            continue
        if key == "status" and v not in STAFF_STATUSES:
            errors[key] = [_("Choose one of the options.")]
        else:
            params[key] = v[:100]
    after = request.args.get("after", "").strip()[:200]
    if after:
        params["after"] = after
    try:
        reply = call("GET", "members", "/v1/staff", params=params)
        items, nxt = reply.data.get("items") or [], after_of(reply.data.get("next"))
    except ApiError as e:
        if e.status != 422:
            raise
        errors.update(api_errors(e))
        items, nxt = [], None
    args = {k: v for k, v in params.items() if k in ("status", "region", "q")}
    return render_template("platform/staff.html", items=items, args=args, errors=errors, next_after=nxt,
                           first_page=not after, statuses=STAFF_STATUSES), (422 if errors else 200)


def _staff_values(source=None, account: dict | None = None) -> dict:
    if source is not None:
        return {"email": source.get("email", "").strip(), "name": source.get("name", "").strip(),
                "language": source.get("language", "nl") if source.get("language") in LANGUAGES else "nl",
                "platform_admin": source.get("platform_admin") == "y",
                "admin_of": [x for x in source.getlist("admin_of") if x]}
    account = account or {}
    return {"email": account.get("email", ""), "name": account.get("name", ""),
            "language": account.get("language") or "nl", "platform_admin": bool(account.get("platform_admin")),
            "admin_of": list(account.get("admin_of") or [])}


def _staff_form(v, *, account=None, etag="", errors=None, stale=False, status=200):
    return render_template("platform/staff_form.html", v=v, account=account, etag=etag, errors=errors or {},
                           stale=stale, regions=_all_regions(), languages=LANGUAGES), status


@bp.route("/staff/new", methods=["GET", "POST"])
@platform_required
def staff_new():
    if request.method == "GET":
        return _staff_form(_staff_values(account={}))
    v = _staff_values(request.form)
    body = {k: x for k, x in v.items() if x not in ("", None)}
    body["platform_admin"], body["admin_of"] = v["platform_admin"], v["admin_of"]
    try:
        invited = call("POST", "members", "/v1/staff", json=body).data
    except ApiError as e:
        if e.status in (401, 403):
            raise
        errors = api_errors(e)
        if e.status == 409 and not e.errors:
            errors = {"email": [_("There is already an account with this e-mail address.")]}
        return _staff_form(v, errors=errors, status=422)
    place = _("the platform console") if v["platform_admin"] else ", ".join(v["admin_of"]) or "hecht"
    nxt = "/platform" if v["platform_admin"] else (f"/admin/{v['admin_of'][0]}" if v["admin_of"] else "/")
    send_invite(invited.get("email") or v["email"], nxt, v["language"], place)   # as stored, not as typed
    flash(_("The invitation has been sent to %(email)s.", email=v["email"]))
    return redirect(url_for("platform.staff"))


@bp.route("/staff/<s>", methods=["GET", "POST"])
@platform_required
def staff_edit(s):
    check_id(s)
    reply = call("GET", "members", f"/v1/staff/{s}")
    account, etag = reply.data, reply.etag or ""
    if request.method == "GET":
        return _staff_form(_staff_values(account=account), account=account, etag=etag)
    v = _staff_values(request.form)
    v["email"] = account.get("email", "")
    body = {"name": v["name"], "language": v["language"], "platform_admin": v["platform_admin"],
            "admin_of": v["admin_of"]}
    try:
        call("PATCH", "members", f"/v1/staff/{s}", json=body, if_match=request.form.get("etag") or None)
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        if e.status == 412:
            return _staff_form(v, account=account, etag=etag, stale=True, status=409)
        return _staff_form(v, account=account, etag=etag, errors=api_errors(e), status=422)
    flash(_("The account has been saved."))
    return redirect(url_for("platform.staff_edit", s=s))


@bp.post("/staff/<s>/revoke")
@platform_required
def staff_revoke(s):
    check_id(s)
    try:
        call("POST", "members", f"/v1/staff/{s}/revoke", json={})
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        flash(problem_text(e))
        return redirect(url_for("platform.staff_edit", s=s))
    flash(_("The account has been revoked: it can no longer sign in."))
    return redirect(url_for("platform.staff_edit", s=s))
