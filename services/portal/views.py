"""The pages (URLs in docs/PORTAL.md). Views are thin: form → API call(s) → template.

Every signed-in page takes its member id from the session's membership for the region in
the URL; a region the person has no membership in, or an id the services refuse, is a 404.
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from datetime import date, datetime, timedelta, timezone
from functools import wraps

from flask import (Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request,
                   session, url_for)
from flask_babel import get_locale, gettext as _, lazy_gettext as _l, ngettext

from hecht import emails

from . import fielderrors, mail
from .client import ApiError, ApiUnavailable
from .forms import (CapacityForm, ChooseRegionForm, EmailForm, EmptyForm, EraseForm, LanguageForm, LeaveForm,
                    ProfileForm, SignUpForm, VoteForm, category_choices)
from .i18n import COOKIE as LANG_COOKIE, LANGUAGES, moment_of
from .labels import label

log = logging.getLogger(__name__)
bp = Blueprint("portal", __name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
SCHEMES_BY_COUNTRY = {"NL": ("BIG", "AGB"), "BE": ("RIZIV",)}
UPCOMING = ("in_consultation", "mandated")
ENDED = ("expired", "terminated", "superseded", "rejected")


def portal():
    return current_app.extensions["portal"]


def settings():
    return portal()["settings"]


def api():
    return portal()["api"]


def store():
    s = portal()["store"]
    s.ensure_indexes()
    return s


def lang() -> str:
    return str(get_locale() or "nl")


def check_id(value: str) -> str:
    if not _ID.fullmatch(value or ""):
        abort(404)
    return value


def safe_next(raw: str | None, default: str = "/") -> str:
    """Only a path on this site: never another host (open redirect)."""
    raw = (raw or "").strip()
    if (not raw.startswith("/") or raw.startswith("//") or "\\" in raw or len(raw) > 500
            or any(ord(c) < 32 for c in raw)):
        return default
    return raw


def client_key() -> str:
    return request.remote_addr or "unknown"


def limited(bucket: str, key: str, limit: int) -> int | None:
    return store().hit(bucket, key, limit, settings().signin_window_s)


# -- the signed-in person -------------------------------------------------------------------
def signed_in() -> bool:
    return bool(session.get("email"))


def memberships() -> list[dict]:
    return session.get("memberships") or []


def membership(region: str) -> dict:
    """The session's membership in ``region``; anything else is a 404."""
    for m in memberships():
        if m.get("region_id") == region:
            return m
    abort(404)


def guarded(admit):
    """A decorator for the pages of signed-in people (the GP's, the consoles, the integrators'):
    a signed-out visitor goes to sign in and comes back here; then ``admit(url_values)`` checks
    the URL's ids against the session (404 for anything not theirs) and fills ``g``."""
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not signed_in():
                return redirect(url_for("portal.sign_in", next=request.full_path.rstrip("?")))
            admit(kwargs)
            return view(*args, **kwargs)
        return wrapper
    return decorate


def _admit_member(values: dict) -> None:
    if "r" in values:
        check_id(values["r"])
        g.membership = membership(values["r"])
        g.region = values["r"]
        g.member = g.membership["member_id"]
        if session.get("region") != g.region:
            session["region"] = g.region


login_required = guarded(_admit_member)


def gp(method: str, service: str, path: str, **kw):
    """A call as the signed-in GP: a token minted for this request only."""
    token = api().gp_token(g.region, g.member)
    return api().call(service, method, path, token=token, request_id=g.get("request_id"), **kw)


def public(method: str, service: str, path: str, **kw):
    return api().call(service, method, path, token=api().portal_token(), request_id=g.get("request_id"), **kw)


def member_path(suffix: str = "") -> str:
    return f"/v1/regions/{g.region}/members/{g.member}{suffix}"


@bp.app_context_processor
def _globals():
    return {"signed_in": signed_in(), "session_memberships": memberships(), "staff": staff_account(),
            "session_integrators": integrator_apps() if signed_in() else [],
            "admin_region": session.get("admin_region"),
            "current_region": session.get("region"), "empty_form": EmptyForm(),
            "language_form": LanguageForm(lang=lang(), next=request.full_path.rstrip("?")),
            "today": date.today()}


# -- public pages ---------------------------------------------------------------------------
def _regions() -> list[dict]:
    items: list[dict] = []
    params = {"limit": 200}
    for _page in range(10):
        reply = public("GET", "members", "/v1/regions", params=params)
        items.extend(reply.data.get("items") or [])
        nxt = reply.data.get("next")
        if not nxt or "after=" not in nxt:
            break
        params = {"limit": 200, "after": nxt.split("after=", 1)[1].split("&", 1)[0]}
    return sorted(items, key=lambda r: str(r.get("name", "")).lower())


@bp.get("/")
def index():
    regions, unavailable = [], False
    try:
        regions = _regions()
    except (ApiUnavailable, ApiError):
        unavailable = True  # the start page still works; the list says it is not available
    return render_template("index.html", regions=regions, unavailable=unavailable)


@bp.get("/regions")
def regions():
    return render_template("regions.html", regions=_regions())


def _region(r: str) -> dict:
    return public("GET", "members", f"/v1/regions/{check_id(r)}").data


def _agreements(r: str, call, statuses: tuple[str, ...] | None = None) -> list[dict]:
    items: list[dict] = []
    for status in statuses or (None,):
        params = {"limit": 200}
        if status:
            params["status"] = status
        items.extend(call("GET", "agreements", f"/v1/regions/{r}/agreements", params=params).data.get("items") or [])
    return [a for a in items if a.get("status") != "draft"]


@bp.get("/regions/<r>")
def region(r):
    reg = _region(r)
    active = _agreements(r, public, ("active",))
    return render_template("region.html", region=reg, agreements=active)


