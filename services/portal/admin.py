"""The region console (``/admin/<r>``, docs/PORTAL.md part 2): pages for region staff.

Every page checks that the session's staff account (as ``POST /v1/sign-ins`` returned it)
is an admin of ``r`` (or a platform admin), then calls the APIs with a region-admin token
for ``r`` minted for this request. Anything else is a 404 page; the services check again.
"""
from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _, ngettext

from . import fielderrors
from .client import ApiError
from .i18n import moment_of
from .labels import label
from .views import (api, check_id, guarded, may_admin, recheck_staff, reverify_state, send_invite,
                    staff_account)

bp = Blueprint("admin", __name__, url_prefix="/admin/<r>")

MEMBER_STATUSES = ("pending", "active", "suspended", "left", "rejected", "erased")
MEMBER_ROLES = ("member", "board", "chair", "secretary", "care-pathway-promoter", "cra")
CAPACITY = ("open", "limited", "closed", "unknown")
AGREEMENT_STATUSES = ("draft", "in_consultation", "mandated", "rejected", "active", "expired", "terminated",
                      "superseded")
THEMES = ("chronic-care", "frail-elderly", "out-of-hours", "mental-health", "data-exchange", "labour-market",
          "prevention", "medication", "other")
PARTNER_KINDS = ("hospital", "municipality", "home-nursing", "pharmacy", "mental-health", "social-domain",
                 "out-of-hours-post", "nursing-home", "other")
NOTIFICATION_STATUSES = ("queued", "sent", "failed")
LANGUAGES = ("nl", "fr", "en")
ROWS = {"partners": ("name", "kind", "identifier"), "commitments": ("party", "text"), "documents": ("title", "url")}
MIN_ROWS = {"partners": 2, "commitments": 2, "documents": 1}
MAX_ROWS = 50


# -- access -----------------------------------------------------------------------------------
def _admit_staff(values: dict) -> None:
    r = check_id(values["r"])
    recheck_staff()
    if not may_admin(r):
        abort(404)
    g.region, g.staff = r, staff_account()
    if session.get("admin_region") != r:
        session["admin_region"] = r


staff_required = guarded(_admit_staff)


def call(method: str, service: str, path: str, **kw):
    """A call as region-admin of ``g.region``: a token minted for this request only."""
    token = api().staff_region_token(g.region, g.staff["id"])
    return api().call(service, method, path, token=token, request_id=g.get("request_id"), **kw)


def rpath(suffix: str = "") -> str:
    return f"/v1/regions/{g.region}{suffix}"


def after_of(next_url: str | None) -> str | None:
    """The cursor in an API's ``next`` URL."""
    if not next_url:
        return None
    values = parse_qs(urlsplit(next_url).query).get("after")
    return values[0] if values else None


def _own(doc: dict) -> dict:
    """Defence in depth: never render another region's record."""
    if doc.get("region_id") not in (None, g.region):
        abort(404)
    return doc


def _region() -> tuple[dict, str | None]:
    reply = call("GET", "members", rpath())
    if reply.data.get("id") not in (None, g.region):
        abort(404)
    return reply.data, reply.etag


def api_errors(e: ApiError) -> dict[str, list[str]]:
    errors = fielderrors.flatten(e.errors) if e.errors else {}
    for k in ("_schema", "json", "_"):
        if k in errors:
            errors.setdefault("", []).extend(errors.pop(k))
    if not errors:
        errors = {"": [problem_text(e)]}
    return errors


def problem_text(e: ApiError) -> str:
    """A conflict or refusal from the API (in English), in the person's language where known."""
    title = e.title
    if e.status == 412:
        return _("This was changed by someone else in the meantime. Nothing has been saved.")
    if "chair" in title.lower():
        return _("This region already has a chair. Take the role away from the current chair first.")
    if title:
        return _("This is not possible now (%(reason)s).", reason=title)
    return _("This is not possible now.")


# -- who acted: names, not ids -----------------------------------------------------------
ACTOR = re.compile(r"^(staff|member):([A-Za-z0-9_-]{1,64})$")
NAMES_PER_CALL = 100


def _looked_up(path: str, ids, extra: dict | None = None) -> list[dict]:
    """The items a members lookup (``?ids=``) answers, at most NAMES_PER_CALL ids a call; a
    refusal leaves the names out (the ids are shown then), never an error page."""
    ids = sorted(set(ids))
    out: list[dict] = []
    for i in range(0, len(ids), NAMES_PER_CALL):
        try:
            reply = call("GET", "members", rpath(path),
                         params={"ids": ",".join(ids[i:i + NAMES_PER_CALL]), **(extra or {})})
        except ApiError:
            continue
        out.extend(x for x in reply.data.get("items") or [] if isinstance(x, dict))
    return out


def staff_names(ids) -> dict[str, str]:
    """Staff ids → names, as the region may know them (its admins, now or before, and platform
    admins; no addresses): ``GET /v1/regions/{r}/staff/names``."""
    return {x["id"]: str(x["name"]) for x in _looked_up("/staff/names", ids) if x.get("id") and x.get("name")}


def member_names(ids) -> dict[str, str]:
    """Member ids → names (region staff may read their members): ``GET …/members?ids=``."""
    return {m["id"]: member_name(m, m["id"]) for m in _looked_up("/members", ids, {"limit": NAMES_PER_CALL})
            if m.get("id") and m.get("region_id") in (None, g.region)}


def named(history: list[dict]) -> list[dict]:
    """A history whose ``staff:<id>`` and ``member:<id>`` actors carry their ``name`` (the
    timeline shows it and keeps the id in a tooltip); two lookups for the whole history."""
    wanted: dict[str, set] = {"staff": set(), "member": set()}
    for e in history:
        a = e.get("actor") if isinstance(e, dict) else None
        m = ACTOR.match(str(a.get("sub") or "")) if isinstance(a, dict) else None
        if m:
            wanted[m[1]].add(m[2])
    names = {f"staff:{k}": v for k, v in (staff_names(wanted["staff"]) if wanted["staff"] else {}).items()}
    names.update({f"member:{k}": v for k, v in (member_names(wanted["member"]) if wanted["member"] else {}).items()})
    for e in history:
        a = e.get("actor") if isinstance(e, dict) else None
        if isinstance(a, dict) and names.get(str(a.get("sub"))):
            e["actor"] = dict(a, name=names[str(a.get("sub"))])
    return history


