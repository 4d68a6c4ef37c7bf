"""The portal suite: every part of hecht as a real process (tests/support/fleet.py) and
``requests`` as a browser without JavaScript.

Helpers here drive the APIs as region staff would (``Hecht``) and the portal as a person
would (``Browser``), reading sign-in links from the SMTP sink's Maildir.
"""
from __future__ import annotations

import re
import uuid
from datetime import date, timedelta

import pytest
import requests

from tests.conftest import bearer, wait_until
from tests.support import maildir
from tests.support.fleet import fleet

LINK_RE = re.compile(r"https?://\S+/sign-in/[A-Za-z0-9_-]+")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def portal_fleet(hecht_env, tmp_path):
    """members, agreements, notify (+ workers) and the portal, on free ports; stopped by pid."""
    with fleet(hecht_env, tmp_path) as f:
        yield f


class Hecht:
    """The APIs, called as platform and region staff."""

    def __init__(self, urls: dict):
        self.urls = urls

    def region(self, country: str = "BE", municipalities=("Gent", "Merelbeke")) -> str:
        rid = f"r-{uuid.uuid4().hex[:8]}"
        r = requests.post(f"{self.urls['members']}/v1/regions", headers=bearer("platform-admin"), timeout=10,
                          json={"id": rid, "name": f"Regio {rid}", "country": country, "kind": "eerstelijnszone",
                                "municipalities": list(municipalities),
                                "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5,
                                                   "voting_period_days": 14}})
        assert r.status_code == 201, r.text
        from tests.integration.test_notify_support import wait_for_region
        wait_for_region(rid)  # notify makes integrators and subscriptions only in a region it knows
        return rid

    def sign_up(self, region: str, email: str, number: str = "10185748004", language: str = "nl") -> str:
        r = requests.post(f"{self.urls['members']}/v1/regions/{region}/members", timeout=10,
                          headers=bearer("region-admin", region), json={
            "given_name": "An", "family_name": "Peeters", "email": email, "language": language,
            "registration": {"scheme": "RIZIV", "number": number},
            "practice": {"name": "Praktijk Zuid", "postcode": "9000", "municipality": "Gent"}})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def approve(self, region: str, member: str) -> None:
        r = requests.post(f"{self.urls['members']}/v1/regions/{region}/members/{member}/approve",
                          headers=bearer("region-admin", region), timeout=10)
        assert r.status_code == 200, r.text

    def member(self, region: str, member: str) -> dict:
        r = requests.get(f"{self.urls['members']}/v1/regions/{region}/members/{member}",
                         headers=bearer("region-admin", region), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def agreement(self, region: str, title: str = "Transmurale zorg") -> str:
        def draft():
            r = requests.post(f"{self.urls['agreements']}/v1/regions/{region}/agreements",
                              headers=bearer("region-admin", region), timeout=10, json={
                                  "title": title, "theme": "frail-elderly", "summary": "Ontslag uit het ziekenhuis",
                                  "partners": [{"name": "AZ Sint-Lucas", "kind": "hospital"}],
                                  "commitments": [{"party": "AZ Sint-Lucas", "text": "Ontslagbrief binnen 24 uur"}],
                                  "municipalities": ["Gent"],
                                  "effective_from": (date.today() + timedelta(days=60)).isoformat()})
            return None if r.status_code == 404 else [r]   # 404 until agreements has seen region.registered
        [r] = wait_until(draft, timeout=60, message=f"agreements to know region {region}")
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def open_vote(self, region: str, agreement: str, electorate: int = 1) -> None:
        """Open the mandate vote once the agreements service knows ``electorate`` active members:
        it learns them from the members' events only, and the electorate is frozen at opening."""
        from hecht import mongo
        from hecht.config import settings
        s = settings("agreements")
        db = mongo.database(s.mongo_uri, s.database_name)

        def known() -> bool:
            return any(db[c].count_documents({"region_id": region, "status": "active"}) >= electorate
                       for c in db.list_collection_names())
        wait_until(known, timeout=60, message="agreements to see the active members")
        r = requests.post(f"{self.urls['agreements']}/v1/regions/{region}/agreements/{agreement}/mandate",
                          headers=bearer("region-admin", region), json={}, timeout=10)
        assert r.status_code == 201, r.text


class Browser:
    """A person with a browser without JavaScript: cookies, CSRF tokens from the pages."""

    def __init__(self, portal: str):
        self.portal = portal
        self.s = requests.Session()
        self.last: requests.Response | None = None

    def get(self, path: str, **kw) -> requests.Response:
        self.last = self.s.get(self._url(path), timeout=15, **kw)
        return self.last

    def post(self, path: str, data: dict | None = None, *, csrf_from: str | None = None, csrf: bool = True,
             **kw) -> requests.Response:
        data = dict(data or {})
        if csrf and "csrf_token" not in data:
            page = self.s.get(self._url(csrf_from or path), timeout=15)
            data["csrf_token"] = token_of(page.text)
        kw.setdefault("allow_redirects", False)
        self.last = self.s.post(self._url(path), data=data, timeout=15, **kw)
        return self.last

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.portal}{path}"

    @property
    def session_cookie(self) -> str | None:
        return self.s.cookies.get("hecht_session")

    def ask_link(self, email: str, next_path: str = "") -> requests.Response:
        return self.post("/sign-in", {"email": email, "next": next_path}, csrf_from="/sign-in")

    def sign_in(self, email: str, next_path: str = "") -> requests.Response:
        """Ask for a link, read it from the Maildir, press the button; the final response."""
        before = len(mails(email))
        r = self.ask_link(email, next_path)
        assert r.status_code == 302, r.text
        link = wait_for_link(email, before)
        r = self.use_link(link)
        assert r.status_code == 302, r.text
        return r

    def use_link(self, link: str) -> requests.Response:
        page = self.get(link)
        if page.status_code != 200:
            return page
        return self.post(link, {"csrf_token": token_of(page.text)})


def token_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def mails(to: str) -> list:
    return maildir.messages(to=to)


def body_of(msg) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


def wait_for_link(email: str, before: int = 0) -> str:
    """The newest sign-in link mailed to ``email`` after the first ``before`` messages (other
    mails, e.g. notify's, may arrive in between)."""
    def newest_link():
        for msg in reversed(mails(email)[before:]):
            m = LINK_RE.search(body_of(msg))
            if m:
                return m.group(0)
        return None
    return wait_until(newest_link, timeout=20, message=f"a sign-in mail to {email}")


def field_error(html: str, field_id: str) -> str | None:
    """The error shown next to a field: the element its aria-describedby names."""
    m = re.search(rf'<small id="{re.escape(field_id)}-error" class="field-error">([^<]*)</small>', html)
    return m.group(1) if m else None


@pytest.fixture
def hecht(portal_fleet) -> Hecht:
    return Hecht(portal_fleet.urls)


@pytest.fixture
def browser(portal_fleet) -> Browser:
    return Browser(portal_fleet.urls["portal"])


def new_email() -> str:
    return f"gp.{uuid.uuid4().hex[:10]}@example.org"