def _signup_form(reg: dict, formdata=None) -> SignUpForm:
    form = SignUpForm(formdata=formdata)
    if formdata is None:
        form.language.data = lang()
    form.category.choices = category_choices()
    form.registration_scheme.choices = [(s, label(s, "scheme"))   # INAMI in French, RIZIV in Dutch
                                        for s in SCHEMES_BY_COUNTRY.get(reg.get("country"), ("BIG", "AGB", "RIZIV"))]
    form.practice_municipality.choices = [(m, m) for m in reg.get("municipalities") or []]
    return form


@bp.route("/regions/<r>/sign-up", methods=["GET", "POST"])
def sign_up(r):
    reg = _region(r)
    form = _signup_form(reg, request.form if request.method == "POST" else None)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        wait = limited("sign-up-client", client_key(), settings().signin_limit_client)
        if wait:
            return _rate_limited(wait)
        body = {"given_name": form.given_name.data or "", "family_name": form.family_name.data or "",
                "email": (form.email.data or "").strip(), "language": form.language.data or lang(),
                "category": form.category.data or "practice-owner",
                "registration": {"scheme": form.registration_scheme.data or "",
                                 "number": form.registration_number.data or ""},
                "practice": {"name": form.practice_name.data or "", "postcode": form.practice_postcode.data or "",
                             "municipality": form.practice_municipality.data or ""}}
        try:
            reply = public("POST", "members", f"/v1/regions/{r}/members", json=_filled(body),
                           client_address=client_key())
        except ApiError as e:
            if e.status in (409, 422):
                errors = fielderrors.flatten(e.errors) if e.errors else {}
                for group in ("practice", "registration"):  # the whole group missing: each empty field
                    if group in errors:
                        msgs = errors.pop(group)
                        for name in form.data:
                            if name.startswith(f"{group}_") and not form.data[name]:
                                errors.setdefault(name, msgs)
                if e.status == 409 and not errors:
                    errors = {"registration_number": [fielderrors.translate("", e.title)]}
                return render_template("sign_up.html", region=reg, form=form, errors=errors), 422
            raise
        # 202 whether or not the address or the registration was enrolled already; the
        # portal's token is also told which. A new member gets the portal's own confirmation link;
        # for an enrolled one the members service has notify mail the member that someone tried
        # (to the stored address). The page says the same either way: it must not tell who is a member.
        if reply.status == 201 or reply.data.get("outcome") == "created":
            _after_answer(_send_confirm, body["email"], r, reg.get("name") or r, body["language"])
        return redirect(url_for("portal.sign_up_sent"))
    return render_template("sign_up.html", region=reg, form=form, errors=errors)


def _after_answer(fn, *args) -> None:
    """Run ``fn(*args)`` in the app's context on a thread of its own, so the page answers in the
    same time whether or not it mails (the SMTP hand-off must not tell who is enrolled).
    As before, a mail that fails is logged, not retried."""
    app = current_app._get_current_object()

    def run() -> None:
        with app.app_context():
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a thread of its own: log, never raise into nothing
                log.exception("sign-up mail failed")
    threading.Thread(target=run, name="portal-sign-up-mail", daemon=True).start()


@bp.get("/sign-up/sent")
def sign_up_sent():
    return render_template("message.html", title=_("Check your e-mail"),
                           lines=[_("We have sent you an e-mail with a link to confirm your address. "
                                    "The link also signs you in."),
                                  _("The region checks your sign-up; you will get an e-mail when it has "
                                    "been approved.")])


# -- sign-in --------------------------------------------------------------------------------
def _link_url(token: str) -> str:
    return f"{settings().portal_url}/sign-in/{token}"


def _deliver(email: str, subject: str, body: str, link: str | None) -> None:
    s = settings()
    if s.development and link:
        log.info("sign-in link (development only)", extra={"to": email, "link": link})
        print(f"[portal] sign-in link for {email}: {link}", flush=True)
    try:
        mail.send(s.hecht.smtp_url, s.hecht.smtp_from, email, subject, body)
    except mail.MailError as e:
        # The answer stays the same (it must not depend on the address); the log says why.
        log.error("sign-in mail not sent", extra={"error": str(e)})


def _filled(body: dict) -> dict:
    """Empty fields left out, so the API answers "required" rather than a length rule."""
    out = {}
    for k, v in body.items():
        if isinstance(v, dict):
            v = _filled(v)
        if v not in ("", None, {}):
            out[k] = v
    return out


def _stored_addresses(email: str) -> list[dict]:
    """Where a sign-in link asked for with ``email`` may go: ``[{email, language}]``, the stored
    addresses of the accounts it names under the rule of hecht/emails.py (memberships and staff
    accounts from the members service, integrator contacts from notify), each once. Never the
    address as typed: ``victim@xn--strae-oqa.example`` must not receive a link that opens the
    account of ``victim@strasse.example``. Empty for an unknown address."""
    items: list = []
    try:
        items += public("POST", "members", "/v1/sign-in-addresses", json={"email": email}).data.get("addresses") or []
    except ApiError as e:
        if e.status != 422:
            raise
    try:
        items += public("POST", "notify", "/v1/integrator-sign-in-addresses",
                        json={"email": email}).data.get("addresses") or []
    except (ApiError, ApiUnavailable) as e:
        # Members and staff still get their link; an integrator contact asks again later.
        log.warning("integrator sign-in address lookup failed", extra={"error": str(e)})
    found: dict[str, str | None] = {}
    for a in items:
        if isinstance(a, dict) and isinstance(a.get("email"), str) and a["email"]:
            found.setdefault(a["email"], a.get("language") if a.get("language") in LANGUAGES else None)
    return [{"email": e, "language": lang_} for e, lang_ in found.items()]