def _date(value) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def time_left(deadline) -> str:
    d = moment_of(deadline)
    if d is None:
        return ""
    left = d - datetime.now(timezone.utc)
    if left.total_seconds() <= 0:
        return _("the deadline has passed")
    days, hours, minutes = left.days, left.seconds // 3600, (left.seconds % 3600) // 60
    if days:
        return _("%(larger)s and %(smaller)s left", larger=ngettext("%(num)s day", "%(num)s days", days),
                 smaller=ngettext("%(num)s hour", "%(num)s hours", hours))
    return _("%(larger)s and %(smaller)s left", larger=ngettext("%(num)s hour", "%(num)s hours", hours),
             smaller=ngettext("%(num)s minute", "%(num)s minutes", minutes))


# -- dashboard --------------------------------------------------------------------------------
def _count(status: str, pages: int = 5) -> tuple[int, bool]:
    n, params = 0, {"status": status, "limit": 200}
    for _i in range(pages):
        reply = call("GET", "members", rpath("/members"), params=params)
        n += len(reply.data.get("items") or [])
        cursor = after_of(reply.data.get("next"))
        if not cursor:
            return n, False
        params = dict(params, after=cursor)
    return n, True


def _agreements(**params) -> list[dict]:
    params.setdefault("limit", 200)
    items = call("GET", "agreements", rpath("/agreements"), params=params).data.get("items") or []
    return [_own(a) for a in items]


@bp.get("")
@staff_required
def dashboard(r):
    region, _etag = _region()
    counts = {s: _count(s) for s in ("pending", "active", "suspended")}
    pending = call("GET", "members", rpath("/members"),
                   params={"status": "pending", "limit": 10}).data.get("items") or []
    open_votes = [dict(a, time_left=time_left((a.get("mandate") or {}).get("deadline")))
                  for a in _agreements(status="in_consultation")
                  if (a.get("mandate") or {}).get("status") == "open"]
    soon = date.today() + timedelta(days=60)
    due = []
    active = _agreements(status="active")
    for a in active:
        review = _date(a.get("review_due_on") or a.get("review_date"))
        until = _date(a.get("effective_until"))
        if (review and review <= soon) or (until and until <= soon):
            due.append(dict(a, review=review, until=until))
    capacity = call("GET", "members", rpath("/capacity")).data
    return render_template("admin/dashboard.html", region=region, counts=counts, pending=pending,
                           open_votes=open_votes, due=due, active=active, capacity=capacity)


# -- members ----------------------------------------------------------------------------------
MEMBER_FILTERS = {"status": MEMBER_STATUSES, "role": MEMBER_ROLES, "capacity": CAPACITY,
                  "email_verified": ("true", "false"), "outside_region": ("true",), "reverify_due": ("true",)}


def outside_region(member: dict, region: dict) -> bool:
    """A practice outside the region's municipalities: flagged to staff, since an
    assembly's electorate leaves such a member out."""
    town = (member.get("practice") or {}).get("municipality")
    if not town or member.get("status") in ("erased", "left", "rejected"):
        return False
    return town.casefold() not in {t.casefold() for t in region.get("municipalities") or []}


@bp.get("/members")
@staff_required
def members(r):
    region, _etag = _region()
    args, errors = {}, {}
    for name, allowed in MEMBER_FILTERS.items():
        v = request.args.get(name, "").strip()
        if v:
            if v in allowed:
                args[name] = v
            else:
                errors[name] = [_("Choose one of the options.")]
    town = request.args.get("municipality", "").strip()
    if town:
        if town in (region.get("municipalities") or []):
            args["municipality"] = town
        else:
            errors["municipality"] = [_("Choose one of the options.")]
    q = request.args.get("q", "").strip()
    if q:
        if len(q) <= 100:
            args["q"] = q
        else:
            errors["q"] = [ngettext("Use at most %(num)s character.", "Use at most %(num)s characters.", 100)]
    after = request.args.get("after", "").strip()[:200]
    limit = request.args.get("limit", "")
    if limit.isdigit() and 1 <= int(limit) <= 200:
        args["limit"] = int(limit)  # kept in the paging links
    params = dict(args)
    params.setdefault("limit", 50)
    if after:
        params["after"] = after
    try:
        reply = call("GET", "members", rpath("/members"), params=params)
    except ApiError as e:
        if e.status != 422:
            raise
        errors.update(api_errors(e))
        reply = None
    items = [dict(_own(m), outside=outside_region(m, region), reverify=reverify_state(m))
             for m in (reply.data.get("items") or [])] \
        if reply else []
    nxt = after_of(reply.data.get("next")) if reply else None
    return render_template("admin/members.html", region=region, items=items, args=args, raw=request.args,
                           errors=errors, next_after=nxt, first_page=not after,
                           statuses=MEMBER_STATUSES, roles=MEMBER_ROLES, capacities=CAPACITY), \
        (422 if errors else 200)


def _member(m: str) -> tuple[dict, str | None]:
    reply = call("GET", "members", rpath(f"/members/{check_id(m)}"))
    if reply.data.get("id") != m:
        abort(404)
    return _own(reply.data), reply.etag


def _member_page(m: str, *, errors=None, message=None, stale=False, given=None, status=200):
    member, etag = _member(m)
    region, _etag = _region()
    history = named(call("GET", "members", rpath(f"/members/{m}/history")).data.get("items") or [])
    return render_template("admin/member.html", member=member, etag=etag or "", history=history,
                           errors=errors or {}, message=message, stale=stale, given=given or {},
                           roles=MEMBER_ROLES, outside=outside_region(member, region),
                           reverify=reverify_state(member),
                           schemes=[(s, label(s, "scheme")) for s in schemes_of(region)],
                           country=region.get("country")), status


def schemes_of(region: dict) -> tuple[str, ...]:
    """The registration schemes a region accepts (the members service checks again)."""
    return ("RIZIV",) if region.get("country") == "BE" else ("BIG", "AGB")


