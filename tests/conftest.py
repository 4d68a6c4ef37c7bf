"""Shared fixtures. Tests that touch storage or messaging use the real local stack.

``make test`` starts a stack on its own ports (deploy/local/stack.sh) and
exports its addresses; every test then gets its own databases and its own
topic prefix, so tests never see each other's data or consumer offsets.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Callable

import pytest

# Tests run as development (the default JWT secret; tokens minted at collection need it):
# unset, HECHT_ENV means production, and a service refuses to start without its own secret.
# Set before any test module builds an app or mints a token; production tests set it themselves.
os.environ["HECHT_ENV"] = "development"

MONGO_BASE = os.environ.get("HECHT_TEST_MONGO", "mongodb://127.0.0.1:27018")
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
SERVICES = ("members", "agreements", "notify")


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.1,
               message: str = "condition") -> object:
    """Poll until ``predicate()`` is truthy; the 'wait until handled' helper instead of sleeps."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


@pytest.fixture(scope="session")
def stack():
    """The running local stack; fails (never skips) when it is not there."""
    import pymongo
    from kafka import KafkaAdminClient
    try:
        pymongo.MongoClient(MONGO_BASE, serverSelectionTimeoutMS=5000).admin.command("ping")
        KafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=5000).close()
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"the local stack is not running ({e!r}); run the tests with `make test`")
    return {"mongo": MONGO_BASE, "kafka": KAFKA}


@pytest.fixture
def hecht_env(stack, monkeypatch):
    """Per-test databases and topic prefix, set in the environment the code reads."""
    from hecht import kafka as hk
    from hecht.config import settings
    suffix = uuid.uuid4().hex[:10]
    prefix = f"t{suffix}."
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", stack["kafka"])
    monkeypatch.setenv("HECHT_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("HECHT_WEBHOOKS_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("HECHT_RELAY_POLL_S", "0.05")
    monkeypatch.setenv("HECHT_METRICS_PORT", "0")
    monkeypatch.setenv("HECHT_LOG_LEVEL", "WARNING")
    dbs = {}
    for s in SERVICES:
        dbs[s] = f"t{suffix}_{s}"
        monkeypatch.setenv(f"HECHT_{s.upper()}_MONGO_URI", f"{stack['mongo']}/{dbs[s]}")
    hk.ensure_topics(settings("members"))
    yield {"prefix": prefix, "dbs": dbs, "suffix": suffix}
    # Delete this test's topics: a broker holding thousands of them runs out of heap.
    try:
        admin = hk.admin(settings("members"))
        try:
            mine = [t for t in admin.list_topics() if t.startswith(prefix)]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - best-effort cleanup (a test may have stopped the broker)
        pass
    from hecht import mongo
    client = mongo.client(f"{stack['mongo']}/{dbs['members']}")
    abort_abandoned_transactions(client)
    for name in dbs.values():
        try:
            client.drop_database(name)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
    # Each test's databases have their own URIs, hence their own cached MongoClients (with
    # monitor and pooled connections): closed here, or a whole run's ~900 tests pile up past
    # SecantusDB's cap of 1,000 connections and the last tests meet refused connections.
    mongo.close_all()


def abort_abandoned_transactions(client) -> None:
    """Abort the transactions of processes a test killed, as the server does by itself after
    its transaction lifetime (60 s on mongod and SecantusDB).

    Needed before dropping a database: SecantusDB 0.7 drops while holding its global lock, and
    a drop that meets a dead process's uncommitted write waits for it forever, so the whole
    server stops answering. (hecht itself never drops anything.)
    """
    try:
        client.admin.command("killAllSessions", [])
    except Exception:  # noqa: BLE001 - best effort, like the drops it protects
        pass


@pytest.fixture
def topic_reader(stack):
    """Read every record of a topic from the beginning until ``until(records)`` holds."""
    from kafka import KafkaConsumer
    consumers = []

    def read(topic: str, until: Callable[[list], bool] = lambda r: bool(r), timeout: float = 20.0) -> list:
        c = KafkaConsumer(topic, bootstrap_servers=stack["kafka"], auto_offset_reset="earliest",
                          enable_auto_commit=False, group_id=None, consumer_timeout_ms=500)
        consumers.append(c)
        records: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=300).values():
                records.extend(batch)
            if until(records):
                return records
        raise AssertionError(f"timed out reading {topic}: got {len(records)} records")

    yield read
    for c in consumers:
        c.close()


def token(role: str, region: str | None = None, member: str | None = None, ttl: int = 4 * 3600, **kw) -> str:
    """A development token. Modules mint some at import, i.e. when pytest collects, so the
    default outlives a whole run (`make test` takes over 20 minutes); expiry tests pass ``ttl``."""
    from hecht.auth import mint
    from hecht.config import settings
    return mint(settings("members"), roles=[role], region=region, member=member, ttl=ttl, **kw)


def bearer(role: str, region: str | None = None, member: str | None = None, **kw) -> dict:
    return {"Authorization": f"Bearer {token(role, region, member, **kw)}"}


def ok(r, status: int = 200) -> dict:
    """The JSON of a Flask test response that must have ``status``."""
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    return r.get_json()


def problem(r, status: int) -> dict:
    """The RFC 9457 problem of a Flask test response that must have ``status``."""
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    assert r.mimetype == "application/problem+json"
    return r.get_json()