def _mail_link(address: str, next_path: str, language: str) -> None:
    """A new sign-in link to ``address``, which must be an account's stored address; the mail
    is handed to SMTP after the answer (``_after_answer``), so the sign-in page answers in the
    same time whether or not the address is known."""
    s = settings()
    token = store().create_link(address, next_path=next_path, language=language,
                                valid=timedelta(minutes=s.link_minutes))
    link = _link_url(token)
    _after_answer(_deliver, address, *mail.sign_in_message(language, link, s.link_minutes), link)


def _request_links(email: str, next_path: str, language: str) -> None:
    """The sign-in page's work for a well-formed address. Per identity (the key of
    hecht/emails.py) at most HECHT_PORTAL_SIGNIN_LIMIT_ADDRESS links go out in a window, counted
    whether or not the address is known; past that, the person gets ONE e-mail per window saying
    that links were requested, and the page answers as always: anyone can ask for anyone's
    links, so an address's own limit never shows as a 429."""
    s = settings()
    found = _stored_addresses(email)
    key = emails.key(email)
    wait = limited("sign-in-address", key, s.signin_limit_address)
    if not found:
        return
    if wait is None:
        for a in found:
            _mail_link(a["email"], next_path, language)
    elif store().once("sign-in-notice", key, s.signin_window_s):
        minutes = max(1, math.ceil(wait / 60))
        for a in found:
            _after_answer(_deliver, a["email"], *mail.sign_in_limited_message(a["language"] or language, minutes),
                          None)


def _send_confirm(email: str, r: str, region_name: str, language: str) -> None:
    s = settings()
    token = store().create_link(email, next_path=f"/r/{r}/membership", language=language,
                                valid=timedelta(hours=s.confirm_link_hours), purpose="confirm")
    link = _link_url(token)
    _deliver(email, *mail.confirm_message(language, link, s.confirm_link_hours, region_name), link)


def send_invite(email: str, next_path: str, language: str, place: str) -> None:
    """The sign-in link for a newly invited staff member (longer-lived than a plain link)."""
    s = settings()
    language = language if language in LANGUAGES else lang()
    token = store().create_link(email, next_path=next_path, language=language,
                                valid=timedelta(hours=s.confirm_link_hours), purpose="invite")
    link = _link_url(token)
    _deliver(email, *mail.invite_message(language, link, s.confirm_link_hours, place), link)


def _rate_limited(wait: int):
    resp = Response(render_template("error.html", kind="rate-limited"), status=429)
    resp.headers["Retry-After"] = str(wait)
    return resp


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    form = EmailForm(next=safe_next(request.args.get("next"), "")) if request.method == "GET" else EmailForm()
    if request.method == "POST":
        try:
            # The address in its normal form (hecht/emails.py); the shape only, the accounts decide.
            email = emails.normalise(form.email.data, unicode_local=True) if form.validate() else None
        except emails.AddressError:
            email = None
        if email is None:
            errors = {"email": [_("Enter your e-mail address, like name@example.org.")]}
            return render_template("sign_in.html", form=form, errors=errors,
                                   purpose=sign_in_purpose(form.next.data)), 422
        # Per client (a script trying many addresses): this one may answer 429. The per-address
        # limit is in _request_links and never shows: the same page whether or not a link went out.
        wait = limited("sign-in-client", client_key(), settings().signin_limit_client)
        if wait:
            return _rate_limited(wait)
        _request_links(email, safe_next(form.next.data), lang())
        return redirect(url_for("portal.sign_in_sent"))
    return render_template("sign_in.html", form=form, errors={}, purpose=sign_in_purpose(form.next.data))


_BALLOT_NEXT = re.compile(r"^/r/([^/?#]+)/votes/([^/?#]+)/?(?:\?.*)?$")


def sign_in_purpose(next_path: str | None) -> str | None:
    """What a signed-out person is signing in for: a vote e-mail's link says "Sign in
    to vote on “X”". The title is read with the portal's own token, which reads only what is
    public (a draft, or an agreement of another region under this URL, is a 404 there), so a
    signed-out visitor learns nothing more than that; when the title cannot be read, nothing is
    said (the same page as for an unknown id)."""
    m = _BALLOT_NEXT.match(safe_next(next_path, ""))
    if not m or not (_ID.fullmatch(m[1]) and _ID.fullmatch(m[2])):
        return None
    try:
        a = public("GET", "agreements", f"/v1/regions/{m[1]}/agreements/{m[2]}").data
    except (ApiError, ApiUnavailable):
        return None
    title = a.get("title") if isinstance(a, dict) else None
    if (not isinstance(title, str) or not title.strip() or a.get("id") != m[2]
            or a.get("region_id") not in (None, m[1]) or a.get("status") in (None, "draft")):
        return None
    title = title.strip()[:200]
    if a.get("status") == "in_consultation" and (a.get("mandate") or {}).get("status") == "open":
        return _("Sign in to vote on “%(title)s”", title=title)
    return _("Sign in to see the vote on “%(title)s”", title=title)


@bp.get("/sign-in/sent")
def sign_in_sent():
    return render_template("message.html", title=_("Check your e-mail"),
                           lines=[_("If this address is known to us, you will receive an e-mail with a "
                                    "sign-in link within a few minutes."),
                                  ngettext("The link works once, for %(num)s minute.",
                                           "The link works once, for %(num)s minutes.", settings().link_minutes)])


def _link_invalid():
    return render_template("message.html", title=_("This link can no longer be used"),
                           lines=[_("Sign-in links work once, for a limited time. This one has been used "
                                    "already or has expired."),
                                  _("Ask for a new link below.")],
                           action=(url_for("portal.sign_in"), _("Get a new sign-in link"))), 410


