"""Helpers for notify's integration tests (no tests here): a real HTTP receiver, the notify
worker's components in threads, event builders following docs/CONTRACTS.md, and a reader
for the SMTP sink's Maildir."""
from __future__ import annotations

import email
import email.policy
import json
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kafka import KafkaProducer

from hecht import events as ev, mongo, topics
from hecht.config import settings

REGION = "elz-gent"


# -- a webhook receiver -----------------------------------------------------------------------
class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers as scripted.

    ``script`` is consumed one entry per request: an int status, or a dict with
    ``status``, ``sleep`` (seconds before answering), ``headers`` and ``body``. When empty,
    ``default`` answers.
    """

    def __init__(self, default=200):
        self.requests: list[dict] = []
        self.script: list = []
        self.default = default
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                              "body": body, "at": time.time()})
                    step = receiver.script.pop(0) if receiver.script else receiver.default
                step = {"status": step} if isinstance(step, int) else dict(step)
                if step.get("sleep"):
                    time.sleep(step["sleep"])
                payload = step.get("body", "ok").encode()
                try:
                    self.send_response(step.get("status", 200))
                    for k, v in (step.get("headers") or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests if path is None or r["path"] == path]

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path is None or r["path"] == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# -- the worker -------------------------------------------------------------------------------
FAST = {
    "HECHT_WEBHOOK_RETRY_SCHEDULE_S": "0.3,0.3",
    "HECHT_WEBHOOK_TIMEOUT_S": "1.5",
    "HECHT_WEBHOOK_DISABLE_AFTER_FAILURES": "3",
    "HECHT_WEBHOOK_POLL_S": "0.05",
    "HECHT_MAIL_POLL_S": "0.1",
    "HECHT_MAIL_RETRY_SCHEDULE_S": "0.3,0.3",
    "HECHT_NOTIFY_SCHEDULER_POLL_S": "0.2",
    "HECHT_WEBHOOK_CIRCUIT_COOLDOWN_S": "0.3",  # compressed like the retry schedule
}


def notify_db():
    s = settings("notify")
    return mongo.database(s.mongo_uri, s.database_name)


# The regions the tests make subscriptions and integrator applications in (notify makes them
# only in a region the members service announced; issue 22).
KNOWN_REGIONS = (REGION, "elz-brugge")


def known_region(*regions: str) -> None:
    """The regions in notify's read model as a ``region.registered`` event puts them (sequence 0:
    a region event a test applies afterwards replaces it; no name, so e-mails show the id)."""
    from services.notify.repository import RegionBook
    book = RegionBook(notify_db())
    for region in regions:
        book.apply(region, 0, None, None)


def wait_for_region(region: str, timeout: float = 30) -> None:
    """Wait until notify's worker has learned ``region`` from the members service's event."""
    from tests.conftest import wait_until
    wait_until(lambda: notify_db().regions.find_one({"_id": region}), timeout=timeout,
               message=f"notify to learn region {region}")


class Worker:
    """Notify's worker components in threads of this process, stopped at teardown."""

    def __init__(self):
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, *names: str):
        from services.notify import worker
        s = settings("notify")
        db = notify_db()
        worker.ensure_indexes(db)
        wanted = {n: fn for n, fn in worker.components(s, db)}
        for name in names or wanted:
            t = threading.Thread(target=wanted[name], args=(self.stop,), name=f"notify-{name}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)


@pytest.fixture
def fast(hecht_env, monkeypatch):
    """Compressed schedules, and notify's indexes in place (as `hecht migrate` / the worker does)."""
    from services.notify.repository import ensure_indexes
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    ensure_indexes(notify_db())
    known_region(*KNOWN_REGIONS)
    yield hecht_env
    _delete_topics(hecht_env["prefix"])


def _delete_topics(prefix: str) -> None:
    """Best effort: the per-test topics go again, or a long-lived broker runs out of heap
    (a single-node KRaft broker with -Xmx512m fell over at ~7,000 topics)."""
    from kafka import KafkaAdminClient
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings("notify").kafka_bootstrap_servers,
                                 request_timeout_ms=10000, client_id="hecht-test-cleanup")
        try:
            mine = [t for t in admin.list_topics() if t.startswith(prefix)]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - cleanup must not fail a test
        pass


