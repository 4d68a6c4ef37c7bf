"""The shared platform against the real stack: outbox → Kafka, consumer guarantees, web plumbing."""
from __future__ import annotations

import json
import re
import threading
import time
import uuid

import pytest
from kafka import KafkaProducer

from hecht import events as ev, kafka as hk, mongo, topics
from hecht.config import settings
from hecht.consumer import ConsumerRunner
from hecht.outbox import Relay
from tests.conftest import bearer, wait_until

REGION = {"id": "elz-gent", "name": "ELZ Gent", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Gent", "Merelbeke"],
          "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.6, "voting_period_days": 14}}
ADMIN = None


@pytest.fixture
def members_app(hecht_env):
    from services.members.app import create_app
    app = create_app()
    return app


@pytest.fixture
def client(members_app):
    return members_app.test_client()


def members_db():
    s = settings("members")
    return mongo.database(s.mongo_uri, s.database_name)


def relay_for_members() -> Relay:
    s = settings("members")
    return Relay(members_db(), s.topic(topics.MEMBERS), lambda: hk.producer(s), "members")


def region_event(subject: str, sequence: int, name: str = "x") -> dict:
    data = dict(REGION, region_id=subject, name=name)
    data.pop("id")
    return ev.build("region.updated", region=subject, subject=subject, sequence=sequence,
                    data=data, source=f"/regions/{subject}")


# -- outbox → Kafka ---------------------------------------------------------------------------
def test_event_written_with_a_change_reaches_kafka_with_a_valid_envelope(client, topic_reader):
    r = client.post("/v1/regions", json=REGION, headers=bearer("platform-admin"))
    assert r.status_code == 201, r.json
    [pending] = members_db().outbox.find()  # written in the state's transaction
    assert pending["subject"] == "elz-gent" and pending["sequence"] == 1

    relay = relay_for_members()
    assert relay.run_once() == 1
    relay.close()
    records = topic_reader(settings("members").topic(topics.MEMBERS))
    assert len(records) == 1
    record = records[0]
    event = ev.decode(record.value)
    ev.validate(event)
    assert record.key == b"elz-gent"
    assert event["type"] == "hecht.region.registered.v1" and event["sequence"] == 1
    assert event["source"] == "/regions/elz-gent" and event["region"] == "elz-gent"
    assert dict(record.headers)["content-type"].startswith(b"application/cloudevents+json")
    assert dict(record.headers)["traceparent"].startswith(b"00-")
    assert members_db().outbox.count_documents({}) == 0  # published, archived, removed
    history = client.get("/v1/regions/elz-gent/history", headers=bearer("region-admin", "elz-gent")).json
    assert [e["id"] for e in history["items"]] == [event["id"]]


def test_relay_keeps_per_aggregate_order_across_many_writes(client, topic_reader):
    assert client.post("/v1/regions", json=REGION, headers=bearer("platform-admin")).status_code == 201
    for i in range(5):
        r = client.patch("/v1/regions/elz-gent", json={"name": f"ELZ Gent {i}"},
                         headers=bearer("region-admin", "elz-gent"))
        assert r.status_code == 200, r.json
    relay = relay_for_members()
    assert relay.run_once() == 6
    relay.close()
    records = topic_reader(settings("members").topic(topics.MEMBERS), until=lambda r: len(r) >= 6)
    seqs = [json.loads(r.value)["sequence"] for r in records]
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert len({r.partition for r in records}) == 1


class RunningRelay:
    """The relay's real loop (following the outbox change stream) in a thread."""

    def __init__(self):
        self.relay = relay_for_members()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.relay.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def _sequences() -> list[int]:
    """Every sequence on the members topic, read to its end offsets (so duplicates show)."""
    from tests.e2e.load import read_to_end
    s = settings("members")
    return [json.loads(r.value)["sequence"] for r in read_to_end(s.kafka_bootstrap_servers, s.topic(topics.MEMBERS))]


def test_the_relay_follows_the_change_stream_and_resumes_from_its_token(client):
    db = members_db()
    running = RunningRelay()
    try:
        assert client.post("/v1/regions", json=REGION, headers=bearer("platform-admin")).status_code == 201
        wait_until(lambda: db.outbox.count_documents({}) == 0 and db.events.count_documents({}) == 1,
                   message="the first event published by the stream")
    finally:
        running.close()
    token = db.relay_state.find_one({"_id": settings("members").topic(topics.MEMBERS)})["token"]
    for i in range(3):  # written while no relay runs
        assert client.patch("/v1/regions/elz-gent", json={"name": f"ELZ {i}"},
                            headers=bearer("region-admin", "elz-gent")).status_code == 200
    running = RunningRelay()
    try:
        wait_until(lambda: db.outbox.count_documents({}) == 0, message="the events written while it was down")
    finally:
        running.close()
    assert db.relay_state.find_one({"_id": settings("members").topic(topics.MEMBERS)})["token"] != token
    assert _sequences() == [1, 2, 3, 4]  # resumed: nothing published twice


def test_without_a_usable_token_the_relay_publishes_the_backlog_first(client):
    db = members_db()
    assert client.post("/v1/regions", json=REGION, headers=bearer("platform-admin")).status_code == 201
    assert client.patch("/v1/regions/elz-gent", json={"name": "Renamed"},
                        headers=bearer("region-admin", "elz-gent")).status_code == 200
    db.relay_state.insert_one({"_id": settings("members").topic(topics.MEMBERS), "token": {"_data": "00"}})
    running = RunningRelay()
    try:
        wait_until(lambda: db.outbox.count_documents({}) == 0, message="the backlog")
        assert client.patch("/v1/regions/elz-gent", json={"name": "After"},
                            headers=bearer("region-admin", "elz-gent")).status_code == 200
        wait_until(lambda: db.outbox.count_documents({}) == 0 and db.events.count_documents({}) == 3,
                   message="the event written after the backlog")
    finally:
        running.close()
    assert _sequences() == [1, 2, 3]


def test_a_failed_relay_pass_strands_nothing(client, topic_reader):
    assert client.post("/v1/regions", json=REGION, headers=bearer("platform-admin")).status_code == 201
    relay = relay_for_members()
    working = relay.producer_factory

    def broker_down():
        raise RuntimeError("broker down")
    relay.producer_factory = broker_down
    with pytest.raises(RuntimeError):
        relay.run_once()
    assert members_db().outbox.count_documents({}) == 1  # still there
    relay.producer_factory = working
    assert relay.run_once() == 1
    relay.close()
    assert len(topic_reader(settings("members").topic(topics.MEMBERS))) == 1


def _stages(plan: dict) -> list[str]:
    """Every stage name of a MongoDB-style query plan, outermost first."""
    out, todo = [], [plan]
    while todo:
        node = todo.pop()
        out.append(node.get("stage", ""))
        todo += [node[k] for k in ("inputStage",) if k in node] + list(node.get("inputStages", []))
    return out


def test_lookups_and_region_lists_use_indexes(hecht_env):
    """A lookup by _id and a region's member list read an index, never the whole collection
    (FerretDB 1.x scanned for both: lists grew 15x from 1k to 10k members)."""
    from services.members.repository import MemberRepository, ensure_indexes
    db = members_db()
    ensure_indexes(db)
    db.plan_probe.insert_many([{"_id": f"p{i}"} for i in range(50)])
    plan = db.command("explain", {"find": "plan_probe", "filter": {"_id": "p7"}})["queryPlanner"]["winningPlan"]
    assert "IXSCAN" in _stages(plan) and "COLLSCAN" not in _stages(plan), plan
    query = MemberRepository.list_query("elz-gent")
    plan = db.command("explain", {"find": "members", "filter": query, "sort": {"_id": 1}, "limit": 51}
                      )["queryPlanner"]["winningPlan"]
    assert "IXSCAN" in _stages(plan) and "COLLSCAN" not in _stages(plan), plan


# -- consumer guarantees ----------------------------------------------------------------------
class Recorder:
    """A handler with a real effect (a Mongo counter) so 'applied once' is observable."""

    def __init__(self, db, fail_on: set[str] | None = None):
        self.db = db
        self.fail_on = fail_on or set()

    def __call__(self, event: dict) -> None:
        if event["data"].get("name") in self.fail_on:
            raise ValueError("this event cannot be applied")
        self.db.applied.update_one({"_id": event["id"]}, {"$inc": {"n": 1}}, upsert=True)


def _runner(handler) -> ConsumerRunner:
    s = settings("agreements")
    db = mongo.database(s.mongo_uri, s.database_name)
    return ConsumerRunner(s, db, "agreements", [topics.MEMBERS], handler, retry_delay_s=0.01), db


def _produce(*values: bytes, key: bytes = b"k") -> None:
    s = settings("members")
    p = KafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers)
    for v in values:
        p.send(s.topic(topics.MEMBERS), key=key, value=v)
    p.flush()
    p.close()