@bp.get("/sign-in/<token>")
def sign_in_link(token):
    # A GET never signs in: mail scanners fetch links before the person clicks.
    if len(token) > 200 or store().peek_link(token) is None:
        return _link_invalid()
    return render_template("sign_in_link.html", form=EmptyForm())


@bp.post("/sign-in/<token>")
def sign_in_consume(token):
    if len(token) > 200:
        return _link_invalid()
    link = store().consume_link(token)
    if link is None:
        return _link_invalid()
    try:
        return _start_session(link["email"], link.get("next") or "/")
    except ApiUnavailable:
        store().db.links.insert_one(link)  # give it back: the person may try again shortly
        raise


def _start_session(email: str, next_path: str):
    """The address is proven (a link used, or an OIDC provider's verified e-mail): ask the
    members service who this is, and start a new session (a new id) for them."""
    reply = public("POST", "members", "/v1/sign-ins", json={"email": email})
    found = [m for m in (reply.data.get("memberships") or []) if m.get("status") != "erased"]
    keep_lang = session.get("lang")
    session.clear()
    session.rotate()
    session["email"] = email
    session["memberships"] = [{k: m.get(k) for k in ("region_id", "region_name", "member_id", "status", "roles")}
                              for m in found]
    _keep_staff(reply.data.get("staff"))
    _keep_integrators(email)
    session["signed_in_at"] = datetime.now(timezone.utc).isoformat()
    if keep_lang:
        session["lang"] = keep_lang
    return redirect(_after_sign_in(next_path))


def _keep_staff(staff) -> None:
    """The account as the members service returned it: the only source of the console's
    tokens (docs/PORTAL.md, part 2); the services check every call again."""
    if isinstance(staff, dict) and staff.get("id") and staff.get("status") != "revoked":
        session["staff"] = {"id": str(staff["id"]), "name": staff.get("name") or "",
                            "language": staff.get("language"),
                            "platform_admin": bool(staff.get("platform_admin")),
                            "admin_of": [str(r) for r in (staff.get("admin_of") or [])],
                            "checked_at": time.time()}
    else:
        session.pop("staff", None)
        session.pop("admin_region", None)


def recheck_staff() -> None:
    """A console session looks its account up again every HECHT_PORTAL_STAFF_RECHECK_S
    (default 5 minutes), so a revoked account or a region taken away stops working soon,
    not when the session ends. The lookup is the sign-in call: the session proved the address."""
    s = staff_account()
    if not s or time.time() - float(s.get("checked_at") or 0) < settings().staff_recheck_s:
        return
    reply = public("POST", "members", "/v1/sign-ins", json={"email": session.get("email")})
    _keep_staff(reply.data.get("staff"))


def _keep_integrators(email: str) -> None:
    """The integrator applications this address was invited for, as notify's
    ``POST /v1/integrator-sign-ins`` returns them (it marks an invited one active): the only
    source of the integrator tokens the portal mints. notify down or not answering: none for
    now, and the next integrator page asks again (``checked_at`` 0)."""
    try:
        reply = public("POST", "notify", "/v1/integrator-sign-ins", json={"email": email})
        found, checked = reply.data.get("integrators") or [], time.time()
    except (ApiError, ApiUnavailable) as e:
        log.warning("integrator sign-in lookup failed", extra={"error": str(e)})
        found, checked = [], 0.0
    session["integrators"] = [{"id": str(i["id"]), "region": str(i.get("region") or ""),
                               "name": i.get("name") or "", "status": i.get("status")}
                              for i in found if isinstance(i, dict) and i.get("id")
                              and i.get("status") in ("invited", "active")]
    session["integrators_checked_at"] = checked


def recheck_integrators() -> None:
    """As :func:`recheck_staff`: the applications are looked up again every
    HECHT_PORTAL_STAFF_RECHECK_S, so a suspended or deleted one stops working soon. Here notify
    being down is a 503 page (the person is on an integrator page, which needs notify anyway)."""
    if time.time() - float(session.get("integrators_checked_at") or 0) < settings().staff_recheck_s:
        return
    reply = public("POST", "notify", "/v1/integrator-sign-ins", json={"email": session.get("email")})
    session["integrators"] = [{"id": str(i["id"]), "region": str(i.get("region") or ""),
                               "name": i.get("name") or "", "status": i.get("status")}
                              for i in (reply.data.get("integrators") or []) if isinstance(i, dict) and i.get("id")
                              and i.get("status") in ("invited", "active")]
    session["integrators_checked_at"] = time.time()


def integrator_apps(region: str | None = None) -> list[dict]:
    return [i for i in (session.get("integrators") or []) if region is None or i.get("region") == region]


def staff_account() -> dict | None:
    return session.get("staff") or None


def may_admin(region: str) -> bool:
    s = staff_account()
    return bool(s) and (bool(s.get("platform_admin")) or region in (s.get("admin_of") or []))


def _staff_landing(next_path: str) -> str | None:
    """Where a staff member lands: the page asked for if it is theirs, else their console."""
    s = staff_account()
    if not s:
        return None
    m = re.match(r"^/admin/([^/?#]+)", next_path)
    if m and may_admin(m.group(1)):
        return next_path
    if re.match(r"^/platform(/|$|\?)", next_path) and s.get("platform_admin"):
        return next_path
    if (memberships() or integrator_apps() or (s.get("platform_admin") and s.get("admin_of"))
            or len(s.get("admin_of") or []) > 1):
        return None  # several places to go: the person chooses
    if s.get("platform_admin"):
        return "/platform"
    if s.get("admin_of"):
        return f"/admin/{s['admin_of'][0]}"
    return None


