"""``hecht demo``: seed a small, populated region through the HTTP APIs, idempotently.

Run it as often as you like: every step first reads what is there and only does what is
missing, so a second run changes nothing and creates no duplicates. The creating calls also
carry fixed ``Idempotency-Key`` headers (with a fixed token subject, since the services scope
keys by it), so two runs racing each other replay instead of doubling up.

What it builds (region ``elz-demo``):

- the region, with four municipalities and a mandate policy;
- five GPs: three active (capacity open, limited, closed), one pending sign-up, one suspended;
- agreement "Weekendpermanentie wachtpost Gent" with partners, voted through by the active
  GPs and signed (the agreements scheduler activates it on its start date, today);
- agreement "Transmurale zorg kwetsbare ouderen" with partners and an **open** mandate vote
  (one GP has voted, so the ballot page shows some turnout);
- two staff accounts (``POST /v1/staff``): ``admin@demo.hecht.local`` (platform admin) and
  ``coordinator@demo.hecht.local`` (region admin of the demo region). They become active at
  their first sign-in.

The agreements service learns about members from their events (Kafka). Before it opens a
vote (which freezes the electorate) the demo waits until the agreements service has seen
the demo GPs' current statuses; there is no HTTP endpoint for that projection, so it reads
the agreements database (``members_view``, read only), as the end-to-end test does. When the
database is not reachable from here it waits a fixed time instead.

Sign in as a demo person at ``<portal>/sign-in`` with their address: the link lands in the
SMTP sink's Maildir (``$HECHT_MAILDIR``) and, in development, in the portal's log.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import requests

from hecht import emails

REGION = "elz-demo"
SUBJECT = "demo:hecht"   # fixed token subject: Idempotency-Key replies are scoped by it
KEY_PREFIX = "hecht-demo-v1"

REGION_BODY = {
    "id": REGION, "name": "ELZ Demo Gent", "country": "BE", "kind": "eerstelijnszone",
    "municipalities": ["Gent", "Merelbeke", "Melle", "Destelbergen"],
    "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14},
}


def riziv(serial: int, competence: str = "004") -> str:
    """A valid RIZIV/INAMI number: serial, check digits 97 − (N6 mod 97), GP competence code."""
    n6 = 100000 + serial
    return f"{n6}{97 - n6 % 97:02d}{competence}"


@dataclass(frozen=True)
class Person:
    key: str
    given_name: str
    family_name: str
    email: str
    language: str
    serial: int
    practice: str
    postcode: str
    municipality: str
    status: str                       # pending | active | suspended
    capacity: tuple[str, str] | None = None   # (open|limited|closed, note)
    since_days_ago: int = 30

    def sign_up_body(self) -> dict:
        return {"given_name": self.given_name, "family_name": self.family_name, "email": self.email,
                "language": self.language, "registration": {"scheme": "RIZIV", "number": riziv(self.serial)},
                "practice": {"name": self.practice, "postcode": self.postcode, "municipality": self.municipality}}


PEOPLE = (
    Person("an", "An", "Peeters", "an.peeters@demo.hecht.example.org", "nl", 7101, "Huisartsenpraktijk Zuid",
           "9000", "Gent", "active", ("open", "Nieuwe patiënten welkom"), 120),
    Person("bram", "Bram", "Claes", "bram.claes@demo.hecht.example.org", "nl", 7102, "Groepspraktijk Merelbeke",
           "9820", "Merelbeke", "active", ("limited", "Alleen gezinsleden van patiënten"), 45),
    Person("camille", "Camille", "Dubois", "camille.dubois@demo.hecht.example.org", "fr", 7103,
           "Cabinet médical Melle", "9090", "Melle", "active", ("closed", "Patiëntenstop tot 1 maart"), 10),
    Person("dirk", "Dirk", "Janssens", "dirk.janssens@demo.hecht.example.org", "nl", 7104, "Praktijk De Brug",
           "9070", "Destelbergen", "pending"),
    Person("emma", "Emma", "Wouters", "emma.wouters@demo.hecht.example.org", "en", 7105, "Praktijk Wouters",
           "9000", "Gent", "suspended"),
)
SUSPEND_REASON = "Demo: RIZIV-erkenning wordt nagekeken"


def _agreements(today: date) -> tuple[dict, dict]:
    active = {
        "title": "Weekendpermanentie wachtpost Gent", "theme": "out-of-hours",
        "summary": "De huisartsen van de zone verzorgen samen de weekendpermanentie vanuit de wachtpost "
                   "naast de spoeddienst; de stad Gent stelt de locatie ter beschikking.",
        "partners": [{"name": "Huisartsenwachtpost Gent", "kind": "out-of-hours-post"},
                     {"name": "Stad Gent", "kind": "municipality"}],
        "commitments": [{"party": "ELZ Demo Gent", "text": "Elke zaterdag en zondag twee huisartsen van wacht."},
                        {"party": "Stad Gent", "text": "Gratis gebruik van de locatie aan het AZ."}],
        "municipalities": ["Gent", "Merelbeke"], "effective_from": today.isoformat(),
        "effective_until": (today + timedelta(days=730)).isoformat(),
        "review_date": (today + timedelta(days=365)).isoformat(),
        "documents": [{"title": "Samenwerkingsovereenkomst", "url": "https://example.org/wachtpost.pdf"}],
    }
    voting = {
        "title": "Transmurale zorg kwetsbare ouderen", "theme": "frail-elderly",
        "summary": "Afspraken tussen de huisartsen, het ziekenhuis en de thuisverpleging over het ontslag "
                   "van kwetsbare ouderen uit het ziekenhuis.",
        "partners": [{"name": "AZ Sint-Lucas", "kind": "hospital"},
                     {"name": "Wit-Gele Kruis Oost-Vlaanderen", "kind": "home-nursing"}],
        "commitments": [{"party": "AZ Sint-Lucas", "text": "Ontslagbrief binnen 24 uur bij de huisarts."},
                        {"party": "Wit-Gele Kruis Oost-Vlaanderen", "text": "Eerste huisbezoek binnen 2 dagen."},
                        {"party": "ELZ Demo Gent", "text": "Huisbezoek door de huisarts binnen 3 dagen."}],
        "municipalities": ["Gent", "Merelbeke", "Melle"],
        "effective_from": (today + timedelta(days=30)).isoformat(),
        "effective_until": (today + timedelta(days=30 + 365)).isoformat(),
        "review_date": (today + timedelta(days=30 + 180)).isoformat(),
        "documents": [{"title": "Tekst van de afspraak", "url": "https://example.org/transmuraal.pdf"}],
    }
    return active, voting


@dataclass(frozen=True)
class StaffMember:
    key: str
    name: str
    email: str
    language: str
    platform_admin: bool
    admin_of: tuple[str, ...]

    @property
    def role(self) -> str:
        return "platform admin" if self.platform_admin else "region admin"


STAFF = (
    StaffMember("admin", "Demo Admin", "admin@demo.hecht.local", "nl", True, ()),
    StaffMember("coordinator", "Demo Coördinator", "coordinator@demo.hecht.local", "nl", False, (REGION,)),
)


class DemoError(RuntimeError):
    pass


@dataclass
class Demo:
    members_url: str
    agreements_url: str
    portal_url: str
    out: object = sys.stdout
    timeout_s: float = 60.0
    http: requests.Session = field(default_factory=requests.Session)
    changes: list[str] = field(default_factory=list)
    _ids: dict[str, str] = field(default_factory=dict)

    # -- plumbing ----------------------------------------------------------------------------
    def _token(self, role: str, region: str | None = None, member: str | None = None) -> dict:
        from .auth import mint
        from .config import settings
        sub = f"member:{member}" if member else SUBJECT
        token = mint(settings("cli"), roles=[role], region=region, member=member, ttl=600, sub=sub)
        return {"Authorization": f"Bearer {token}"}

    def _call(self, method: str, url: str, *, ok=(200,), key: str | None = None, **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if key:
            headers["Idempotency-Key"] = f"{KEY_PREFIX}:{key}"
        for attempt in range(20):
            r = self.http.request(method, url, headers=headers, timeout=30, **kw)
            busy = r.status_code == 409 and "still being processed" in r.text
            if r.status_code in ok and not busy:
                return r
            # 409 "still being processed" (a concurrent run), 503 (a transient conflict): retry
            if r.status_code in (409, 503) and attempt < 19 and (r.status_code == 503 or "retry" in r.text):
                time.sleep(0.5)
                continue
            raise DemoError(f"{method} {url} answered {r.status_code}: {r.text[:500]}")
        raise AssertionError("unreachable")

    def _did(self, what: str) -> None:
        self.changes.append(what)
        print(f"demo: {what}", file=self.out)

    @property
    def admin(self) -> dict:
        return self._token("region-admin", REGION)

    # -- steps ---------------------------------------------------------------------------------
    def region(self) -> None:
        platform = self._token("platform-admin")
        r = self.http.get(f"{self.members_url}/v1/regions/{REGION}", headers=platform, timeout=30)
        if r.status_code == 200:
            return
        if r.status_code != 404:
            raise DemoError(f"GET region {REGION}: {r.status_code} {r.text[:300]}")
        self._call("POST", f"{self.members_url}/v1/regions", ok=(201,), key=f"region:{REGION}",
                   headers=platform, json=REGION_BODY)
        self._did(f"registered region {REGION}")

    def _staff_by_email(self, email: str) -> dict | None:
        page = self._call("GET", f"{self.members_url}/v1/staff", headers=self._token("platform-admin"),
                          params={"q": email, "limit": 200}).json()
        return next((a for a in page["items"] if emails.key(a["email"]) == emails.key(email)), None)

    def staff(self) -> dict[str, dict]:
        """Each demo staff account invited, with at least its demo roles; returns key → account."""
        platform = self._token("platform-admin")
        out = {}
        for p in STAFF:
            a = self._staff_by_email(p.email)
            if a is None:
                body = {"email": p.email, "name": p.name, "language": p.language,
                        "platform_admin": p.platform_admin, "admin_of": list(p.admin_of)}
                r = self._call("POST", f"{self.members_url}/v1/staff", ok=(201, 409), key=f"staff:{p.key}",
                               headers=platform, json=body)
                a = r.json() if r.status_code == 201 else self._staff_by_email(p.email)
                if a is None:
                    raise DemoError(f"staff account {p.email}: 409 and not listed: {r.text[:300]}")
                if r.status_code == 201:
                    self._did(f"invited {p.role} {p.name} ({p.email})")
            elif a["status"] == "revoked":
                print(f"demo: note: staff account {p.email} is revoked (left as it is)", file=self.out)
            elif (p.platform_admin and not a["platform_admin"]) or not set(p.admin_of) <= set(a["admin_of"]):
                body = {"platform_admin": a["platform_admin"] or p.platform_admin,
                        "admin_of": a["admin_of"] + [r for r in p.admin_of if r not in a["admin_of"]]}
                a = self._call("PATCH", f"{self.members_url}/v1/staff/{a['id']}", json=body,
                               headers={**platform, "If-Match": f'"{a["version"]}"'}).json()
                self._did(f"gave {p.name} ({p.email}) the demo roles back")
            out[p.key] = a
        return out

    def _members_by_email(self) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for extra in ({}, {"stale": "true"}):
            url = f"{self.members_url}/v1/regions/{REGION}/members"
            params = {"limit": 100, **extra}
            while url:
                page = self._call("GET", url, headers=self.admin, params=params).json()
                for m in page["items"]:
                    if m.get("email"):
                        found[emails.key(m["email"])] = m
                nxt = page.get("next")
                url = (nxt if nxt.startswith("http") else f"{self.members_url}{nxt}") if nxt else None
                params = None
        return found

    def members(self) -> dict[str, dict]:
        """Each demo person signed up and brought to their state; returns key → member."""
        existing = self._members_by_email()
        out = {}
        for p in PEOPLE:
            m = existing.get(emails.key(p.email))
            if m is None:
                # as the region's admin: the only caller told the new member's id
                r = self._call("POST", f"{self.members_url}/v1/regions/{REGION}/members", ok=(201, 409),
                               key=f"sign-up:{p.key}", headers=self.admin, json=p.sign_up_body())
                if r.status_code == 409:   # a concurrent run won the race: read it back
                    m = self._members_by_email().get(emails.key(p.email))
                    if m is None:
                        raise DemoError(f"sign-up of {p.email}: 409 and not listed: {r.text[:300]}")
                else:
                    self._did(f"signed up {p.given_name} {p.family_name} ({p.email})")
                    m = {"id": r.json()["id"], "status": "pending", "capacity": None}
            out[p.key] = self._bring_to_state(p, m)
            self._ids[p.key] = out[p.key]["id"]
        return out

    def _transition(self, p: Person, m: dict, action: str, body: dict | None = None) -> dict:
        r = self._call("POST", f"{self.members_url}/v1/regions/{REGION}/members/{m['id']}/{action}",
                       headers=self.admin, json=body or {})
        self._did(f"{action} {p.given_name} {p.family_name} → {r.json()['status']}")
        return r.json()

    def _bring_to_state(self, p: Person, m: dict) -> dict:
        status = m["status"]
        if p.status == "pending":
            if status != "pending":
                print(f"demo: note: {p.email} is {status}, not pending (left as it is)", file=self.out)
            return m
        if status in ("left", "rejected", "erased"):
            print(f"demo: note: {p.email} is {status} (left as it is)", file=self.out)
            return m
        if status == "pending":
            m = self._transition(p, m, "approve")
        if p.status == "active" and m["status"] == "suspended":
            m = self._transition(p, m, "reinstate")
        if p.status == "suspended" and m["status"] == "active":
            m = self._transition(p, m, "suspend", {"reason": SUSPEND_REASON})
        if p.capacity and m["status"] == "active":
            want_status, want_note = p.capacity
            have = m.get("capacity") or {}
            if have.get("status") != want_status or (have.get("note") or None) != want_note:
                since = (date.today() - timedelta(days=p.since_days_ago)).isoformat()
                r = self._call("PUT", f"{self.members_url}/v1/regions/{REGION}/members/{m['id']}/capacity",
                               headers=self.admin, json={"status": want_status, "since": since, "note": want_note})
                m = r.json()
                self._did(f"capacity of {p.given_name} {p.family_name}: {want_status}")
        return m

    def wait_for_agreements_view(self, members: dict[str, dict]) -> None:
        """Until the agreements service knows the region and sees exactly the demo GPs' statuses."""
        want_active = {m["id"] for k, m in members.items() if m["status"] == "active"}
        not_active = {m["id"] for k, m in members.items() if m["status"] != "active"}
        try:
            from . import mongo
            from .config import settings
            s = settings("agreements")
            db = mongo.database(s.mongo_uri, s.database_name)
            db.client.admin.command("ping")
        except Exception as e:  # noqa: BLE001 - not reachable from here: a fixed wait instead
            print(f"demo: cannot read the agreements database ({e.__class__.__name__}); waiting 10 s for "
                  "the agreements service to learn the members", file=self.out)
            time.sleep(10)
            return

        def ready() -> bool:
            if db["regions_view"].find_one({"_id": REGION}) is None:
                return False
            active = {d["_id"] for d in db["members_view"].find({"region_id": REGION, "status": "active"},
                                                                 {"_id": 1})}
            return want_active <= active and not (not_active & active)
        deadline = time.monotonic() + self.timeout_s
        while not ready():
            if time.monotonic() > deadline:
                raise DemoError(f"the agreements service did not learn the demo members within {self.timeout_s:.0f} s "
                                "(is the agreements worker running?)")
            time.sleep(0.2)

    def _agreement_by_title(self, title: str) -> dict | None:
        url = f"{self.agreements_url}/v1/regions/{REGION}/agreements"
        params = {"limit": 100}
        while url:
            page = self._call("GET", url, headers=self.admin, params=params).json()
            for a in page["items"]:
                if a["title"] == title and a["status"] not in ("superseded", "terminated", "expired", "rejected"):
                    return a
            nxt = page.get("next")
            url = (nxt if nxt.startswith("http") else f"{self.agreements_url}{nxt}") if nxt else None
            params = None
        return None

    def _draft(self, body: dict, key: str) -> dict:
        a = self._agreement_by_title(body["title"])
        if a is None:
            a = self._call("POST", f"{self.agreements_url}/v1/regions/{REGION}/agreements", ok=(201,),
                           key=f"agreement:{key}", headers=self.admin, json=body).json()
            self._did(f"drafted agreement “{body['title']}”")
        return a

    def _open_vote(self, a: dict) -> dict:
        if a["status"] != "draft":
            return a
        base = f"{self.agreements_url}/v1/regions/{REGION}/agreements/{a['id']}"
        r = self._call("POST", f"{base}/mandate", ok=(200, 201, 409), headers=self.admin, json={})
        if r.status_code == 409:
            a = self._call("GET", base, headers=self.admin).json()
            if a["status"] == "draft":
                raise DemoError(f"opening the vote on {a['id']}: {r.text[:300]}")
            return a
        self._did(f"opened the mandate vote on “{a['title']}”")
        return r.json()

    def _vote(self, a: dict, member: dict, choice: str) -> None:
        base = f"{self.agreements_url}/v1/regions/{REGION}/agreements/{a['id']}/mandate/votes/{member['id']}"
        gp = self._token("gp", REGION, member["id"])
        mine = self._call("GET", base, headers=gp).json()
        if mine.get("choice") == choice:
            return
        self._call("PUT", base, headers=gp, json={"choice": choice})
        who = next((f"{p.given_name} {p.family_name}" for p in PEOPLE if self._ids.get(p.key) == member["id"]),
                   member["id"])
        self._did(f"vote {choice} by {who} on “{a['title']}”")

    def agreements(self, members: dict[str, dict]) -> dict[str, dict]:
        active_body, voting_body = _agreements(date.today())
        voters = [members[p.key] for p in PEOPLE if members[p.key]["status"] == "active"]
        # 1. voted through and signed: active from today (the scheduler activates it)
        a = self._open_vote(self._draft(active_body, "wachtpost"))
        base = f"{self.agreements_url}/v1/regions/{REGION}/agreements/{a['id']}"
        if a["status"] == "in_consultation":
            for m in voters:
                a_now = self._call("GET", base, headers=self.admin).json()
                if a_now["status"] != "in_consultation":
                    break
                self._vote(a, m, "for")
            a = self._call("GET", base, headers=self.admin).json()
            if a["status"] == "in_consultation":
                a = self._call("POST", f"{base}/mandate/close", headers=self.admin, json={}).json()
                self._did(f"closed the vote on “{a['title']}” → {a['status']}")
        if a["status"] == "mandated" and not a.get("signed_at"):
            a = self._call("POST", f"{base}/sign", headers=self.admin, json={}).json()
            self._did(f"signed “{a['title']}”")
        # 2. an open vote, one ballot cast so far
        v = self._open_vote(self._draft(voting_body, "transmuraal"))
        if v["status"] == "in_consultation" and "bram" in members and members["bram"]["status"] == "active":
            self._vote(v, members["bram"], "for")
        return {"active": a, "voting": v}

    def wait_for_services(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for url in (self.members_url, self.agreements_url):
            while True:
                try:
                    if self.http.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise DemoError(f"{url}/readyz did not answer 200 within {seconds:.0f} s")
                time.sleep(0.5)

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> dict:
        self.region()
        staff = self.staff()
        members = self.members()
        self.wait_for_agreements_view(members)
        agreements = self.agreements(members)
        return {"region": REGION, "members": members, "agreements": agreements, "staff": staff}

    def instructions(self, state: dict) -> str:
        maildir = os.environ.get("HECHT_MAILDIR") or "var/stack/mail"
        lines = [f"Demo region {REGION} ({REGION_BODY['name']}): {self.portal_url}/regions/{REGION}",
                 "Sign in as a demo person: open " f"{self.portal_url}/sign-in and enter their address; the link "
                 f"lands in the SMTP sink's Maildir ({maildir}/new) and the portal's development log shows it.", ""]
        lines.append(f"  {'person':<16} {'status':<10} {'capacity':<9} {'lang':<5} sign in with")
        for p in PEOPLE:
            m = state["members"].get(p.key) or {}
            cap = (m.get("capacity") or {}).get("status") or "–"
            lines.append(f"  {p.given_name + ' ' + p.family_name:<16} {m.get('status', '?'):<10} {cap:<9} "
                         f"{p.language:<5} {p.email}")
        for p in STAFF:   # the console: /admin/<region> for the coordinator, /platform for the admin
            a = (state.get("staff") or {}).get(p.key) or {}
            where = "/platform" if p.platform_admin else f"/admin/{REGION}"
            lines.append(f"  {p.name:<16} {a.get('status', '?'):<10} {'–':<9} {p.language:<5} {p.email}"
                         f"  ({p.role}: {self.portal_url}{where})")
        v = state["agreements"]["voting"]
        lines += ["", f"Open vote: “{v['title']}” → {self.portal_url}/r/{REGION}/votes/{v['id']}",
                  f"Active agreement: “{state['agreements']['active']['title']}”"]
        return "\n".join(lines)


def main(args) -> int:
    env = os.environ
    demo = Demo(members_url=(args.members_url or env.get("HECHT_MEMBERS_URL") or "http://127.0.0.1:8002").rstrip("/"),
                agreements_url=(args.agreements_url or env.get("HECHT_AGREEMENTS_URL")
                                or "http://127.0.0.1:8001").rstrip("/"),
                portal_url=(args.portal_url or env.get("HECHT_PORTAL_URL") or "http://127.0.0.1:8000").rstrip("/"),
                timeout_s=args.timeout)
    try:
        if args.wait:
            demo.wait_for_services(args.wait)
        state = demo.run()
    except (DemoError, requests.RequestException) as e:
        print(f"demo: failed: {e}", file=sys.stderr)
        return 1
    print(f"demo: {len(demo.changes)} change(s)" + ("" if demo.changes else " (everything was already there)"))
    print(demo.instructions(state))
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="seed a demo region, GPs and agreements through the APIs (idempotent)")
    d.add_argument("--members-url", help="default $HECHT_MEMBERS_URL or http://127.0.0.1:8002")
    d.add_argument("--agreements-url", help="default $HECHT_AGREEMENTS_URL or http://127.0.0.1:8001")
    d.add_argument("--portal-url", help="default $HECHT_PORTAL_URL or http://127.0.0.1:8000")
    d.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the services to catch up")
    d.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to this long for members and agreements to answer /readyz (make run)")
    d.set_defaults(fn=main)