def registration_errors(e: ApiError) -> dict:
    """A registration correction's errors next to its two fields (``registration_scheme``,
    ``registration_number``); a duplicate registration (409) next to the number."""
    errors = api_errors(e)
    if e.status == 409 and not e.errors:
        return {"registration_number": [problem_text(e)]}
    return errors


@bp.get("/members/<m>")
@staff_required
def member(r, m):
    return _member_page(m)


# action → needs a reason; "reconfirm" is staff confirming the registration is still valid
ACTIONS = {"approve": False, "reject": True, "suspend": True, "reinstate": False, "reconfirm": False}


def _done_message(action: str) -> str:
    return {"approve": _("The sign-up has been approved."), "reject": _("The sign-up has been rejected."),
            "suspend": _("The member has been suspended."), "reinstate": _("The member has been reinstated."),
            "roles": _("The roles have been saved."),
            "registration": _("The registration has been corrected."),
            "reconfirm": _("The registration has been confirmed as still valid.")}[action]


@bp.post("/members/<m>/<action>")
@staff_required
def member_action(r, m, action):
    check_id(m)
    if action not in ACTIONS and action not in ("roles", "registration"):
        abort(404)
    etag = request.form.get("etag", "").strip() or None
    given: dict = {}
    kw: dict = {}
    if action == "roles":
        chosen = [x for x in request.form.getlist("roles") if x in MEMBER_ROLES]
        given["roles"] = chosen
        method, path, kw["json"] = "PUT", rpath(f"/members/{m}/roles"), {"roles": chosen}
    elif action == "registration":
        # A correction (a new RIZIV competence code, a renewed BIG number): the sign-up's checks apply.
        reg = {"scheme": request.form.get("scheme", "").strip()[:10],
               "number": request.form.get("number", "").strip()[:40]}
        given["registration"] = reg
        if not reg["number"]:
            return _member_page(m, errors={"registration_number": [_("This field is required.")]}, given=given,
                                status=422)
        method, path, kw["json"] = "PATCH", rpath(f"/members/{m}"), {"registration": reg}
    else:
        method, path = "POST", rpath(f"/members/{m}/{action}")
        if ACTIONS[action]:
            reason = request.form.get("reason", "").strip()
            given[f"{action}_reason"] = reason
            if not reason:
                return _member_page(m, errors={f"{action}_reason": [_("Give a reason.")]}, given=given, status=422)
            kw["json"] = {"reason": reason}
        elif action == "reconfirm":
            kw["json"] = {}
    try:
        call(method, "members", path, if_match=etag, **kw)
    except ApiError as e:
        if e.status in (404, 401, 403):
            raise
        if e.status == 412:
            return _member_page(m, stale=True, given=given, status=409)
        if action == "registration" and e.status in (409, 422):
            return _member_page(m, errors=registration_errors(e), given=given, status=e.status)
        if e.status == 422 and e.errors:
            errs = {(f"{action}_{k}" if k in ("reason",) else k): v for k, v in api_errors(e).items()}
            return _member_page(m, errors=errs, given=given, status=422)
        key = "roles" if action == "roles" else ""
        return _member_page(m, errors={key: [problem_text(e)]} if key else {"": [problem_text(e)]},
                            given=given, status=409)
    flash(_done_message(action))
    return redirect(url_for("admin.member", r=r, m=m))


@bp.route("/members/<m>/erase", methods=["GET", "POST"])
@staff_required
def member_erase(r, m):
    member, etag = _member(m)
    errors: dict = {}
    status = 200
    if request.method == "POST":
        if request.form.get("confirm") != "y":
            errors = {"confirm": [_("Tick the box to confirm.")]}
            status = 422
        else:
            try:
                call("DELETE", "members", rpath(f"/members/{m}"), if_match=request.form.get("etag") or None)
            except ApiError as e:
                if e.status in (404, 401, 403):
                    raise
                return _member_page(m, stale=e.status == 412,
                                    errors={} if e.status == 412 else {"": [problem_text(e)]}, status=409)
            flash(_("The member's personal data has been erased."))
            return redirect(url_for("admin.members", r=r))
    return render_template("admin/member_erase.html", member=member, etag=etag or "", errors=errors), status


# -- agreements -------------------------------------------------------------------------------
AGREEMENT_FILTERS = ("status", "theme", "partner", "municipality")


@bp.get("/agreements")
@staff_required
def agreements(r):
    region, _etag = _region()
    args, errors = {}, {}
    for name in AGREEMENT_FILTERS:
        v = request.args.get(name, "").strip()
        if not v:
            continue
        allowed = {"status": AGREEMENT_STATUSES, "theme": THEMES,
                   "municipality": region.get("municipalities") or []}.get(name)
        if (allowed is not None and v not in allowed) or len(v) > 200:
            errors[name] = [_("Choose one of the options.")]
        else:
            args[name] = v
    after = request.args.get("after", "").strip()[:200]
    params = dict(args, limit=50)
    if after:
        params["after"] = after
    reply = call("GET", "agreements", rpath("/agreements"), params=params)
    items = [_own(a) for a in reply.data.get("items") or []]
    return render_template("admin/agreements.html", region=region, items=items, args=args, errors=errors,
                           next_after=after_of(reply.data.get("next")), first_page=not after,
                           statuses=AGREEMENT_STATUSES, themes=THEMES), (422 if errors else 200)


def _rows_from(source: dict | None, group: str, agreement: dict | None = None) -> list[dict]:
    fields = ROWS[group]
    if source is not None:
        idx = set()
        for key in source.keys():
            m = re.fullmatch(rf"{group}-(\d{{1,2}})-(\w+)", key)
            if m and m.group(2) in fields:
                idx.add(int(m.group(1)))
        rows = [{f: str(source.get(f"{group}-{i}-{f}", "")).strip() for f in fields} for i in sorted(idx)]
    else:
        rows = [{f: str(x.get(f) or "") for f in fields} for x in (agreement or {}).get(group) or []]
    return [row for row in rows if any(v for f, v in row.items() if f != "kind")][:MAX_ROWS]


