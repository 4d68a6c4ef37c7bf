"""A crawler over the portal and the consoles (issue 22, medium item 4): a populated region,
then, signed in as each role (platform admin, region admin, an approved GP, an integrator's
contact, and nobody), every same-origin link and every value of every GET filter form on every
page reached, GET only. Any 5xx (or a dropped connection, or a stack trace) fails the test,
listing the URLs.

The region holds members in five statuses, agreements in five states (a draft, an open vote, a
rejected vote, a terminated agreement and its amendment), an invited integrator (its invitation
is a notification without a member), an active one with a subscription, notifications, and
three staff accounts.
"""
from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urldefrag, urlencode, urljoin, urlsplit, urlunsplit

import requests

from tests.conftest import bearer, wait_until

from .conftest import Browser, new_email
from .test_console import _riziv, _staff

MAX_PER_ROLE = 400      # URLs fetched per role, at most
MAX_PER_PATH = 25       # query-string variants of one path, at most (filters × paging)
SKIP_PREFIXES = ("/static/", "/sign-out", "/sign-in/oidc", "/metrics")


class Page(HTMLParser):
    """The links and the GET forms of a page (each form: its fields and their options)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.forms: list[dict] = []
        self._form: dict | None = None
        self._select: dict | None = None
        self._option: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "form":
            self._form = {"method": a.get("method", "get").lower(), "action": a.get("action", ""), "fields": []}
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio"):
                self._form["fields"].append({"name": a["name"], "kind": kind, "value": a.get("value", "on"),
                                             "checked": "checked" in a})
            else:
                self._form["fields"].append({"name": a["name"], "kind": "text", "value": a.get("value", "")})
        elif tag == "textarea" and a.get("name"):
            self._form["fields"].append({"name": a["name"], "kind": "text", "value": ""})
        elif tag == "select" and a.get("name"):
            self._select = {"name": a["name"], "kind": "select", "options": [], "value": None}
            self._form["fields"].append(self._select)
        elif tag == "option" and self._select is not None:
            self._option = {"value": a.get("value"), "text": "", "selected": "selected" in a}
            self._select["options"].append(self._option)

    def handle_data(self, data):
        if self._option is not None:
            self._option["text"] += data

    def handle_endtag(self, tag):
        if tag == "option" and self._option is not None:
            if self._option["value"] is None:
                self._option["value"] = self._option["text"].strip()
            self._option = None
        elif tag == "select":
            self._select = None
        elif tag == "form":
            self._form = None


def form_urls(page_url: str, form: dict) -> list[str]:
    """The form submitted as it is, then once per option of each of its selects (and with each
    checkbox or radio value on its own), the other fields as they are."""
    def defaults() -> list[tuple[str, str]]:
        pairs = []
        for f in form["fields"]:
            if f["kind"] == "select":
                chosen = [o for o in f["options"] if o["selected"]] or f["options"][:1]
                pairs += [(f["name"], o["value"]) for o in chosen]
            elif f["kind"] in ("checkbox", "radio"):
                if f["checked"]:
                    pairs.append((f["name"], f["value"]))
            else:
                pairs.append((f["name"], f["value"]))
        return pairs

    base = urljoin(page_url, form["action"] or page_url).split("?", 1)[0]
    variants = [defaults()]
    for f in form["fields"]:
        values = ([o["value"] for o in f["options"]] if f["kind"] == "select"
                  else [f["value"]] if f["kind"] in ("checkbox", "radio") else [])
        for v in values:
            pairs = [(n, x) for n, x in defaults() if n != f["name"]] + [(f["name"], v)]
            variants.append(pairs)
    return [f"{base}?{urlencode(p)}" if p else base for p in variants]


class Crawler:
    def __init__(self, browser: Browser, origin: str):
        self.b, self.origin = browser, origin
        self.seen: set[str] = set()
        self.per_path: dict[str, int] = {}
        self.fetched: dict[str, int] = {}
        self.failures: list[str] = []

    def same_origin(self, url: str) -> str | None:
        url = urldefrag(url)[0]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or f"{parts.scheme}://{parts.netloc}" != self.origin:
            return None
        if parts.path.startswith(SKIP_PREFIXES):
            return None
        return urlunsplit(parts)

    def crawl(self, *starts: str) -> None:
        queue = [urljoin(self.origin, s) for s in starts]
        while queue and len(self.fetched) < MAX_PER_ROLE:
            url = self.same_origin(queue.pop(0))
            if not url or url in self.seen:
                continue
            path = urlsplit(url).path
            if self.per_path.get(path, 0) >= MAX_PER_PATH:
                continue
            self.seen.add(url)
            self.per_path[path] = self.per_path.get(path, 0) + 1
            try:
                r = self.b.s.get(url, timeout=20, allow_redirects=False)
            except requests.RequestException as e:
                self.failures.append(f"{url} → {type(e).__name__}")
                continue
            self.fetched[url] = r.status_code
            if r.status_code >= 500 or "Traceback" in r.text:
                self.failures.append(f"{url} → {r.status_code}")
                continue
            if r.is_redirect:
                queue.append(urljoin(url, r.headers.get("Location", "")))
                continue
            if r.status_code != 200 or not r.headers.get("Content-Type", "").startswith("text/html"):
                continue
            page = Page()
            page.feed(r.text)
            queue += [urljoin(url, href) for href in page.links]
            for form in page.forms:
                if form["method"] == "get":
                    queue += form_urls(url, form)

    def reached(self, prefix: str, code: int = 200, **params: str) -> bool:
        """A URL whose path starts with ``prefix`` and whose query has ``params`` answered ``code``."""
        for url, got in self.fetched.items():
            parts = urlsplit(url)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            if got == code and parts.path.startswith(prefix) and params.items() <= query.items():
                return True
        return False


# -- populating the region through the APIs --------------------------------------------------
def _member(hecht, region: str, seq: int, family: str) -> tuple[str, str]:
    """A sign-up as the region's admin would enter it (the public form's answer names no id)."""
    email = new_email()
    r = requests.post(f"{hecht.urls['members']}/v1/regions/{region}/members", timeout=10,
                      headers=bearer("region-admin", region), json={
                          "given_name": "An", "family_name": family, "email": email, "language": "nl",
                          "registration": {"scheme": "RIZIV", "number": _riziv(seq)},
                          "practice": {"name": f"Praktijk {family}", "postcode": "9000", "municipality": "Gent"}})
    assert r.status_code == 201, r.text
    return r.json()["id"], email


def _as_admin(hecht, region: str, service: str, path: str, json=None, method: str = "POST", *,
              headers: dict | None = None) -> dict:
    """A call as the region's admin (or with ``headers``); a 404 is retried for a while: agreements
    and notify learn of a new region from the members' events."""
    url = f"{hecht.urls[service]}/v1/regions/{region}{path}"

    def call():
        r = requests.request(method, url, json=json, timeout=10, headers=headers or bearer("region-admin", region))
        return None if r.status_code == 404 else [r]
    [r] = wait_until(call, timeout=60, message=f"{method} {path} to find the region")
    assert r.status_code in (200, 201), (path, r.status_code, r.text[:300])
    return r.json()