@pytest.fixture
def notify_worker(fast):
    workers = []

    def start(*names):
        w = Worker().start(*names)
        workers.append(w)
        return w
    yield start
    for w in workers:
        w.close()


@pytest.fixture
def notify_client(fast):
    from services.notify.app import create_app
    return create_app().test_client()


# -- events (data per docs/CONTRACTS.md) ------------------------------------------------------
def build(short: str, *, subject: str, sequence: int, data: dict, region: str = REGION,
          source: str | None = None, time: str | None = None, validate: bool = True) -> dict:
    """A real envelope; validated against the data schema when the producing service ships one."""
    kind = short.split(".")[0]
    validate = validate and ev.full_type(short) in ev.known_types()
    return ev.build(short, region=region, subject=subject, sequence=sequence, data=data,
                    source=source or f"/regions/{region}/{kind}s", time=time, validate_data=validate)


def member_data(member_id: str, *, status: str = "active", language: str = "nl", email_addr: str | None = None,
                roles=("member",), region: str = REGION, reason: str | None = None,
                capacity: dict | None = None, legacy: bool = False) -> dict:
    """A member event's data as members publishes it (issue 17: nothing personal, no free text);
    ``legacy``: as events written before it did (``personal``, language, reason, capacity note)."""
    data = {"member_id": member_id, "region_id": region, "status": status, "category": "practice-owner",
            "roles": list(roles), "municipality": "Gent",
            "capacity": capacity or {"status": "open", "since": "2026-01-01"}}
    if legacy:
        data.update(language=language, personal={"given_name": "An", "family_name": "Peeters",
                                                 "email": email_addr or f"{member_id}@example.test"})
        if reason:
            data["reason"] = reason
    else:
        data["capacity"] = {k: v for k, v in data["capacity"].items() if k != "note"}
    if status == "erased":
        data.update(category=None, roles=[], municipality=None, capacity=None)
        data.pop("personal", None)
        if not legacy:
            data.pop("language", None)
    return data


def contact_record(member_id: str, sequence: int, *, status: str = "active", language: str = "nl",
                   email_addr: str | None = None, region: str = REGION, reason: str | None = None,
                   **_ignored) -> dict | None:
    """The record members writes to hecht.members.contacts with that event (None: the tombstone)."""
    if status == "erased":
        return None
    record = {"member_id": member_id, "region_id": region, "email": email_addr or f"{member_id}@example.test",
              "language": language, "sequence": sequence}
    if status == "rejected" and reason:
        record["reason"] = reason
    return record


def member_event(short: str, member_id: str, sequence: int, **kw) -> dict:
    """The member event, with the contact record written with it under ``_contact`` (handed to
    notify's contacts reader by ``consume`` and ``produce``, never sent as part of the event)."""
    event = build(short, subject=member_id, sequence=sequence, data=member_data(member_id, **kw),
                  validate=not kw.get("legacy"))
    event["_contact"] = contact_record(member_id, sequence, **kw)
    return event


def _apply_contacts(events) -> list[dict]:
    """Apply the events' contact records as notify's contacts reader does; the events without them."""
    from services.notify.contacts import ContactsConsumer
    reader = ContactsConsumer(settings("notify"), notify_db())
    out = []
    for e in events:
        e = dict(e)
        if "_contact" in e:
            contact = e.pop("_contact")
            reader.apply(e["subject"].encode(), None if contact is None else json.dumps(contact).encode())
        out.append(e)
    return out


def agreement_data(agreement_id: str, *, status: str = "draft", mandate: dict | None = None,
                   electorate: list[str] | None = None, title: str = "Zorgpad diabetes",
                   region: str = REGION) -> dict:
    data = {"agreement_id": agreement_id, "region_id": region, "version": 1, "previous_id": None,
            "status": status, "title": title, "theme": "chronic-care",
            "partners": [{"name": "AZ Sint-Jan", "kind": "hospital"}], "municipalities": ["Gent"],
            "effective_from": "2026-04-01", "effective_until": None, "review_date": "2027-04-01",
            "mandate": mandate}
    if electorate is not None:
        data["electorate"] = electorate
    return data


