"""Real outages of the real servers: kill -9 Kafka or the database server, then restart them.

Runs against the test stack started by scripts/test.sh (stack.sh kill9/restart
act on that stack through the HECHT_STACK_DIR/ports it exported).
"""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from hecht import kafka as hk, mongo, topics
from hecht.config import settings
from hecht.outbox import Relay
from tests.conftest import bearer, wait_until

STACK = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.sh"
REGION = {"id": "elz-out", "name": "ELZ", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Gent"]}


def stack(*args: str) -> None:
    subprocess.run([str(STACK), *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def client(hecht_env):
    from services.members.app import create_app
    return create_app().test_client()


def test_writes_survive_a_kafka_crash_and_every_event_arrives_in_order(client, topic_reader):
    s = settings("members")
    db = mongo.database(s.mongo_uri, s.database_name)
    relay = Relay(db, s.topic(topics.MEMBERS), lambda: hk.producer(s), "members", poll_s=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    admin = bearer("region-admin", "elz-out")
    try:
        assert client.post("/v1/regions", json=REGION, headers=bearer("platform-admin")).status_code == 201
        wait_until(lambda: db.outbox.count_documents({}) == 0, message="first publish")

        stack("kill9", "kafka")
        wait_until(lambda: client.get("/readyz").status_code == 503, timeout=15, message="readyz to fail")
        for i in range(10):  # acknowledged writes while the broker is dead
            r = client.patch("/v1/regions/elz-out", json={"name": f"ELZ {i}"}, headers=admin)
            assert r.status_code == 200, r.get_data(as_text=True)
        assert db.outbox.count_documents({"subject": "elz-out"}) == 10
    finally:
        stack("restart", "kafka")
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, message="readyz to recover")
    records = topic_reader(s.topic(topics.MEMBERS), until=lambda r: len(r) >= 11, timeout=60)
    assert thread.is_alive(), "the relay must outlive the outage"
    stop.set()
    thread.join(timeout=20)
    events = [json.loads(r.value) for r in records if r.key == b"elz-out"]
    sequences = [e["sequence"] for e in events]
    assert sorted(set(sequences)) == list(range(1, 12)), sequences  # none lost
    first_seen = list(dict.fromkeys(sequences))
    assert first_seen == sorted(first_seen)  # in order per aggregate (duplicates allowed, never reordered)
    wait_until(lambda: db.outbox.count_documents({}) == 0, message="the outbox cleared")


def test_a_database_crash_gives_503_problems_then_recovers(client):
    admin = bearer("platform-admin")
    assert client.post("/v1/regions", json=REGION, headers=admin).status_code == 201
    try:
        stack("kill9", "mongo")
        r = client.get("/v1/regions/elz-out", headers=admin)
        assert r.status_code == 503 and r.mimetype == "application/problem+json"
        assert r.headers["Retry-After"] and "Traceback" not in r.get_data(as_text=True)
        r = client.post("/v1/regions", json=dict(REGION, id="elz-two"), headers=admin)
        assert r.status_code == 503
        assert client.get("/readyz").json["checks"]["mongodb"] != "ok"
    finally:
        stack("restart", "mongo")
    wait_until(lambda: client.get("/v1/regions/elz-out", headers=admin).status_code == 200, timeout=30,
               message="the database to come back")
    assert client.get("/v1/regions/elz-out", headers=admin).json["name"] == "ELZ"  # the acknowledged write
    assert client.post("/v1/regions", json=dict(REGION, id="elz-two"), headers=admin).status_code == 201