def _drain(runner: ConsumerRunner, until, timeout: float = 60):
    # 60 s: the first group join on a fresh broker also creates __consumer_offsets.
    wait_until(lambda: runner.poll_once(200) >= 0 and until(), timeout=timeout, message="consumer to catch up")


def test_a_redelivered_event_is_applied_once(hecht_env):
    event = region_event("elz-a", 1)
    runner, db = _runner(None)
    runner.handle = Recorder(db)
    _produce(ev.encode(event), ev.encode(event), key=b"elz-a")
    _drain(runner, lambda: db.inbox.count_documents({}) == 1 and runner._consumer.position(
        next(iter(runner._consumer.assignment()))) is not None and _consumed(runner) >= 2)
    runner.close()
    assert db.applied.find_one({"_id": event["id"]})["n"] == 1


def _consumed(runner) -> int:
    return sum(runner._consumer.position(tp) for tp in runner._consumer.assignment())


def test_a_stale_sequence_is_skipped(hecht_env):
    runner, db = _runner(None)
    runner.handle = Recorder(db)
    newer, older = region_event("elz-b", 2), region_event("elz-b", 1)
    _produce(ev.encode(newer), ev.encode(older), key=b"elz-b")
    _drain(runner, lambda: _consumed(runner) >= 2)
    runner.close()
    assert db.applied.count_documents({}) == 1
    assert db.applied.find_one({"_id": newer["id"]}) is not None