def _after_sign_in(next_path: str) -> str:
    next_path = safe_next(next_path)
    mine = memberships()
    m = re.match(r"^/integrations/([^/?#]+)", next_path)
    if m and (m.group(1) == "catalogue" or integrator_apps(m.group(1))):
        return next_path  # an integrator's page (the invitation's link), theirs
    apps = integrator_apps()
    if apps and not mine and not staff_account():
        regions = sorted({a["region"] for a in apps})
        if len(regions) == 1:
            return f"/integrations/{regions[0]}"
        return url_for("portal.choose_region")
    if staff_account():
        landing = _staff_landing(next_path)
        if landing:
            return landing
        m = re.match(r"^/r/([^/?#]+)", next_path)
        if m and any(x["region_id"] == m.group(1) for x in mine):
            session["region"] = m.group(1)
            return next_path
        return url_for("portal.choose_region", next=next_path if next_path != "/" else None)
    m = re.match(r"^/r/([^/?#]+)", next_path)
    if m and any(x["region_id"] == m.group(1) for x in mine):
        session["region"] = m.group(1)
        return next_path
    if len(mine) == 1 and not apps:
        session["region"] = mine[0]["region_id"]
        return next_path if next_path not in ("/", "") and not m else f"/r/{mine[0]['region_id']}/membership"
    return url_for("portal.choose_region", next=next_path if next_path != "/" else None)


@bp.post("/sign-out")
def sign_out():
    session.end()
    flash(_("You have signed out."))
    return redirect(url_for("portal.index"))


@bp.route("/choose-region", methods=["GET", "POST"])
def choose_region():
    if not signed_in():
        return redirect(url_for("portal.sign_in", next="/choose-region"))
    form = ChooseRegionForm()
    if request.method == "POST" and form.validate():
        r = check_id(form.region.data or "")
        membership(r)
        session["region"] = r
        nxt = safe_next(form.next.data, f"/r/{r}/membership")
        return redirect(nxt if nxt.startswith(f"/r/{r}/") else f"/r/{r}/membership")
    consoles, integrations = [], []
    s = staff_account()
    apps = integrator_apps()
    if s or apps:
        names = {}
        try:
            names = {x.get("id"): x.get("name") for x in _regions()}
        except (ApiError, ApiUnavailable):
            pass  # the ids will do
        consoles = [(r, names.get(r) or r) for r in (s or {}).get("admin_of") or []]
        integrations = [(a, names.get(a["region"]) or a["region"]) for a in apps]
    return render_template("choose_region.html", next=safe_next(request.args.get("next"), ""),
                           consoles=consoles, integrations=integrations)


@bp.post("/language")
def language():
    form = LanguageForm()
    choice = form.lang.data if form.lang.data in LANGUAGES else None
    resp = redirect(safe_next(form.next.data or request.form.get("next")))
    if choice:
        session["lang"] = choice
        resp.set_cookie(LANG_COOKIE, choice, max_age=365 * 24 * 3600, httponly=True, samesite="Lax",
                        secure=settings().cookie_secure)
    return resp


# -- my membership --------------------------------------------------------------------------
def _member() -> tuple[dict, str | None]:
    reply = gp("GET", "members", member_path())
    if reply.data.get("id") != g.member:  # never show someone else's record
        abort(404)
    return reply.data, reply.etag


def _profile_form(member: dict, etag: str | None, formdata=None) -> ProfileForm:
    form = ProfileForm(formdata=formdata)
    form.category.choices = category_choices()
    current = (member.get("practice") or {}).get("municipality")
    try:
        towns = list(_region(g.region).get("municipalities") or [])
    except (ApiError, ApiUnavailable):
        towns = []  # the page still works: the current municipality stays selectable
    if current and current not in towns:
        towns.insert(0, current)
    form.practice_municipality.choices = [(t, t) for t in towns]
    if formdata is None:
        practice = member.get("practice") or {}
        form.given_name.data = member.get("given_name")
        form.family_name.data = member.get("family_name")
        form.language.data = member.get("language")
        form.category.data = member.get("category")
        form.practice_name.data = practice.get("name")
        form.practice_postcode.data = practice.get("postcode")
        form.practice_municipality.data = practice.get("municipality")
        form.etag.data = etag or ""
    return form


def _capacity_choices():
    return [("open", _("Open: accepting new patients")), ("limited", _("Limited: a partial patient stop")),
            ("closed", _("Closed: a patient stop"))]


def _capacity_form(member: dict, etag: str | None, formdata=None) -> CapacityForm:
    form = CapacityForm(formdata=formdata)
    form.status.choices = _capacity_choices()
    if formdata is None:
        cap = member.get("capacity") or {}
        form.status.data = cap.get("status")
        form.note.data = cap.get("note")
        form.etag.data = etag or ""
    return form


REVERIFY_SOON = timedelta(days=30)  # the re-confirmation form shows this long before it is due


def reverify_state(member: dict, now: datetime | None = None) -> str | None:
    """``"due"`` once the registration's re-confirmation is due, ``"soon"`` within
    ``REVERIFY_SOON`` of it, else None (also for members it does not apply to: no due date)."""
    due = moment_of(member.get("reverify_due_at"))
    if due is None:
        return None
    now = now or datetime.now(timezone.utc)
    return "due" if due <= now else "soon" if due - now <= REVERIFY_SOON else None


def registration_problem(e: ApiError) -> dict:
    """A registration's errors from the members service next to the form's number field
    (``registration_scheme`` keeps its own): a duplicate (409) or a check on the whole group."""
    errors = fielderrors.flatten(e.errors) if e.errors else {
        "registration_number": [fielderrors.translate("number", e.title)]}
    for k in [k for k in errors if not k.startswith("registration_")]:
        errors.setdefault("registration_number", []).extend(errors.pop(k))
    return errors