def _padded(rows: list[dict], group: str, extra: int = 0) -> list[dict]:
    empty = {f: "" for f in ROWS[group]}
    want = max(MIN_ROWS[group], len(rows) + 1) + extra
    return (rows + [dict(empty) for _i in range(want - len(rows))])[:MAX_ROWS]


def _editor_values(source=None, agreement: dict | None = None) -> dict:
    """The editor's values: what was posted (compacted), or the agreement's."""
    if source is not None:
        v = {k: str(source.get(k, "")).strip() for k in ("title", "theme", "summary", "effective_from",
                                                         "effective_until", "review_date")}
        v["municipalities"] = [x for x in source.getlist("municipalities")]
    else:
        a = agreement or {}
        v = {k: str(a.get(k) or "") for k in ("title", "theme", "summary", "effective_from",
                                              "effective_until", "review_date")}
        v["municipalities"] = list(a.get("municipalities") or [])
    for group in ROWS:
        v[group] = _rows_from(source, group, agreement)
    return v


def _editor_body(v: dict, *, full: bool) -> dict:
    body: dict = {}
    for k in ("title", "theme"):
        if v[k] or full:
            body[k] = v[k]
    body["summary"] = v["summary"]
    if v["effective_from"]:
        body["effective_from"] = v["effective_from"]
    body["effective_until"] = v["effective_until"] or None
    body["review_date"] = v["review_date"] or None
    body["municipalities"] = v["municipalities"]
    body["partners"] = [{k: x for k, x in row.items() if x or k != "identifier"} for row in v["partners"]]
    body["commitments"] = v["commitments"]
    body["documents"] = v["documents"]
    return body


def _editor_errors(e: ApiError) -> dict:
    errors = api_errors(e)
    for group in ("partners", "commitments", "municipalities", "documents"):
        if group in errors:  # the list itself (e.g. none given)
            errors[group] = [_("Add at least one row.") if group in ("partners", "commitments") else m
                             for m in errors[group]]
    return errors


def _editor(region: dict, values: dict, *, agreement=None, etag="", errors=None, stale=False, current=None,
            add: str | None = None, status=200, history=None):
    rows = {g_: _padded(values[g_], g_, 1 if add == g_ else 0) for g_ in ROWS}
    return render_template("admin/agreement_edit.html", region=region, v=values, rows=rows, agreement=agreement,
                           etag=etag, errors=errors or {}, stale=stale, current=current, themes=THEMES,
                           kinds=PARTNER_KINDS, history=history or []), status


@bp.route("/agreements/new", methods=["GET", "POST"])
@staff_required
def agreement_new(r):
    region, _etag = _region()
    if request.method == "GET":
        return _editor(region, _editor_values(agreement={}))
    values = _editor_values(request.form)
    add = request.form.get("add")
    if add in ROWS:
        return _editor(region, values, add=add)
    try:
        reply = call("POST", "agreements", rpath("/agreements"), json=_editor_body(values, full=False))
    except ApiError as e:
        if e.status != 422:
            raise
        return _editor(region, values, errors=_editor_errors(e), status=422)
    flash(_("The draft has been saved."))
    return redirect(url_for("admin.agreement", r=r, a=reply.data.get("id")))


def _agreement(a: str) -> tuple[dict, str | None]:
    reply = call("GET", "agreements", rpath(f"/agreements/{check_id(a)}"))
    if reply.data.get("id") != a:
        abort(404)
    return _own(reply.data), reply.etag


def _history(a: str) -> list[dict]:
    return named(call("GET", "agreements", rpath(f"/agreements/{a}/history")).data.get("items") or [])


def _agreement_page(a: str, *, errors=None, message=None, reason="", status=200):
    region, _etag = _region()
    agreement, etag = _agreement(a)
    if agreement.get("status") == "draft":
        return _editor(region, _editor_values(agreement=agreement), agreement=agreement, etag=etag or "",
                       errors=errors, status=status, history=_history(a))
    mandate = agreement.get("mandate") or None
    left = time_left(mandate.get("deadline")) if mandate and mandate.get("status") == "open" else ""
    return render_template("admin/agreement.html", region=region, agreement=agreement, etag=etag or "",
                           mandate=mandate, time_left=left, history=_history(a), errors=errors or {},
                           message=message, reason=reason), status


@bp.get("/agreements/<a>")
@staff_required
def agreement(r, a):
    return _agreement_page(a)


@bp.post("/agreements/<a>")
@staff_required
def agreement_save(r, a):
    region, _etag = _region()
    values = _editor_values(request.form)
    add = request.form.get("add")
    agreement_doc, current_etag = _agreement(a)
    if agreement_doc.get("status") != "draft":
        return _agreement_page(a, errors={"": [_("Only a draft can be edited.")]}, status=409)
    if add in ROWS:
        return _editor(region, values, agreement=agreement_doc, etag=request.form.get("etag", ""), add=add,
                       history=_history(a))
    try:
        call("PATCH", "agreements", rpath(f"/agreements/{a}"), json=_editor_body(values, full=True),
             if_match=request.form.get("etag") or "\"-1\"")
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        if e.status in (412, 428):
            # Someone saved in between: show theirs next to this person's input; save nothing.
            return _editor(region, values, agreement=agreement_doc, etag=current_etag or "", stale=True,
                           current=agreement_doc, status=409, history=_history(a))
        if e.status == 422:
            return _editor(region, values, agreement=agreement_doc, etag=request.form.get("etag", ""),
                           errors=_editor_errors(e), status=422, history=_history(a))
        return _editor(region, values, agreement=agreement_doc, etag=current_etag or "",
                       errors={"": [problem_text(e)]}, status=409, history=_history(a))
    flash(_("The draft has been saved."))
    return redirect(url_for("admin.agreement", r=r, a=a))


AGREEMENT_ACTIONS = {"open-vote": ("POST", "/mandate"), "sign": ("POST", "/sign"), "terminate": ("POST", "/terminate"),
                     "amend": ("POST", "/amendments")}