def test_poison_messages_go_to_the_dlq_and_the_consumer_carries_on(hecht_env, topic_reader):
    runner, db = _runner(None)
    runner.handle = Recorder(db, fail_on={"boom"})
    failing = region_event("elz-c", 1, name="boom")
    good = region_event("elz-d", 1)
    _produce(b"{not json", json.dumps({"specversion": "1.0"}).encode(), ev.encode(failing), ev.encode(good))
    _drain(runner, lambda: db.applied.count_documents({}) == 1 and _consumed(runner) >= 4)
    runner.close()
    assert db.applied.find_one({"_id": good["id"]}) is not None
    dlq = topic_reader(settings("agreements").topic(topics.dlq_topic("agreements")), until=lambda r: len(r) >= 3)
    reasons = [dict(r.headers)["dlq-reason"].decode() for r in dlq]
    assert reasons[0].startswith("undecodable: not JSON")
    assert "missing attribute" in reasons[1]
    assert reasons[2].startswith("ValueError") and dict(dlq[2].headers)["dlq-consumer-group"] == b"agreements"
    assert json.loads(dlq[2].value)["id"] == failing["id"]


def test_an_oversized_event_is_dead_lettered_unparsed_and_the_consumer_carries_on(hecht_env, topic_reader):
    runner, db = _runner(None)
    runner.handle = Recorder(db)
    huge = region_event("elz-big", 1, name="x" * (600 * 1024))  # valid CloudEvent, > 512 KiB default limit
    good = region_event("elz-small", 1)
    _produce(ev.encode(huge), ev.encode(good), key=b"elz-big")
    _drain(runner, lambda: _consumed(runner) >= 2)
    runner.close()
    assert [d["_id"] for d in db.applied.find()] == [good["id"]]
    assert db.inbox.find_one({"_id": huge["id"]}) is None  # never parsed, so never marked
    dlq = topic_reader(settings("agreements").topic(topics.dlq_topic("agreements")))
    headers = dict(dlq[0].headers)
    assert headers["dlq-error-type"] == b"OversizedEvent"
    assert headers["dlq-reason"].decode().startswith("oversized: ")
    assert dlq[0].value == ev.encode(huge)  # kept whole for whoever investigates