def _membership_page(member, etag, *, profile=None, capacity=None, errors=None, registration=None, status=200):
    _refresh_session_membership(member)
    try:
        country = _region(g.region).get("country")
    except (ApiError, ApiUnavailable):
        country = None
    schemes = ("RIZIV",) if country == "BE" else ("BIG", "AGB") if country == "NL" else \
        tuple(x for x in [(member.get("registration") or {}).get("scheme")] if x)
    return render_template("membership.html", member=member,
                           profile_form=profile or _profile_form(member, etag),
                           capacity_form=capacity or _capacity_form(member, etag),
                           registration=registration or member.get("registration") or {}, schemes=schemes,
                           country=country,
                           etag=etag or "", errors=errors or {}, reverify=reverify_state(member)), status


def _refresh_session_membership(member: dict) -> None:
    mine = memberships()
    for m in mine:
        if m["region_id"] == g.region and (m.get("status") != member.get("status")
                                            or m.get("roles") != member.get("roles")):
            m["status"], m["roles"] = member.get("status"), member.get("roles")
            session["memberships"] = mine


def _changed_meanwhile(r: str):
    """A form sent with an old ETag (412): the page again with the current values."""
    flash(_("Your membership was changed in the meantime. Please check it and try again."))
    return redirect(url_for("portal.my_membership", r=r))


@bp.get("/r/<r>/membership")
@login_required
def my_membership(r):
    member, etag = _member()
    return _membership_page(member, etag)


@bp.get("/r/<r>/members/<m>")
@bp.get("/r/<r>/members/<m>/<path:rest>")
@login_required
def member_by_id(r, m, rest=""):
    """A URL naming a member id (typed, or from an old link): only one's own, and it goes to
    the page that needs no id. Anyone else's id is a 404, as the services would answer."""
    if m != g.member:
        abort(404)
    return redirect(url_for("portal.my_membership", r=r))


@bp.post("/r/<r>/membership/capacity")
@login_required
def update_capacity(r):
    member, etag = _member()
    form = _capacity_form(member, etag, request.form)
    body = {"status": form.status.data or "", "note": (form.note.data or None)}
    if form.since.data:
        body["since"] = form.since.data.isoformat()
    elif request.form.get("since"):
        errors = {"capacity_since": [_("Enter a date as YYYY-MM-DD.")]}
        return _membership_page(member, etag, capacity=form, errors=errors, status=422)
    try:
        gp("PUT", "members", member_path("/capacity"), json=body, if_match=form.etag.data or etag)
    except ApiError as e:
        if e.status == 412:
            return _changed_meanwhile(r)
        if e.status == 422:
            errors = {f"capacity_{k}": v for k, v in fielderrors.flatten(e.errors).items()}
            return _membership_page(member, etag, capacity=form, errors=errors, status=422)
        raise
    flash(_("Your capacity has been saved."))
    return redirect(url_for("portal.my_membership", r=r))


@bp.post("/r/<r>/membership/profile")
@login_required
def update_profile(r):
    member, etag = _member()
    form = _profile_form(member, etag, request.form)
    body = {"given_name": form.given_name.data or "", "family_name": form.family_name.data or "",
            "language": form.language.data or "", "category": form.category.data or "",
            "practice": {"name": form.practice_name.data or "", "postcode": form.practice_postcode.data or "",
                         "municipality": form.practice_municipality.data or ""}}
    try:
        gp("PATCH", "members", member_path(), json=body, if_match=form.etag.data or etag)
    except ApiError as e:
        if e.status == 412:
            return _changed_meanwhile(r)
        if e.status in (409, 422):
            errors = fielderrors.flatten(e.errors) if e.errors else {"": [fielderrors.translate("", e.title)]}
            return _membership_page(member, etag, profile=form, errors=errors, status=422)
        raise
    flash(_("Your details have been saved."))
    return redirect(url_for("portal.my_membership", r=r))


def _form_registration(member: dict, etag: str | None):
    """The registration form's scheme and number (the correction's and the re-confirmation's),
    and the page with the number's error when it is empty (else None)."""
    reg = {"scheme": request.form.get("scheme", "").strip()[:10], "number": request.form.get("number", "").strip()[:40]}
    if reg["number"]:
        return reg, None
    return reg, _membership_page(member, etag, registration=reg, status=422,
                                 errors={"registration_number": [_("This field is required.")]})


@bp.post("/r/<r>/membership/registration")
@login_required
def update_registration(r):
    """Correct one's registration (a new RIZIV competence code, a renewed BIG number): the
    members service applies the sign-up's checks and the region's uniqueness."""
    member, etag = _member()
    reg, missing = _form_registration(member, etag)
    if missing:
        return missing
    try:
        gp("PATCH", "members", member_path(), json={"registration": reg},
           if_match=request.form.get("etag") or etag)
    except ApiError as e:
        if e.status == 412:
            return _changed_meanwhile(r)
        if e.status in (409, 422):
            return _membership_page(member, etag, registration=reg, errors=registration_problem(e), status=422)
        raise
    flash(_("Your registration has been corrected."))
    return redirect(url_for("portal.my_membership", r=r))