@bp.route("/agreements/<a>/close-vote", methods=["GET", "POST"])
@staff_required
def agreement_close_vote(r, a):
    """Closing a vote early is a confirmation step, like erasure: the GET page (and a
    POST without ``confirm``) states the turnout so far and what closing means; only a POST
    with ``confirm=y`` closes. Works without JavaScript."""
    def page(message=None, status=200):
        agreement, etag = _agreement(a)
        mandate = agreement.get("mandate") or {}
        if agreement.get("status") != "in_consultation" or mandate.get("status") != "open":
            flash(_("The vote is not open (any more): nothing to close."))
            return redirect(url_for("admin.agreement", r=r, a=a))
        region, _etag = _region()
        return render_template("admin/close_vote.html", region=region, agreement=agreement, mandate=mandate,
                               etag=etag or "", time_left=time_left(mandate.get("deadline")),
                               message=message), status

    if request.method == "GET" or request.form.get("confirm") != "y":
        return page()
    try:
        call("POST", "agreements", rpath(f"/agreements/{check_id(a)}/mandate/close"),
             if_match=request.form.get("etag") or None)
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        if e.status == 412:   # a vote came in meanwhile: the turnout shown is no longer the turnout
            return page(_("This was changed by someone else in the meantime. Nothing has been done; check the "
                          "current state below."), 409)
        return _agreement_page(a, errors={"": [problem_text(e)]}, status=409)
    flash(_("The vote has been closed."))
    return redirect(url_for("admin.agreement", r=r, a=a))


@bp.post("/agreements/<a>/<action>")
@staff_required
def agreement_action(r, a, action):
    check_id(a)
    if action not in AGREEMENT_ACTIONS:
        abort(404)
    method, suffix = AGREEMENT_ACTIONS[action]
    kw: dict = {}
    reason = ""
    if action == "terminate":
        reason = request.form.get("reason", "").strip()
        if not reason:
            return _agreement_page(a, errors={"reason": [_("Give a reason.")]}, status=422)
        kw["json"] = {"reason": reason}
    elif action in ("open-vote", "amend"):
        kw["json"] = {}
    if action != "amend":
        kw["if_match"] = request.form.get("etag") or None
    try:
        reply = call(method, "agreements", rpath(f"/agreements/{a}{suffix}"), **kw)
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        if e.status == 412:
            return _agreement_page(a, message=_("This was changed by someone else in the meantime. Nothing has "
                                                "been done; check the current state below."),
                                   reason=reason, status=409)
        errors = {"reason": api_errors(e).get("reason", [problem_text(e)])} if action == "terminate" \
            else {"": [problem_text(e)]}
        return _agreement_page(a, errors=errors, reason=reason, status=409)
    flash({"open-vote": _("The vote has been opened."),
           "sign": _("The agreement has been signed."), "terminate": _("The agreement has been terminated."),
           "amend": _("An amendment has been drafted: a new version that needs its own vote.")}[action])
    target = reply.data.get("id") if action == "amend" and reply.data.get("id") else a
    return redirect(url_for("admin.agreement", r=r, a=target))


# -- notifications ----------------------------------------------------------------------------
@bp.get("/notifications")
@staff_required
def notifications(r):
    region, _etag = _region()
    params: dict = {"limit": 50}
    errors = {}
    status = request.args.get("status", "").strip()
    if status:
        if status in NOTIFICATION_STATUSES:
            params["status"] = status
        else:
            errors["status"] = [_("Choose one of the options.")]
    member_id = request.args.get("member", "").strip()
    if member_id:
        params["member"] = member_id[:64]
    after = request.args.get("after", "").strip()[:200]
    if after:
        params["after"] = after
    try:
        reply = call("GET", "notify", rpath("/notifications"), params=params)
        items, nxt = reply.data.get("items") or [], after_of(reply.data.get("next"))
    except ApiError as e:
        if e.status != 422:
            raise
        errors.update(api_errors(e))
        items, nxt = [], None
    # Names, not ids; the id stays in the link's tooltip and in the filter.
    names = member_names({n["member_id"] for n in items if isinstance(n, dict) and n.get("member_id")})
    return render_template("admin/notifications.html", region=region, items=items, errors=errors, names=names,
                           status=params.get("status", ""), member=params.get("member", ""),
                           next_after=nxt, first_page=not after, statuses=NOTIFICATION_STATUSES), \
        (422 if errors else 200)


# -- settings ---------------------------------------------------------------------------------
BODIES = ("assembly", "board", "council")
MAX_PROXIES = 5
MAX_SEATS = 500
SEAT_ROW = re.compile(r"^mandate_policy_seats_(\d+)(?:_(member_id|cluster))?$")


def _seat_rows(source) -> list[dict]:
    """The seat rows of the form (``seat_member_N``, ``seat_cluster_N``, ``seat_remove_N``):
    empty rows and rows ticked for removal are dropped; a row keeps its typed values."""
    rows = []
    try:
        count = min(int(source.get("seat_rows", "0") or 0), MAX_SEATS + 5)
    except ValueError:
        count = 0
    for i in range(count):
        member = source.get(f"seat_member_{i}", "").strip()[:64]
        cluster = source.get(f"seat_cluster_{i}", "").strip()[:100]
        if source.get(f"seat_remove_{i}") or not (member or cluster):
            continue
        rows.append({"member_id": member, "cluster": cluster})
    return rows