def _agreement(hecht, region: str, title: str, start: date) -> str:
    return _as_admin(hecht, region, "agreements", "/agreements", {
        "title": title, "theme": "frail-elderly", "summary": "Ontslag uit het ziekenhuis",
        "partners": [{"name": "AZ Sint-Lucas", "kind": "hospital"}],
        "commitments": [{"party": "AZ Sint-Lucas", "text": "Ontslagbrief binnen 24 uur"}],
        "municipalities": ["Gent"], "effective_from": start.isoformat()})["id"]


def _status(hecht, region: str, agreement: str) -> str:
    return _as_admin(hecht, region, "agreements", f"/agreements/{agreement}", method="GET")["status"]


def _electorate_settled(region: str, active: int) -> None:
    """Wait until the agreements service (which learns members from their events) counts exactly
    ``active`` active members in the region: the electorate is frozen when a vote opens."""
    from hecht import mongo
    from hecht.config import settings
    s = settings("agreements")
    db = mongo.database(s.mongo_uri, s.database_name)

    view = db["members_view"]

    def counted() -> bool:
        return (view.count_documents({"region_id": region, "status": "active"}) == active
                and view.count_documents({"region_id": region, "status": {"$in": ["suspended", "left"]}}) == 2)
    wait_until(counted, timeout=60, message="agreements to see the members' statuses")