@bp.post("/r/<r>/membership/reconfirm")
@login_required
def reconfirm(r):
    """Confirm one's registration is still valid (the periodic re-verification; the
    e-mail links to the membership page). A changed number on the form goes along as the
    correction; an unchanged one is a plain confirmation."""
    member, etag = _member()
    current = member.get("registration") or {}
    reg, missing = _form_registration(member, etag)
    if missing:
        return missing
    reg["scheme"] = reg["scheme"] or current.get("scheme", "")
    body = {} if (reg["scheme"], reg["number"]) == (current.get("scheme"), current.get("number")) \
        else {"registration": reg}
    try:
        gp("POST", "members", member_path("/reconfirm"), json=body, if_match=request.form.get("etag") or etag)
    except ApiError as e:
        if e.status == 412:
            return _changed_meanwhile(r)
        if e.status == 409 and not e.errors and not body:  # no longer active or suspended
            return _membership_page(member, etag, registration=reg, status=409,
                                    errors={"": [_("Only an active or suspended membership can be confirmed.")]})
        if e.status in (409, 422):
            return _membership_page(member, etag, registration=reg, errors=registration_problem(e), status=422)
        raise
    flash(_("Thank you: your registration is confirmed.") if not body
          else _("Thank you: your registration is corrected and confirmed."))
    return redirect(url_for("portal.my_membership", r=r))


# -- votes ----------------------------------------------------------------------------------
def _agreement(r: str, a: str, call=None) -> dict:
    data = (call or gp)("GET", "agreements", f"/v1/regions/{r}/agreements/{check_id(a)}").data
    if data.get("status") == "draft" or data.get("region_id") not in (None, r):
        abort(404)
    return data


@bp.get("/r/<r>/votes")
@login_required
def votes(r):
    open_votes = [a for a in _agreements(r, gp, ("in_consultation",))
                  if (a.get("mandate") or {}).get("status") == "open"]
    return render_template("votes.html", agreements=open_votes)


def _ballot(r: str, a: str) -> dict | None:
    try:
        return gp("GET", "agreements", f"/v1/regions/{r}/agreements/{a}/mandate/votes/{g.member}").data
    except ApiError as e:
        if e.status in (403, 404):
            return None  # not in the electorate, or no vote opened
        raise


@bp.route("/r/<r>/votes/<a>", methods=["GET", "POST"])
@login_required
def ballot(r, a):
    agreement = _agreement(r, a)
    form = VoteForm()
    form.choice.choices = [("for", _("For")), ("against", _("Against")), ("abstain", _("Abstain"))]
    errors: dict = {}
    status = 200
    if request.method == "POST":
        if form.choice.data not in ("for", "against", "abstain"):
            errors = {"choice": [_("Choose for, against or abstain.")]}
            status = 422
        else:
            try:
                gp("PUT", "agreements", f"/v1/regions/{r}/agreements/{a}/mandate/votes/{g.member}",
                   json={"choice": form.choice.data})
                flash(_("Your vote has been recorded. You can change it until the deadline."))
                return redirect(url_for("portal.ballot", r=r, a=a))
            except ApiError as e:
                if e.status in (404,):
                    raise
                if e.problem.get("reason") == "proxy-used":
                    errors = {"": [str(PROXY_REASONS["proxy-used"])]}
                    return _ballot_page(r, agreement, form, errors, 409)
                errors = {"": [_("Your vote could not be recorded: the vote is closed or you are not "
                                 "in its electorate.")]}
                status = 409
    return _ballot_page(r, agreement, form, errors, status)


# Fields of the tally a GP's page may show. The counts (for/against/abstain, per cluster too)
# are in it only when the API reveals them: after the close, or live where the frozen policy
# has ``live_tally``; the portal never derives them.
TALLY_FIELDS = ("status", "turnout", "electorate_size", "cast", "quorum", "approval_threshold", "deadline",
                "closed_at", "opened_at", "body", "policy_version", "live_tally", "max_proxies", "quorum_met",
                "for", "against", "abstain", "threshold_met", "clusters")


def _ballot_page(r: str, agreement: dict, form, errors: dict, status: int, holder: str = ""):
    ballot_data = _ballot(r, agreement["id"])
    mandate = (ballot_data or {}).get("mandate") or agreement.get("mandate")
    if mandate is None:
        abort(404)
    mine = (ballot_data or {}).get("choice")
    if request.method == "GET" or not form.choice.data:
        form.choice.data = mine
    shown = {k: mandate.get(k) for k in TALLY_FIELDS if k in mandate}
    shown.setdefault("status", None)
    is_open = shown["status"] == "open"
    return render_template("ballot.html", agreement=agreement, mandate=shown, my_vote=mine,
                           can_vote=ballot_data is not None and is_open,
                           proxies=is_open and ballot_data is not None and (mandate.get("max_proxies") or 0) > 0,
                           proxy_to=_people((ballot_data or {}).get("proxy_to"))[:1] and
                           _people((ballot_data or {}).get("proxy_to"))[0],
                           proxies_for=_people((ballot_data or {}).get("proxies_for")),
                           holder=holder, form=form, errors=errors), status


def _people(value) -> list[dict]:
    """Proxy givers or holder as the ballot may name them (an id, or ``{member_id, name}``)."""
    items = value if isinstance(value, list) else [value] if value else []
    out = []
    for v in items:
        if isinstance(v, dict):
            out.append({"id": v.get("member_id"), "name": v.get("name") or v.get("member_id") or ""})
        elif isinstance(v, str):
            out.append({"id": v, "name": v})
    return out


PROXY_REASONS = {
    "proxies-not-allowed": _l("This vote allows no proxies."),
    "already-voted": _l("A proxy is possible only while neither of you has voted."),
    "proxy-exists": _l("You have already given your proxy. Revoke it first."),
    "proxy-chain": _l("A proxy cannot be passed on: this colleague gave their proxy, or you carry one."),
    "too-many-proxies": _l("This colleague already carries the most proxies allowed."),
    "proxy-used": _l("Your proxy has been used: the colleague who holds it has voted for you."),
    "deadline-passed": _l("The vote has closed."),
}