def _settings_values(source=None, region: dict | None = None) -> dict:
    if source is not None:
        return {"name": source.get("name", "").strip(), "municipalities": source.get("municipalities", ""),
                "quorum": source.get("quorum", "").strip(),
                "approval_threshold": source.get("approval_threshold", "").strip(),
                "voting_period_days": source.get("voting_period_days", "").strip(),
                # a form without the governance fields (no "body" sent) leaves them as they are
                "governance": "body" in source,
                "body": source.get("body", "").strip(), "live_tally": bool(source.get("live_tally")),
                "max_proxies": source.get("max_proxies", "").strip(),
                "trainees_vote": bool(source.get("trainees_vote")), "seats": _seat_rows(source),
                "reverify_months": source.get("reverify_months", "").strip(),
                "unverified_leave_electorate": bool(source.get("unverified_leave_electorate"))}
    region = region or {}
    policy = region.get("mandate_policy") or {}
    return {"name": region.get("name") or "", "municipalities": "\n".join(region.get("municipalities") or []),
            "governance": True, "quorum": _num(policy.get("quorum")),
            "approval_threshold": _num(policy.get("approval_threshold")),
            "voting_period_days": _num(policy.get("voting_period_days")),
            "body": policy.get("body") or "assembly", "live_tally": bool(policy.get("live_tally")),
            "max_proxies": _num(policy.get("max_proxies") or 0),
            "trainees_vote": policy.get("trainees_vote", True) is not False,
            "reverify_months": _num(policy.get("reverify_months") or 12),
            "unverified_leave_electorate": bool(policy.get("unverified_leave_electorate")),
            "seats": [{"member_id": s.get("member_id", ""), "cluster": s.get("cluster", "")}
                      for s in policy.get("seats") or []]}


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if v > 1 else str(v)
    return str(v)


def _region_members(ids=()) -> dict[str, dict]:
    """The region's members a seat may go to (pending, active, suspended; first 200 of each),
    and the members ``ids`` names (seated, or affected by a change), by id."""
    out: dict[str, dict] = {}
    for status in ("active", "pending", "suspended"):
        for m in call("GET", "members", rpath("/members"), params={"status": status, "limit": 200}).data.get(
                "items") or []:
            out[m["id"]] = _own(m)
    for i in list(dict.fromkeys(ids))[:100]:
        if i and i not in out and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i):
            try:
                out[i] = _own(call("GET", "members", rpath(f"/members/{i}")).data)
            except ApiError as e:
                if e.status != 404:
                    raise
    return out


def member_name(m: dict | None, fallback: str = "") -> str:
    if not m:
        return fallback
    if m.get("status") == "erased":
        return _("(erased)")
    return f"{m.get('given_name') or ''} {m.get('family_name') or ''}".strip() or fallback


def _seat_errors(errors: dict) -> dict:
    """The API's per-seat errors (``mandate_policy_seats_3_cluster``) next to their row."""
    out: dict = {}
    for key, msgs in errors.items():
        m = SEAT_ROW.match(key)
        if m:
            out.setdefault(f"seat_{m[1]}_{m[2] or 'member_id'}", []).extend(msgs)
        else:
            out.setdefault(key, []).extend(msgs)
    return out


def _settings_page(region, etag, values, *, errors=None, stale=False, affected=None, extra_rows=1, status=200):
    history = named(call("GET", "members", rpath("/history")).data.get("items") or [])
    seats = values.get("seats") or []
    people = _region_members([s["member_id"] for s in seats] + [a.get("member_id", "") for a in affected or []])
    choices = sorted(((i, member_name(m, i)) for i, m in people.items() if m.get("status") != "erased"),
                     key=lambda c: c[1].casefold())
    rows = seats + [{"member_id": "", "cluster": ""} for _i in range(extra_rows)]
    clusters = sorted({s["cluster"] for s in seats if s.get("cluster")})
    for a in affected or []:
        a["name"] = member_name(people.get(a.get("member_id")), a.get("member_id", ""))
    return render_template("admin/settings.html", region=region, etag=etag or "", v=values, errors=errors or {},
                           stale=stale, history=history, rows=rows, member_choices=choices, clusters=clusters,
                           names={i: member_name(m, i) for i, m in people.items()}, affected=affected,
                           bodies=BODIES, max_proxies=MAX_PROXIES), status


def _settings_check(values: dict) -> tuple[dict, dict]:
    """The form's own checks (a number is a number, a seat names its member and cluster once):
    the policy to send, and the errors next to the fields."""
    errors: dict = {}
    policy: dict = {}
    numbers = (("quorum", float), ("approval_threshold", float), ("voting_period_days", int))
    optional = (("max_proxies", int), ("reverify_months", int)) if values["governance"] else ()
    for key, kind in numbers + optional:
        raw = values[key].replace(",", ".")
        if key == "reverify_months" and not raw:
            continue  # a form from before the field existed: the period stays as it is
        try:
            policy[key] = kind(raw)
        except ValueError:
            errors[f"mandate_policy_{key}"] = [_("Enter a number.")]
    if not values["governance"]:
        return policy, errors
    if values["body"] in BODIES:
        policy["body"] = values["body"]
    else:
        errors["mandate_policy_body"] = [_("Choose one of the options.")]
    policy["live_tally"], policy["trainees_vote"] = values["live_tally"], values["trainees_vote"]
    policy["unverified_leave_electorate"] = values["unverified_leave_electorate"]
    seen: set = set()
    for i, seat in enumerate(values["seats"]):
        if not seat["member_id"]:
            errors[f"seat_{i}_member_id"] = [_("Choose the member who holds this seat.")]
        elif seat["member_id"] in seen:
            errors[f"seat_{i}_member_id"] = [_("This member already holds a seat; a member holds at most one.")]
        seen.add(seat["member_id"])
        if not seat["cluster"]:
            errors[f"seat_{i}_cluster"] = [_("Name the seat's cluster.")]
    if policy.get("body") == "council" and not values["seats"]:
        errors["mandate_policy_seats"] = [_("A council needs its seats: add at least one member and cluster.")]
    if len(values["seats"]) > MAX_SEATS:
        errors["mandate_policy_seats"] = [ngettext("At most %(num)s seat.", "At most %(num)s seats.", MAX_SEATS)]
    return policy, errors