def test_unknown_event_types_are_skipped_by_rule_and_later_events_still_apply(hecht_env, topic_reader):
    """A newer producer may emit types this consumer does not know: skip, never dead-letter or stall."""
    from services.agreements.handlers import event_handler
    runner, db = _runner(None)
    runner.handle = event_handler(db)
    outcomes = []
    process = runner.process
    runner.process = lambda record: outcomes.append(process(record)) or outcomes[-1]
    unknown = dict(region_event("elz-u", 1), type="hecht.region.teleported.v1", data={"to": "mars"})
    foreign = dict(region_event("elz-u", 2), type="org.example.something.v9")
    known = region_event("elz-u", 3, name="ELZ U")
    _produce(ev.encode(unknown), ev.encode(foreign), ev.encode(known), key=b"elz-u")
    _drain(runner, lambda: len(outcomes) >= 3)
    runner.close()
    assert outcomes == ["applied", "applied", "applied"]  # skipped by the handler's rule, not dead-lettered
    assert db.inbox.count_documents({}) == 3
    assert db.regions_view.find_one({"_id": "elz-u"})["name"] == "ELZ U"


def test_out_of_order_events_across_subjects_are_each_applied_in_their_own_order(hecht_env):
    runner, db = _runner(None)
    runner.handle = Recorder(db)
    a1, a2, b1, b2 = (region_event(s, n) for s, n in (("elz-p", 1), ("elz-p", 2), ("elz-q", 1), ("elz-q", 2)))
    # interleaved subjects, and one subject's older event arriving after its newer one
    _produce(ev.encode(b2), ev.encode(a1), ev.encode(b1), ev.encode(a2), key=b"mixed")
    _drain(runner, lambda: _consumed(runner) >= 4)
    runner.close()
    assert {d["_id"] for d in db.applied.find()} == {a1["id"], a2["id"], b2["id"]}  # b1 is stale
    assert db.subject_cursors.find_one({"_id": "elz-q"})["sequence"] == 2


def test_lag_is_reported_for_owned_partitions_only(hecht_env):
    from hecht.consumer import LAG
    runner, db = _runner(None)
    runner.handle = Recorder(db)
    _produce(ev.encode(region_event("elz-lag", 1)), key=b"elz-lag")

    def series():
        return {tuple(s.labels.values()) for m in LAG.collect() for s in m.samples
                if s.labels.get("group") == "agreements" and s.labels["topic"] == runner.topics[0]}
    _drain(runner, lambda: db.applied.count_documents({}) == 1 and bool(series()))
    assert {labels[2] for labels in series()} == {str(tp.partition) for tp in runner._consumer.assignment()}
    runner.close()  # a closed consumer owns no partition: its figures must not linger
    assert series() == set()