def _proxy_problem(e: ApiError) -> dict:
    if e.status == 422 and e.errors:
        flat = fielderrors.flatten(e.errors)
        return {"holder": [m for msgs in flat.values() for m in msgs]}
    if e.status == 403:
        return {"holder": [_("This member number is not an elector in this vote.")]}
    reason = str(e.problem.get("reason") or "")
    if reason in PROXY_REASONS:
        return {"": [str(PROXY_REASONS[reason])]}
    return {"": [_("This is not possible now.")]}


@bp.post("/r/<r>/votes/<a>/proxy")
@login_required
def give_proxy(r, a):
    """Give one's proxy to another elector (only where the vote's frozen policy allows them)."""
    agreement = _agreement(r, a)
    form = VoteForm(formdata=None)
    form.choice.choices = [("for", _("For")), ("against", _("Against")), ("abstain", _("Abstain"))]
    holder = request.form.get("holder", "").strip()[:64]
    if not holder:
        return _ballot_page(r, agreement, form, {"holder": [_("Enter your colleague's member number.")]}, 422)
    if holder == g.member:
        return _ballot_page(r, agreement, form, {"holder": [_("Choose a colleague, not yourself.")]}, 422, holder)
    try:
        gp("POST", "agreements", f"/v1/regions/{r}/agreements/{a}/mandate/proxies",
           json={"giver": g.member, "holder": holder})
    except ApiError as e:
        if e.status == 404:
            raise
        return _ballot_page(r, agreement, form, _proxy_problem(e), 422 if e.status == 422 else 409, holder)
    flash(_("Your proxy has been given. You can revoke it until your colleague votes."))
    return redirect(url_for("portal.ballot", r=r, a=a))


@bp.post("/r/<r>/votes/<a>/proxy/revoke")
@login_required
def revoke_proxy(r, a):
    agreement = _agreement(r, a)
    form = VoteForm(formdata=None)
    form.choice.choices = [("for", _("For")), ("against", _("Against")), ("abstain", _("Abstain"))]
    try:
        gp("DELETE", "agreements", f"/v1/regions/{r}/agreements/{a}/mandate/proxies/{g.member}")
    except ApiError as e:
        if e.status == 404 and "has given no proxy" in e.title:
            return _ballot_page(r, agreement, form, {"": [_("You have not given a proxy in this vote.")]}, 409)
        if e.status == 404:
            raise
        return _ballot_page(r, agreement, form, _proxy_problem(e), 409)
    flash(_("Your proxy has been revoked. You can vote yourself again."))
    return redirect(url_for("portal.ballot", r=r, a=a))


# -- agreements -----------------------------------------------------------------------------
@bp.get("/r/<r>/agreements")
@login_required
def agreements(r):
    items = _agreements(r, gp)
    groups = {"active": [a for a in items if a.get("status") == "active"],
              "upcoming": [a for a in items if a.get("status") in UPCOMING],
              "ended": [a for a in items if a.get("status") in ENDED]}
    return render_template("agreements.html", groups=groups)


@bp.get("/r/<r>/agreements/<a>")
@login_required
def agreement(r, a):
    return render_template("agreement.html", agreement=_agreement(r, a))


# -- my data, leaving, erasure --------------------------------------------------------------
@bp.get("/r/<r>/my-data")
@login_required
def my_data(r):
    return render_template("my_data.html")


@bp.get("/r/<r>/my-data.json")
@login_required
def my_data_json(r):
    members_export = gp("GET", "members", member_path("/export")).data
    notify_export = gp("GET", "notify", member_path("/export")).data
    doc = {"exported_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
           "region_id": g.region, "member_id": g.member,
           "members": members_export, "notify": notify_export,
           "portal": {"email": session.get("email"), "sessions": store().sessions_of(g.member)}}
    body = json.dumps(doc, ensure_ascii=False, indent=2, default=_json_default)
    resp = Response(body, mimetype="application/json")
    resp.headers["Content-Disposition"] = f'attachment; filename="hecht-{g.region}-{g.member}.json"'
    return resp


def _json_default(o):
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    return str(o)


@bp.route("/r/<r>/leave", methods=["GET", "POST"])
@login_required
def leave(r):
    form = LeaveForm()
    if request.method == "POST" and form.validate():
        try:
            gp("POST", "members", member_path("/leave"), json={"reason": form.reason.data or None})
        except ApiError as e:
            if e.status != 409:
                raise
            flash(_("You cannot leave in your membership's current state."))
            return redirect(url_for("portal.my_membership", r=r))
        flash(_("You have left the region."))
        return redirect(url_for("portal.my_membership", r=r))
    return render_template("leave.html", form=form)


@bp.route("/r/<r>/erase", methods=["GET", "POST"])
@login_required
def erase(r):
    form = EraseForm()
    errors: dict = {}
    if request.method == "POST":
        if not form.validate():
            errors = {"confirm": [_("Tick the box to confirm.")]}
            return render_template("erase.html", form=form, errors=errors), 422
        gp("DELETE", "members", member_path())
        # The person's other sessions holding this membership end, found by its member id: one
        # signed in with another spelling of the address is theirs too.
        store().end_sessions_of(g.member, keep_sid=session.sid)
        mine = [m for m in memberships() if m["region_id"] != r]
        session["memberships"] = mine
        session.pop("region", None)
        if not mine:
            # Nothing left to sign in to: the unused links go, and this session ends too.
            store().forget_links(session.get("email"))
            session.end()
        flash(_("Your personal data in this region has been erased."))
        return redirect(url_for("portal.index"))
    return render_template("erase.html", form=form, errors=errors)