def _populate(hecht) -> dict:
    region = hecht.region()
    # staff: a region admin, a platform admin, one invited who never signed in
    _s, admin_email = _staff(hecht, admin_of=[region])
    _s, platform_email = _staff(hecht, platform_admin=True)
    _staff(hecht, admin_of=[region])
    # members: active (the GP who signs in, and one more), pending, rejected, suspended, left
    gp, gp_email = _member(hecht, region, 301, "Actief")
    other, _ = _member(hecht, region, 302, "Tweede")
    _member(hecht, region, 303, "Wachtend")
    rejected, _ = _member(hecht, region, 304, "Afgewezen")
    suspended, _ = _member(hecht, region, 305, "Geschorst")
    left, _ = _member(hecht, region, 306, "Vertrokken")
    for m in (gp, other, suspended, left):
        hecht.approve(region, m)
    _as_admin(hecht, region, "members", f"/members/{rejected}/reject", {"reason": "Geen huisarts"})
    _as_admin(hecht, region, "members", f"/members/{suspended}/suspend", {"reason": "Tijdelijk"})
    _as_admin(hecht, region, "members", f"/members/{left}/leave", {"reason": "Verhuisd"})

    # integrators: one stays invited (its invitation: a notification without a member), one signs in
    invited_mail, contact_mail = (f"int.{uuid.uuid4().hex[:8]}@example.org" for _ in range(2))
    for name, mail in (("Apotheek Uitgenodigd", invited_mail), ("Ziekenhuis Actief", contact_mail)):
        app_id = _as_admin(hecht, region, "notify", "/integrators",
                           {"name": name, "contact_email": mail, "event_types": ["agreement.*"]})["id"]
    _as_admin(hecht, region, "notify", f"/integrators/{app_id}", {"status": "active"}, method="PATCH")
    _as_admin(hecht, region, "notify", "/subscriptions", {"url": "https://example.org/hook",
                                                          "event_types": ["agreement.*"]},
              headers=bearer("integrator", region, sub=app_id))

    # agreements: a draft, an open vote, a rejected vote, one terminated (and its amendment in draft)
    today = date.today()
    _agreement(hecht, region, "Concept blijft concept", today + timedelta(days=60))
    open_vote = _agreement(hecht, region, "Stemming loopt", today + timedelta(days=60))
    rejected_vote = _agreement(hecht, region, "Stemming verworpen", today + timedelta(days=60))
    ended = _agreement(hecht, region, "Beëindigd akkoord", today)
    _electorate_settled(region, 2)  # the two active members, not the suspended one or the one who left
    for a in (open_vote, rejected_vote, ended):
        _as_admin(hecht, region, "agreements", f"/agreements/{a}/mandate", {})
    for voter in (gp, other):
        _as_admin(hecht, region, "agreements", f"/agreements/{ended}/mandate/votes/{voter}", {"choice": "for"},
                  method="PUT", headers=bearer("gp", region, voter))
    for a in (rejected_vote, ended):
        if _status(hecht, region, a) == "in_consultation":
            _as_admin(hecht, region, "agreements", f"/agreements/{a}/mandate/close", {})
    assert _status(hecht, region, rejected_vote) == "rejected"
    _as_admin(hecht, region, "agreements", f"/agreements/{ended}/sign", {})
    wait_until(lambda: _status(hecht, region, ended) == "active", timeout=30, message="the agreement in force")
    _as_admin(hecht, region, "agreements", f"/agreements/{ended}/amendments", {})
    _as_admin(hecht, region, "agreements", f"/agreements/{ended}/terminate", {"reason": "Partner gestopt"})

    # notifications: the invitations at once; the members' (approved, vote opened, …) from the worker
    def member_notifications() -> bool:
        items = _as_admin(hecht, region, "notify", "/notifications?limit=200", method="GET")["items"]
        return any(n.get("member_id") for n in items) and any(not n.get("member_id") for n in items)
    wait_until(member_notifications, timeout=30, message="notifications for members and the invitation")
    return {"region": region, "admin": admin_email, "platform": platform_email, "gp": gp_email,
            "integrator": contact_mail, "app": app_id}


def test_every_link_and_filter_of_every_page_as_each_role_answers_without_a_5xx(portal_fleet, hecht):
    started = time.monotonic()
    world = _populate(hecht)
    region, portal = world["region"], portal_fleet.urls["portal"]
    roles = {
        "platform admin": (world["platform"], ["/", "/platform", f"/admin/{region}"]),
        "region admin": (world["admin"], ["/", f"/admin/{region}"]),
        "GP": (world["gp"], ["/", f"/r/{region}/membership"]),
        "integrator": (world["integrator"], ["/", f"/integrations/{region}", "/integrations/catalogue"]),
        "nobody": (None, ["/", "/regions", f"/regions/{region}", "/sign-in", "/integrations/catalogue"]),
    }
    failures, crawlers = [], {}
    for role, (email, starts) in roles.items():
        b = Browser(portal)
        b.s.headers["Accept-Language"] = "nl"
        if email:
            b.sign_in(email)
        c = crawlers[role] = Crawler(b, portal)
        c.crawl(*starts)
        failures += [f"{role}: {f}" for f in c.failures]
    assert not failures, "5xx (or no answer) from the portal:\n" + "\n".join(failures)

    # The crawl did reach the pages that matter (a crawler that reaches nothing proves nothing).
    admin, gp, app, platform = (crawlers[r] for r in ("region admin", "GP", "integrator", "platform admin"))
    console = f"/admin/{region}"
    for path, params in (("/notifications", {}), ("/notifications", {"status": "sent"}),
                         ("/integrators", {"status": "invited"}), ("/members", {"status": "suspended"}),
                         ("/agreements", {"status": "terminated"}), ("/capacity.csv", {}), ("/staff", {}),
                         ("/settings", {}), ("/members/", {}), ("/agreements/", {})):
        assert admin.reached(console + path, **params), (path, params)
    assert platform.reached("/platform/staff") and platform.reached(f"/platform/regions/{region}")
    assert platform.reached(f"{console}/notifications")
    assert gp.reached(f"/r/{region}/votes/") and gp.reached(f"/r/{region}/my-data.json")
    assert app.reached(f"/integrations/{region}/{world['app']}/subscriptions/", status="failed")
    counts = {role: len(c.fetched) for role, c in crawlers.items()}
    assert all(n < MAX_PER_ROLE for n in counts.values()), counts  # the bound was not what stopped it
    print(f"crawled {counts} in {time.monotonic() - started:.1f} s")