# -- web plumbing -----------------------------------------------------------------------------
def _is_problem(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    assert r.mimetype == "application/problem+json"
    body = r.json
    assert body["status"] == status and body["title"]
    assert "Traceback" not in r.get_data(as_text=True)
    return body


def test_problem_responses_for_malformed_requests(client):
    admin = bearer("platform-admin")
    _is_problem(client.post("/v1/regions", data="{nope", headers={**admin, "Content-Type": "application/json"}), 400)
    _is_problem(client.get("/v1/nowhere"), 404)
    body = _is_problem(client.delete("/v1/regions", headers=admin), 405)
    _is_problem(client.post("/v1/regions", data="id=x", headers={**admin, "Content-Type": "text/plain"}), 415)
    _is_problem(client.post("/v1/regions", data=json.dumps({"x": "y" * 300_000}),
                            headers={**admin, "Content-Type": "application/json"}), 413)
    bad = dict(REGION, country="DE", mandate_policy={"quorum": 2})
    body = _is_problem(client.post("/v1/regions", json=bad, headers=admin), 422)
    assert "country" in body["errors"] and "quorum" in body["errors"]["mandate_policy"]
    assert members_db().regions.count_documents({}) == 0  # bad input changes nothing


def test_problem_responses_for_auth(client):
    _is_problem(client.post("/v1/regions", json=REGION), 401)
    forged = bearer("platform-admin")["Authorization"][:-4] + "AAAA"
    _is_problem(client.post("/v1/regions", json=REGION, headers={"Authorization": forged}), 401)
    expired = bearer("platform-admin", ttl=-10)
    assert "expired" in _is_problem(client.post("/v1/regions", json=REGION, headers=expired), 401)["detail"]
    _is_problem(client.post("/v1/regions", json=REGION, headers=bearer("region-admin", "elz-gent")), 403)
    assert client.post("/v1/regions", json=REGION, headers=bearer("platform-admin")).status_code == 201
    _is_problem(client.get("/v1/regions/elz-gent", headers=bearer("region-admin", "elz-other")), 404)
    assert client.get("/v1/regions/elz-gent", headers=bearer("gp", "elz-gent", "m_1")).status_code == 200


def test_idempotency_key_replays_the_first_result(client):
    headers = {**bearer("platform-admin"), "Idempotency-Key": "abc-123"}
    first = client.post("/v1/regions", json=REGION, headers=headers)
    again = client.post("/v1/regions", json=REGION, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
    _is_problem(client.post("/v1/regions", json=dict(REGION, name="Other"), headers=headers), 422)
    # without the key, the same body is a duplicate
    _is_problem(client.post("/v1/regions", json=REGION, headers=bearer("platform-admin")), 409)


def test_if_match_guards_updates(client):
    created = client.post("/v1/regions", json=REGION, headers=bearer("platform-admin"))
    admin = bearer("region-admin", "elz-gent")
    tag = created.headers["ETag"]
    ok = client.patch("/v1/regions/elz-gent", json={"name": "A"}, headers={**admin, "If-Match": tag})
    assert ok.status_code == 200 and ok.headers["ETag"] != tag
    _is_problem(client.patch("/v1/regions/elz-gent", json={"name": "B"}, headers={**admin, "If-Match": tag}), 412)
    assert client.get("/v1/regions/elz-gent", headers=admin).json["name"] == "A"


def test_cursor_pagination_walks_every_item_once(client):
    admin = bearer("platform-admin")
    for i in range(7):
        assert client.post("/v1/regions", json=dict(REGION, id=f"r-{i}"), headers=admin).status_code == 201
    seen, url = [], "/v1/regions?limit=3"
    while url:
        page = client.get(url, headers=admin).json
        seen += [r["id"] for r in page["items"]]
        url = page["next"]
    assert seen == [f"r-{i}" for i in range(7)]
    rest = client.get("/v1/regions?after=r-4", headers=admin).json
    assert [r["id"] for r in rest["items"]] == ["r-5", "r-6"] and rest["next"] is None
    _is_problem(client.get("/v1/regions?limit=0", headers=admin), 422)


def test_readyz_reports_an_unreachable_dependency(hecht_env, monkeypatch):
    from services.members.app import create_app
    assert create_app().test_client().get("/readyz").status_code == 200
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    body = _is_problem(create_app().test_client().get("/readyz"), 503)
    assert body["checks"]["mongodb"] == "ok" and body["checks"]["kafka"] != "ok"


def test_the_docs_page_needs_no_other_host(client):
    """/docs loads ReDoc from the service itself (vendored): offline networks see the page."""
    page = client.get("/docs").get_data(as_text=True)
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    assert scripts == ["/docs/redoc.standalone.js"], scripts
    assert "://" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page))
    r = client.get("/docs/redoc.standalone.js")
    assert r.status_code == 200 and "javascript" in r.mimetype and len(r.data) > 500_000


def test_a_consumer_handles_an_event_under_the_producers_trace(hecht_env):
    """Log lines written while an event is handled carry the trace id of the request that
    produced it (W3C traceparent on the event), and the runner's own context is restored."""
    from types import SimpleNamespace

    from hecht import events as ev, logs
    from hecht.config import settings as load
    from hecht.consumer import ConsumerRunner
    from hecht.mongo import client as mongo_client

    s = load("notify")
    db = mongo_client(s.mongo_uri).get_database(s.database_name)
    seen = []
    runner = ConsumerRunner(s, db, "trace-test", ["hecht.members"], lambda e: seen.append(logs.trace_id.get()))
    trace = "0af7651916cd43dd8448eb211c80319c"
    event = ev.build("region.registered", subject="r-trace", sequence=1, region="r-trace", validate_data=False,
                     data={"region_id": "r-trace"}, traceparent=f"00-{trace}-b7ad6b7169203331-01",
                     source="/hecht/members")
    before = logs.trace_id.get()
    assert runner.process(SimpleNamespace(value=json.dumps(event).encode(), headers=[], topic="t",
                                          partition=0, offset=0, key=b"r-trace")) == "applied"
    assert seen == [trace]
    assert logs.trace_id.get() == before