@bp.route("/settings", methods=["GET", "POST"])
@staff_required
def settings_page(r):
    region, etag = _region()
    if request.method == "GET":
        return _settings_page(region, etag, _settings_values(region=region))
    values = _settings_values(request.form)
    if not values["governance"]:  # shown again as they are
        values.update({k: v for k, v in _settings_values(region=region).items()
                       if k in ("body", "live_tally", "max_proxies", "trainees_vote", "seats", "reverify_months",
                                "unverified_leave_electorate")})
    if request.form.get("add") == "seat":  # another empty seat row (no JavaScript needed)
        return _settings_page(region, request.form.get("etag") or etag, values, extra_rows=2)
    towns = [t.strip() for t in re.split(r"[\r\n]+", values["municipalities"]) if t.strip()]
    policy, errors = _settings_check(values)
    if errors:
        return _settings_page(region, request.form.get("etag") or etag, values, errors=errors, status=422)
    current = [{"member_id": s.get("member_id"), "cluster": s.get("cluster")}
               for s in (region.get("mandate_policy") or {}).get("seats") or []]
    if values["governance"] and values["seats"] != current:
        # Seats are sent (and checked by the API) only when changed: a seat holder who left
        # since must not block an unrelated edit.
        policy["seats"] = values["seats"]
    body = {"name": values["name"], "municipalities": towns, "mandate_policy": policy}
    if request.form.get("confirm_affected") == "y":
        body["confirm_affected"] = True
    try:
        call("PATCH", "members", rpath(), json=body, if_match=request.form.get("etag") or None)
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        if e.status == 412:
            return _settings_page(region, etag, values, stale=True, status=409)
        if e.status == 409 and e.problem.get("reason") == "members-affected":
            # The confirmation step: who would leave the electorate, and "save anyway".
            affected = [a for a in e.problem.get("affected") or [] if isinstance(a, dict)]
            return _settings_page(region, request.form.get("etag") or etag, values, affected=affected,
                                  status=409)
        if e.status == 409:
            return _settings_page(region, etag, values, errors={"": [problem_text(e)]}, status=409)
        return _settings_page(region, etag, values, errors=_seat_errors(api_errors(e)), status=422)
    flash(_("The settings have been saved."))
    return redirect(url_for("admin.settings_page", r=r))


# -- capacity over time -----------------------------------------------------------------------
def _capacity_range() -> tuple[dict, dict]:
    params, errors = {}, {}
    for key in ("from", "to"):
        raw = request.args.get(key, "").strip()
        if raw:
            if _date(raw) and len(raw) == 10:
                params[key] = raw
            else:
                errors[key] = [_("Enter a date as YYYY-MM-DD.")]
    return params, errors


def _capacity_history(params: dict) -> tuple[dict, dict]:
    try:
        return call("GET", "members", rpath("/capacity/history"), params=params).data, {}
    except ApiError as e:
        if e.status != 422:
            raise
        errs = api_errors(e)
        return {"days": []}, {k if k in ("from", "to") else "": v for k, v in errs.items()}


def series(history: dict) -> tuple[list[str], dict[str, list[dict]]]:
    """Per municipality, one point per day: {day, open, limited, closed, unknown}."""
    days: list[str] = []
    towns: dict[str, dict[str, dict]] = {}
    for snap in history.get("days") or []:
        day = str(snap.get("day") or "")[:10]
        if not _date(day):
            continue
        days.append(day)
        for row in snap.get("municipalities") or []:
            name = str(row.get("municipality") or "")
            towns.setdefault(name, {})[day] = {k: int(row.get(k) or 0) for k in ("open", "limited", "closed",
                                                                                  "unknown")}
    days = sorted(set(days))
    out = {}
    for name in sorted(towns, key=str.lower):
        out[name] = [dict(day=d, **towns[name].get(d, {"open": 0, "limited": 0, "closed": 0, "unknown": 0}))
                     for d in days]
    return days, out


W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 220, 44, 12, 12, 36


