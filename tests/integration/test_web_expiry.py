"""Expiry by TTL indexes (hecht.web, hecht.consumer): idempotency records and rate-limit
windows, the consumer inbox. The server's TTL monitor deletes in the background (MongoDB:
a pass every 60 s), so what these tests check is that the indexes are there with the right
expiry, also over the plain indexes of earlier releases, and that behaviour never depends
on when the monitor runs: an expired idempotency record is ignored while it still exists."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from flask_smorest import Blueprint
from pymongo import ASCENDING

from hecht import consumer, mongo
from hecht.config import settings
from hecht.web import create_service_app, ensure_platform_indexes, idempotent, public


def _db():
    s = settings("notify")
    return mongo.database(s.mongo_uri, s.database_name)


@pytest.fixture
def app(hecht_env):
    """A service with one idempotent endpoint that counts its executions."""
    calls = []
    bp = Blueprint("things", __name__, url_prefix="/v1/things")

    @bp.post("")
    @public
    @idempotent
    def create_thing():
        calls.append(1)
        n = len(calls)
        time.sleep(0.2)  # long enough for concurrent retries to meet it running
        return {"n": n}, 201

    app = create_service_app("notify", title="t", description="t", blueprints=[bp])
    app.calls = calls
    return app


def _ttl(coll, field: str):
    """expireAfterSeconds of the index on ``field`` (None: a plain index; KeyError: none)."""
    [ix] = [ix for ix in coll.index_information().values() if ix["key"] == [(field, ASCENDING)]]
    return ix.get("expireAfterSeconds")


def _expire_every_record() -> None:
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    assert _db().idempotency.update_many({}, {"$set": {"expires_at": past}}).modified_count == 1


def test_an_expired_idempotency_record_is_not_replayed_before_the_ttl_monitor_removes_it(app):
    client = app.test_client()
    key = {"Idempotency-Key": "k-1"}
    first = client.post("/v1/things", json={"a": 1}, headers=key)
    again = client.post("/v1/things", json={"a": 1}, headers=key)
    assert first.status_code == again.status_code == 201 and again.json == {"n": 1}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.post("/v1/things", json={"a": 2}, headers=key).status_code == 422  # live: another body refused
    assert _ttl(_db().idempotency, "expires_at") == 0 and _ttl(_db().rate_limits, "expires_at") == 0

    _expire_every_record()  # past its time, still stored: the TTL monitor has not run yet
    later = client.post("/v1/things", json={"a": 2}, headers=key)
    assert later.status_code == 201 and later.json == {"n": 2} and "Idempotent-Replayed" not in later.headers
    [record] = list(_db().idempotency.find())
    assert record["state"] == "done" and record["expires_at"] > datetime.now(timezone.utc) + timedelta(hours=1)
    replay = client.post("/v1/things", json={"a": 2}, headers=key)
    assert replay.json == {"n": 2} and replay.headers["Idempotent-Replayed"] == "true"
    assert len(app.calls) == 2


def test_concurrent_retries_of_an_expired_key_run_it_once(app):
    key = {"Idempotency-Key": "k-race"}
    assert app.test_client().post("/v1/things", json={}, headers=key).status_code == 201
    _expire_every_record()
    start = threading.Barrier(8)
    statuses = []

    def retry():
        client = app.test_client()
        start.wait()
        statuses.append(client.post("/v1/things", json={}, headers=key).status_code)
    threads = [threading.Thread(target=retry) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(app.calls) == 2, statuses  # the first request and exactly one retry ran
    assert sorted(set(statuses)) in ([201], [201, 409]) and statuses.count(201) >= 1
    assert _db().idempotency.count_documents({}) == 1


def test_ttl_indexes_replace_the_plain_indexes_of_earlier_releases(hecht_env, monkeypatch):
    db = _db()
    db.idempotency.create_index([("expires_at", ASCENDING)])  # as earlier releases made them
    db.rate_limits.create_index([("expires_at", ASCENDING)])
    db[consumer.INBOX].create_index([("at", ASCENDING)])
    assert _ttl(db.idempotency, "expires_at") is None
    ensure_platform_indexes(db)
    consumer.ensure_indexes(db)
    assert _ttl(db.idempotency, "expires_at") == 0 and _ttl(db.rate_limits, "expires_at") == 0
    assert _ttl(db[consumer.INBOX], "at") == 35 * 86400  # beyond the topics' 30 days
    monkeypatch.setenv("HECHT_INBOX_RETENTION_DAYS", "40")
    consumer.ensure_indexes(db)  # a changed retention changes the index, and running it again is fine
    ensure_platform_indexes(db)
    assert _ttl(db[consumer.INBOX], "at") == 40 * 86400
    assert len(db[consumer.INBOX].index_information()) == 2  # _id and the TTL index, nothing doubled


def test_a_rate_limit_counter_the_server_does_not_return_is_counted_again_not_a_500(hecht_env, monkeypatch):
    """SecantusDB 0.7 once answered an upsert (return_document=AFTER) with no document, among
    ~1,500 racing first requests of a window; the sign-up got a 500. It is counted again."""
    from pymongo.collection import Collection

    from services.members.app import create_app
    from tests.conftest import bearer
    client = create_app().test_client()
    region = {"id": "elz-rl", "name": "ELZ", "country": "BE", "kind": "eerstelijnszone",
              "municipalities": ["Gent"]}
    assert client.post("/v1/regions", json=region, headers=bearer("platform-admin")).status_code == 201
    real = Collection.find_one_and_update
    missing = []

    def once_none(self, *args, **kwargs):
        doc = real(self, *args, **kwargs)
        if self.name == "rate_limits" and not missing:
            missing.append(doc)
            return None
        return doc
    monkeypatch.setattr(Collection, "find_one_and_update", once_none)
    form = {"given_name": "An", "family_name": "Peeters", "email": "an@example.org", "language": "nl",
            "registration": {"scheme": "RIZIV", "number": "10829059003"},
            "practice": {"name": "P", "postcode": "9000", "municipality": "Gent"}}
    r = client.post("/v1/regions/elz-rl/members", json=form)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert missing  # the counter really was withheld once
    counter = _db().client[settings("members").database_name].rate_limits.find_one()
    assert counter["n"] == 2  # counted twice: the limit errs on the safe side
