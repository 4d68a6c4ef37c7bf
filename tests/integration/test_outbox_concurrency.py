"""Optimistic concurrency of the shared AggregateStore on the real MongoDB-protocol server."""
from __future__ import annotations

import threading

import pytest

from hecht import mongo, outbox
from hecht.config import settings
from hecht.errors import PreconditionFailed
from hecht.outbox import AggregateStore, EventDraft

DATA = {"region_id": "r-c", "name": "R", "country": "NL", "kind": "zorggroep", "municipalities": ["Delft"],
        "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 7}}


def _store():
    s = settings("members")
    db = mongo.database(s.mongo_uri, s.database_name)
    store = AggregateStore(db.regions, source="")
    store.create({"_id": "r-c", "region": "r-c", "n": 0}, [EventDraft("region.registered", DATA)])
    return db, store


def test_concurrent_read_modify_write_loses_no_update(hecht_env):
    db, store = _store()
    threads, per_thread = 6, 8

    def work():
        done = 0
        while done < per_thread:
            doc = db.regions.find_one({"_id": "r-c"})
            try:
                store.update("r-c", doc["version"], {"n": doc["n"] + 1},
                             [EventDraft("region.updated", DATA)], region="r-c")
                done += 1
            except PreconditionFailed:
                pass  # someone else won this step: read again and retry

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    doc = db.regions.find_one({"_id": "r-c"})
    assert doc["n"] == threads * per_thread
    assert doc["version"] == 1 + threads * per_thread
    sequences = [e["sequence"] for e in outbox.pending(db, "r-c")]
    assert sequences == list(range(1, 2 + threads * per_thread))  # one event per step, no gaps, no repeats


def test_a_write_on_a_stale_version_changes_nothing_and_records_no_event(hecht_env):
    db, store = _store()
    store.update("r-c", 1, {"n": 1}, [EventDraft("region.updated", DATA)], region="r-c")
    with pytest.raises(PreconditionFailed):
        store.update("r-c", 1, {"n": 99}, [EventDraft("region.updated", DATA)], region="r-c")
    assert db.regions.find_one({"_id": "r-c"})["n"] == 1
    assert [e["sequence"] for e in outbox.pending(db, "r-c")] == [1, 2]


def test_a_request_without_if_match_is_reapplied_after_losing_a_race(hecht_env, monkeypatch):
    """No ETag sent = "on the current state": a concurrent step is re-read, not answered 412."""
    from services.members import handlers
    from services.members.app import create_app
    from tests.conftest import bearer
    client = create_app().test_client()
    region = dict(DATA, id="r-u")
    region.pop("region_id")
    assert client.post("/v1/regions", json=region, headers=bearer("platform-admin")).status_code == 201
    db = mongo.database(settings("members").mongo_uri, settings("members").database_name)
    real_save = handlers.RegionRepository.save
    raced = []

    def save_after_a_rival(self, region_obj, version, drafts, trace):
        if not raced:  # a rival writer takes this very step first
            raced.append(version)
            db.regions.update_one({"_id": "r-u"}, {"$inc": {"version": 1}})
        return real_save(self, region_obj, version, drafts, trace)

    monkeypatch.setattr(handlers.RegionRepository, "save", save_after_a_rival)
    r = client.patch("/v1/regions/r-u", json={"name": "Renamed"}, headers=bearer("region-admin", "r-u"))
    assert r.status_code == 200 and r.json["name"] == "Renamed", r.get_data(as_text=True)
    assert raced == [1]
    raced.clear()
    r = client.patch("/v1/regions/r-u", json={"name": "Again"}, headers=dict(
        bearer("region-admin", "r-u"), **{"If-Match": r.headers["ETag"]}))
    assert r.status_code == 412  # with If-Match the client asked for that version only


def test_the_relay_never_loses_a_write_made_while_it_publishes(hecht_env):
    """Writers commit while the relay follows the change stream and deletes what it published;
    every step and every event must survive, each subject's events in order on the topic."""
    import json

    from kafka import KafkaConsumer

    from hecht import kafka as hk, topics
    from hecht.outbox import Relay
    from tests.conftest import wait_until
    db, store = _store()
    s = settings("members")
    relay = Relay(db, s.topic(topics.MEMBERS), lambda: hk.producer(s), "members", poll_s=0.05)
    steps = 60
    stop = threading.Event()
    t = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    t.start()
    done = 0
    try:
        while done < steps:
            doc = db.regions.find_one({"_id": "r-c"})
            try:
                store.update("r-c", doc["version"], {"n": doc["n"] + 1}, [EventDraft("region.updated", DATA)],
                             region="r-c")
                done += 1
            except PreconditionFailed:
                pass
        wait_until(lambda: db.outbox.count_documents({}) == 0, timeout=60, message="the outbox drained")
    finally:
        stop.set()
        t.join(timeout=60)
    doc = db.regions.find_one({"_id": "r-c"})
    assert (doc["n"], doc["version"]) == (steps, steps + 1)
    archived = sorted(e["sequence"] for e in db.events.find({"subject": "r-c"}))
    assert archived == list(range(1, steps + 2))
    consumer = KafkaConsumer(s.topic(topics.MEMBERS), bootstrap_servers=s.kafka_bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        seqs = [json.loads(r.value)["sequence"] for r in consumer]
    finally:
        consumer.close()
    assert sorted(set(seqs)) == list(range(1, steps + 2))
    firsts = [q for i, q in enumerate(seqs) if q not in seqs[:i]]
    assert firsts == sorted(firsts)  # in order (a re-published event may follow, never precede)