def mandate(status: str = "open", *, electorate_size: int = 2, deadline: datetime | None = None,
            opened_at: datetime | None = None, votes=(0, 0, 0)) -> dict:
    opened_at = opened_at or datetime.now(timezone.utc)
    deadline = deadline or opened_at + timedelta(days=14)
    f, a, ab = votes
    cast = f + a + ab
    out = {"status": status, "electorate_size": electorate_size, "cast": cast,
           "turnout": cast / electorate_size if electorate_size else 0, "quorum": 0.5, "approval_threshold": 0.5,
           "quorum_met": cast / electorate_size >= 0.5 if electorate_size else False,
           "opened_at": _iso(opened_at), "deadline": _iso(deadline),
           "closed_at": None if status == "open" else _iso(datetime.now(timezone.utc))}
    if status != "open":  # the counts are published only once the vote has closed (secret ballot)
        out.update({"for": f, "against": a, "abstain": ab, "threshold_met": (f / cast >= 0.5) if cast else False})
    return out


def agreement_event(short: str, agreement_id: str, sequence: int, **kw) -> dict:
    return build(short, subject=agreement_id, sequence=sequence, data=agreement_data(agreement_id, **kw))


def vote_cast_event(agreement_id: str = "a_1", sequence: int = 1, **kw) -> dict:
    """The webhook tests' sample event: a published agreement event that makes notify do nothing
    besides the copy and the deliveries (no e-mail, no reminder). A draft's events would not do:
    they never leave the agreements service (issue 22), and notify drops them."""
    return agreement_event("agreement.vote_cast", agreement_id, sequence, status="in_consultation",
                           mandate=mandate(), **kw)


def signed_event(agreement_id: str = "a_1", sequence: int = 2, **kw) -> dict:
    """Another published agreement event without e-mails: the vote passed and the region signed."""
    return agreement_event("agreement.signed", agreement_id, sequence, status="mandated",
                           mandate=mandate("passed", votes=(2, 0, 0)), **kw)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def consume(*events: dict) -> None:
    """Hand events to notify exactly as its consumer does (same function)."""
    from services.notify.handlers import handle_event
    for e in _apply_contacts(events):
        handle_event(e, notify_db(), settings("notify"))


def produce(topic: str, *events: dict) -> None:
    s = settings("notify")
    p = KafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers)
    for e in _apply_contacts(events):
        p.send(s.topic(topic), key=e["subject"].encode(), value=ev.encode(e), headers=ev.kafka_headers(e))
    p.flush()
    p.close()


MEMBERS, AGREEMENTS, NOTIFY = topics.MEMBERS, topics.AGREEMENTS, topics.NOTIFY


# -- subscriptions ----------------------------------------------------------------------------
def integrator(region: str = REGION, sub: str | None = None) -> dict:
    """One integrator per region unless ``sub`` names another: subscriptions belong to whoever
    created them, so the tests act as the same integrator throughout."""
    from tests.conftest import bearer
    return bearer("integrator", region, sub=sub or f"dev:integrator-{region}")


def subscribe(client, url: str, event_types=("*",), region: str = REGION, **extra) -> dict:
    r = client.post(f"/v1/regions/{region}/subscriptions", json={"url": url, "event_types": list(event_types),
                                                                "description": "test", **extra},
                    headers=integrator(region))
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.json


def deliveries(sub_id: str, **query) -> list[dict]:
    """The subscription's deliveries, each with its attempt log (as the API shows them)."""
    docs = list(notify_db().deliveries.find({"subscription_id": sub_id, **query}).sort("_id", 1))
    for d in docs:
        d["attempts"] = list(notify_db().attempts.find({"delivery_id": d["_id"]}).sort("_id", 1))
    return docs


# -- the SMTP sink ----------------------------------------------------------------------------
def maildir() -> Path:
    return Path(os.environ.get("HECHT_MAILDIR", "var/stack/mail"))


def mails_to(address: str) -> list[email.message.EmailMessage]:
    """Every message in the sink's Maildir addressed to ``address`` (tests use unique addresses)."""
    out = []
    for sub in ("new", "cur"):
        folder = maildir() / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            if address.encode() not in raw:
                continue
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            if address in str(msg.get("To", "")):
                out.append(msg)
    return out


def unique_address(tag: str = "gp") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.test"