def chart(points: list[dict]) -> dict:
    """Coordinates of the three lines (open, limited, closed) in a W×H box."""
    n = len(points)
    top = max([max(p["open"], p["limited"], p["closed"]) for p in points] + [1])
    iw, ih = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(i):
        return LEFT + (iw * i / (n - 1) if n > 1 else iw / 2)

    def y(v):
        return TOP + ih - ih * v / top

    lines = {}
    for key in ("open", "limited", "closed"):
        lines[key] = " ".join(f"{x(i):.1f},{y(p[key]):.1f}" for i, p in enumerate(points))
    dots = [(round(x(i), 1), {k: round(y(p[k]), 1) for k in ("open", "limited", "closed")})
            for i, p in enumerate(points)] if n <= 31 else []
    ticks = sorted({0, top // 2, top})
    return {"lines": lines, "dots": dots, "yticks": [(t, round(y(t), 1)) for t in ticks],
            "first": points[0]["day"] if points else "", "last": points[-1]["day"] if points else "",
            "last_point": points[-1] if points else None, "w": W, "h": H, "left": LEFT, "right": W - RIGHT,
            "top": TOP, "bottom": H - BOTTOM}


@bp.get("/capacity")
@staff_required
def capacity(r):
    region, _etag = _region()
    params, errors = _capacity_range()
    history, api_errs = ({"days": []}, {}) if errors else _capacity_history(params)
    errors.update(api_errs)
    days, per_town = series(history)
    charts = {name: chart(points) for name, points in per_town.items()}
    return render_template("admin/capacity.html", region=region, history=history, days=days, per_town=per_town,
                           charts=charts, errors=errors, params=params), (422 if errors else 200)


def _csv_cell(value) -> str:
    s = str(value)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s  # no formulas in a spreadsheet


@bp.get("/capacity.csv")
@staff_required
def capacity_csv(r):
    params, errors = _capacity_range()
    if errors:
        abort(400)
    history, api_errs = _capacity_history(params)
    if api_errs:
        abort(400)
    _days, per_town = series(history)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["day", "municipality", "open", "limited", "closed", "unknown"])
    rows = sorted(((p["day"], name, p) for name, points in per_town.items() for p in points),
                  key=lambda t: (t[0], t[1].lower()))
    for day, name, p in rows:
        w.writerow([day, _csv_cell(name), p["open"], p["limited"], p["closed"], p["unknown"]])
    resp = Response(buf.getvalue(), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="hecht-{r}-capacity.csv"'
    return resp


# -- the region's admins ----------------------------------------------------------------------
def _staff_page(region, *, values=None, errors=None, status=200):
    items = call("GET", "members", rpath("/staff")).data.get("items") or []
    return render_template("admin/staff.html", region=region, items=items, v=values or {"language": "nl"},
                           errors=errors or {}, languages=LANGUAGES), status


@bp.route("/staff", methods=["GET", "POST"])
@staff_required
def staff(r):
    region, _etag = _region()
    if request.method == "GET":
        return _staff_page(region)
    values = {k: request.form.get(k, "").strip() for k in ("email", "name", "language")}
    if values["language"] not in LANGUAGES:
        values["language"] = "nl"
    try:
        invited = call("POST", "members", rpath("/staff"), json={k: v for k, v in values.items() if v}).data
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        errors = api_errors(e)
        if e.status == 409 and not e.errors:
            errors = {"email": [problem_text(e)]}
        return _staff_page(region, values=values, errors=errors, status=422)
    # To the address as the account stored it (an existing account keeps its own), not as typed.
    send_invite(invited.get("email") or values["email"], f"/admin/{r}", values["language"], region.get("name") or r)
    flash(_("The invitation has been sent to %(email)s.", email=values["email"]))
    return redirect(url_for("admin.staff", r=r))


@bp.post("/staff/<s>/remove")
@staff_required
def staff_remove(r, s):
    check_id(s)
    call("DELETE", "members", rpath(f"/staff/{s}"))
    flash(_("The person is no longer an admin of this region."))
    return redirect(url_for("admin.staff", r=r))


@bp.app_template_filter("pairlabel")
def pairlabel(value, kind: str) -> tuple[str, str]:
    from .labels import label
    return value, label(value, kind)


@bp.app_template_filter("pairself")
def pairself(value) -> tuple[str, str]:
    return value, value


@bp.app_template_filter("event_label")
def event_label(event_type) -> str:
    from .labels import LABELS
    t = str(event_type or "")
    t = re.sub(r"^(hecht|org\.hecht)\.", "", t)
    t = re.sub(r"\.v\d+$", "", t)
    return str(LABELS["event"].get(t, t))



# -- integrators -------------------------------------------------------------------
INTEGRATOR_STATUSES = ("invited", "active", "suspended")


def _integrator_choices() -> list[str]:
    """The invite form's checkboxes: each family whole (``agreement.*``), then each event type."""
    from .integrations import event_types, families
    types = event_types()
    return families(types) + [e["type"] for e in types]


def _integrators_page(region, *, values=None, errors=None, status=200):
    params: dict = {"limit": 50}
    shown = request.args.get("status", "").strip()
    if shown in INTEGRATOR_STATUSES:
        params["status"] = shown
    after = request.args.get("after", "").strip()[:200]
    if after:
        params["after"] = after
    reply = call("GET", "notify", rpath("/integrators"), params=params)
    items = [i for i in (reply.data.get("items") or []) if i.get("region") in (None, g.region)]
    return render_template("admin/integrators.html", region=region, items=items, shown=shown,
                           statuses=INTEGRATOR_STATUSES, next_after=after_of(reply.data.get("next")),
                           first_page=not after, choices=_integrator_choices(),
                           v=values or {"name": "", "contact_email": "", "event_types": [], "language": "nl"},
                           errors=errors or {}), status


@bp.route("/integrators", methods=["GET", "POST"])
@staff_required
def integrators(r):
    region, _etag = _region()
    if request.method == "GET":
        return _integrators_page(region)
    values = {"name": request.form.get("name", "").strip(),
              "contact_email": request.form.get("contact_email", "").strip(),
              "event_types": request.form.getlist("event_types"),
              "language": request.form.get("language", "").strip()}
    if values["language"] not in LANGUAGES:
        values["language"] = "nl"
    if not values["event_types"]:
        return _integrators_page(region, values=values, status=422,
                                 errors={"event_types": [_("Choose at least one event type.")]})
    try:
        call("POST", "notify", rpath("/integrators"), json={k: v for k, v in values.items() if v})
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        errors = fielderrors.merge_lists(api_errors(e), "event_types")
        if e.status == 409 and not e.errors:
            errors = {"contact_email": [problem_text(e)]}
        return _integrators_page(region, values=values, errors=errors, status=422)
    flash(_("%(name)s has been invited: an e-mail with a link to the integrations pages has been sent to "
            "%(email)s.", name=values["name"], email=values["contact_email"]))
    return redirect(url_for("admin.integrators", r=r))


def _integrator(i: str) -> tuple[dict, str | None]:
    reply = call("GET", "notify", rpath(f"/integrators/{check_id(i)}"))
    if reply.data.get("id") != i or reply.data.get("region") not in (None, g.region):
        abort(404)
    return reply.data, reply.etag


@bp.post("/integrators/<i>/<action>")
@staff_required
def integrator_action(r, i, action):
    if action not in ("suspend", "resume"):
        abort(404)
    region, _etag = _region()
    _integrator(i)
    try:
        call("PATCH", "notify", rpath(f"/integrators/{i}"),
             json={"status": "suspended" if action == "suspend" else "active"},
             if_match=request.form.get("etag") or None)
    except ApiError as e:
        if e.status in (401, 403, 404):
            raise
        return _integrators_page(region, errors={"": [problem_text(e)]}, status=409)
    flash(_("The application has been suspended: its tokens and subscriptions stop working.")
          if action == "suspend" else _("The application is active again."))
    return redirect(url_for("admin.integrators", r=r))


@bp.route("/integrators/<i>/delete", methods=["GET", "POST"])
@staff_required
def integrator_delete(r, i):
    region, _etag = _region()
    integrator, etag = _integrator(i)
    errors: dict = {}
    if request.method == "POST":
        if request.form.get("confirm") != "yes":
            errors = {"confirm": [_("Tick the box to confirm.")]}
        else:
            try:
                call("DELETE", "notify", rpath(f"/integrators/{i}"), if_match=request.form.get("etag") or None)
            except ApiError as e:
                if e.status in (401, 403, 404):
                    raise
                integrator, etag = _integrator(i)
                errors = {"": [problem_text(e)]}
                return render_template("admin/integrator_delete.html", region=region, integrator=integrator,
                                       etag=etag or "", errors=errors), 409
            flash(_("The application has been deleted and its subscriptions disabled."))
            return redirect(url_for("admin.integrators", r=r))
    return render_template("admin/integrator_delete.html", region=region, integrator=integrator, etag=etag or "",
                           errors=errors), (422 if errors else 200)
