"""What hecht relies on from its MongoDB server, checked against the running one.

Production runs MongoDB replica sets; the local and test stacks run SecantusDB.
hecht's storage code assumes the properties below; a server lacking one breaks
it silently, so each test here fails (never skips) on such a server. FerretDB
1.x, for instance, let 1-3 of 48 version-guarded updates win a round and lost
7-33 guarded increments, and had no transactions, change streams or TTL.

- Conditional-update isolation: an aggregate is written with the filter
  ``{_id, version}``; exactly one of many writers that read the same version
  may win, or two requests both succeed and one change (and its events) is lost.
- Multi-document transactions (the transactional outbox): the aggregate update
  and the insert of its events into ``outbox`` commit together or not at all;
  an aborted transaction leaves nothing, not even a change-stream entry, and
  two transactions writing the same document cannot both commit (the loser gets
  a ``TransientTransactionError``, which ``with_transaction`` retries).
- Change streams with resume tokens: the relay follows the outbox change stream
  and stores its resume token; after a crash of the database (kill -9) it must
  resume after that token with nothing lost, duplicated or reordered.
- Unique indexes: event ids, idempotency keys and claims are unique keys; a
  duplicate must fail with ``DuplicateKeyError`` (code 11000), also under races
  and through upserts.
- TTL indexes: idempotency keys, the inbox and settled deliveries expire
  through TTL indexes instead of hourly purges.
- Read-your-write: a response is sent after an acknowledged write; the next
  request (another connection, another process) must see it.

Every test uses its own database (``sem_<uuid>``) and drops it afterwards.
"""
from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pymongo
import pytest
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.write_concern import WriteConcern

from tests.conftest import wait_until

STACK = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack.sh"

# mongod's TTL monitor deletes expired documents in a background pass every 60 s
# (ttlMonitorSleepSecs). SecantusDB 0.7.0b3 mirrors it: secantus/storage.py,
# ``ttl_sweep_seconds: float = 60.0`` (the stack does not change it), a thread that
# sleeps 60 s and then prunes every collection with a TTL index. An expired document
# is therefore gone at most one interval plus one pass after it expired; 30 s of
# margin covers the pass on a busy 2-core machine.
TTL_MONITOR_INTERVAL_S = 60
TTL_BOUND_S = TTL_MONITOR_INTERVAL_S + 30

DURABLE = WriteConcern(w="majority", j=True)


def new_client(uri: str, **kw) -> pymongo.MongoClient:
    kw.setdefault("serverSelectionTimeoutMS", 10000)
    return pymongo.MongoClient(uri, tz_aware=True, uuidRepresentation="standard", **kw)


@pytest.fixture
def mongo(stack):
    """A fresh database for this test; ``mongo.client()`` opens further clients (own pools)."""

    class Mongo:
        def __init__(self) -> None:
            self.uri = stack["mongo"]
            self.name = f"sem_{uuid.uuid4().hex[:12]}"
            self.clients: list[pymongo.MongoClient] = []
            self.db = self.client()[self.name]

        def client(self, **kw) -> pymongo.MongoClient:
            c = new_client(self.uri, **kw)
            self.clients.append(c)
            return c

    m = Mongo()
    yield m
    for c in m.clients:
        c.close()
    with new_client(m.uri) as c:  # fresh: a test may have restarted the server
        c.drop_database(m.name)


def together(n: int, work: Callable[[int, Callable[[], object]], object], timeout: float = 120) -> list:
    """Run ``work(i, go)`` in n threads; ``go()`` releases them all at once (a barrier)."""
    barrier = threading.Barrier(n, timeout=timeout)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i, barrier.wait)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"threads still running after {timeout}s"
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    assert not errors, f"{len(errors)} thread(s) failed: {(real or errors)[:3]!r}"
    return results


def stack_script(*args: str) -> None:
    subprocess.run([str(STACK), *args], check=True, capture_output=True, timeout=180)


# --- conditional-update isolation ------------------------------------------------------


def test_48_guarded_updates_from_the_same_read_have_exactly_one_winner_per_round(mongo):
    threads, rounds = 48, 6
    # maxConnecting: the pool may open all 48 connections at once (the default, 2,
    # would stagger the first rounds' writes), and a first round opens them.
    coll = mongo.client(maxPoolSize=threads + 4, maxConnecting=threads)[mongo.name].aggregates
    together(threads, lambda i, go: (go(), coll.find_one({"_id": "warm-up"})))
    coll.insert_one({"_id": "agg", "version": 1, "n": 0})
    for r in range(rounds):
        def attempt(i, go):
            v = coll.find_one({"_id": "agg"})["version"]
            go()  # all 48 read the same version before anyone writes
            return coll.find_one_and_update({"_id": "agg", "version": v},
                                            {"$set": {"version": v + 1}, "$inc": {"n": 1}},
                                            return_document=ReturnDocument.AFTER)

        results = together(threads, attempt)
        winners = [d for d in results if d is not None]
        assert len(winners) == 1, f"round {r}: {len(winners)} winners"
        assert winners[0]["version"] == r + 2 and winners[0]["n"] == r + 1
    assert coll.find_one({"_id": "agg"}) == {"_id": "agg", "version": rounds + 1, "n": rounds}


def test_read_then_guarded_update_loops_lose_no_increment(mongo):
    # The counter is computed by the client (as hecht computes an aggregate's new
    # state) and written with $set: two winners from one read lose an increment.
    threads, loops = 12, 20
    coll = mongo.client(maxPoolSize=threads + 4, maxConnecting=threads)[mongo.name].counters
    coll.insert_one({"_id": "c", "version": 1, "n": 0})
    attempts = [0] * threads

    def work(i, go):
        go()
        won = 0
        while won < loops:
            attempts[i] += 1
            assert attempts[i] < 100 * loops, "no progress"
            doc = coll.find_one({"_id": "c"})
            r = coll.update_one({"_id": "c", "version": doc["version"]},
                                {"$set": {"version": doc["version"] + 1, "n": doc["n"] + 1}})
            won += r.modified_count
        return won

    assert sum(together(threads, work)) == threads * loops
    final = coll.find_one({"_id": "c"})
    lost = threads * loops - final["n"]
    assert lost == 0, f"{lost} increments lost ({sum(attempts)} attempts)"
    assert final["version"] == threads * loops + 1


# --- multi-document transactions (the transactional outbox) --------------------------


class Boom(Exception):
    pass


def _outbox_setup(mongo):
    db = mongo.db
    db.aggregates.insert_one({"_id": "a1", "version": 1, "name": "before"})
    db.create_collection("outbox")
    return db


def _change_and_events(db, session, events=("e1", "e2")):
    r = db.aggregates.update_one({"_id": "a1", "version": 1},
                                 {"$set": {"version": 2, "name": "after"}}, session=session)
    assert r.modified_count == 1
    db.outbox.insert_many([{"_id": e, "subject": "a1", "sequence": 2} for e in events], session=session)


def test_an_aborted_transaction_leaves_nothing(mongo):
    db = _outbox_setup(mongo)
    other = mongo.client()[mongo.name]
    with db.outbox.watch(max_await_time_ms=200) as stream:
        with db.client.start_session() as session:
            with pytest.raises(Boom):
                with session.start_transaction():
                    _change_and_events(db, session)
                    # The transaction sees its own writes; nobody else does yet.
                    assert db.outbox.count_documents({}, session=session) == 2
                    assert db.aggregates.find_one({"_id": "a1"}, session=session)["version"] == 2
                    assert other.outbox.count_documents({}) == 0
                    assert other.aggregates.find_one({"_id": "a1"})["version"] == 1
                    raise Boom
        assert db.aggregates.find_one({"_id": "a1"}) == {"_id": "a1", "version": 1, "name": "before"}
        assert other.aggregates.find_one({"_id": "a1"})["version"] == 1
        assert db.outbox.count_documents({}) == 0 and other.outbox.count_documents({}) == 0
        # The relay never sees the aborted events: the stream's next entry is the marker.
        db.outbox.insert_one({"_id": "marker"})
        seen = _read_stream(stream, lambda got: "marker" in got)
        assert seen == ["marker"]


def test_a_committed_transaction_leaves_the_update_and_the_events(mongo):
    db = _outbox_setup(mongo)
    other = mongo.client()[mongo.name]
    with db.outbox.watch(max_await_time_ms=200) as stream:
        with db.client.start_session() as session:
            with session.start_transaction():
                _change_and_events(db, session)
                assert other.outbox.count_documents({}) == 0
        assert other.aggregates.find_one({"_id": "a1"}) == {"_id": "a1", "version": 2, "name": "after"}
        assert sorted(d["_id"] for d in other.outbox.find()) == ["e1", "e2"]
        assert _read_stream(stream, lambda got: len(got) >= 2) == ["e1", "e2"]


def test_concurrent_transactions_on_one_document_cannot_both_commit(mongo):
    db = _outbox_setup(mongo)
    client = db.client
    with client.start_session() as s1, client.start_session() as s2:
        # Both open at once; the second write to the document conflicts.
        s1.start_transaction()
        s2.start_transaction()
        db.aggregates.update_one({"_id": "a1", "version": 1}, {"$set": {"version": 2, "by": "s1"}}, session=s1)
        with pytest.raises(OperationFailure) as conflict, pymongo.timeout(20):  # MongoDB does not wait
            db.aggregates.update_one({"_id": "a1", "version": 1}, {"$set": {"version": 2, "by": "s2"}},
                                     session=s2)
            db.outbox.insert_one({"_id": "e-s2"}, session=s2)
            s2.commit_transaction()
        assert conflict.value.has_error_label("TransientTransactionError"), conflict.value.details
        assert conflict.value.code == 112, conflict.value.details  # WriteConflict
        if s2.in_transaction:
            s2.abort_transaction()
        db.outbox.insert_one({"_id": "e-s1"}, session=s1)
        s1.commit_transaction()
    assert db.aggregates.find_one({"_id": "a1"})["by"] == "s1"
    assert [d["_id"] for d in db.outbox.find()] == ["e-s1"]

    # Snapshot isolation: a transaction that read the document before another one
    # committed a change to it cannot write it afterwards (no lost update).
    with client.start_session() as s3, client.start_session() as s4:
        s3.start_transaction()
        assert db.aggregates.find_one({"_id": "a1"}, session=s3)["version"] == 2
        with s4.start_transaction():
            db.aggregates.update_one({"_id": "a1"}, {"$set": {"version": 3, "by": "s4"}}, session=s4)
        with pytest.raises(OperationFailure) as stale, pymongo.timeout(20):
            db.aggregates.update_one({"_id": "a1"}, {"$set": {"version": 3, "by": "s3"}}, session=s3)
            s3.commit_transaction()
        assert stale.value.has_error_label("TransientTransactionError"), stale.value.details
        if s3.in_transaction:
            s3.abort_transaction()
    assert db.aggregates.find_one({"_id": "a1"})["by"] == "s4"


def test_transactional_outbox_under_contention_keeps_one_event_per_version(mongo):
    # hecht's write path: read the aggregate, update it guarded by its version and
    # insert the event with the new sequence, all in one transaction, retried by
    # with_transaction on TransientTransactionError. 8 writers, 10 changes each.
    threads, changes = 8, 10
    db = mongo.client(maxPoolSize=threads + 4, maxConnecting=threads)[mongo.name]
    db.aggregates.insert_one({"_id": "a1", "version": 0, "n": 0})
    db.create_collection("outbox")

    def work(i, go):
        go()
        for k in range(changes):
            with db.client.start_session() as session:
                def change(s):
                    doc = db.aggregates.find_one({"_id": "a1"}, session=s)
                    v = doc["version"] + 1
                    r = db.aggregates.update_one({"_id": "a1", "version": doc["version"]},
                                                 {"$set": {"version": v, "n": doc["n"] + 1}}, session=s)
                    assert r.modified_count == 1, "a transaction's snapshot went stale without a conflict"
                    db.outbox.insert_one({"_id": f"w{i}-{k}", "sequence": v}, session=s)

                session.with_transaction(change)

    together(threads, work)
    total = threads * changes
    assert db.aggregates.find_one({"_id": "a1"}) == {"_id": "a1", "version": total, "n": total}
    sequences = sorted(d["sequence"] for d in db.outbox.find())
    assert sequences == list(range(1, total + 1))


# --- change streams ---------------------------------------------------------------------


def _read_stream(stream, done: Callable[[list], bool], timeout: float = 30.0, extra_s: float = 0.0) -> list:
    """The documentKey _ids of a change stream's entries until ``done(ids)``; then ``extra_s``
    more seconds, so that entries that should not be there have a chance to show up."""
    got: list = []
    deadline = time.monotonic() + timeout
    while not done(got):
        assert time.monotonic() < deadline, f"timed out reading the change stream: {got}"
        change = stream.try_next()
        if change is not None:
            got.append(change["documentKey"]["_id"])
    end = time.monotonic() + extra_s
    while time.monotonic() < end:
        change = stream.try_next()
        if change is not None:
            got.append(change["documentKey"]["_id"])
    return got


@pytest.mark.kills_database
def test_a_change_stream_resumes_from_a_stored_token_after_kill_9_of_the_database(mongo):
    """KILLS THE DATABASE: kill -9 of the stack's database server, then a restart
    (deploy/local/stack.sh kill9/restart mongo, like tests/reliability/test_outages.py)."""
    first = mongo.client()
    outbox = first[mongo.name].get_collection("outbox", write_concern=DURABLE)
    first[mongo.name].create_collection("outbox")
    with outbox.watch(max_await_time_ms=200) as stream:
        outbox.insert_one({"_id": "A"})
        assert _read_stream(stream, lambda got: len(got) >= 1) == ["A"]
        token = stream.resume_token  # what the relay stores after a published batch
    assert token is not None
    outbox.insert_one({"_id": "B"})  # acknowledged, majority and journaled
    outbox.insert_one({"_id": "C"})
    first.close()
    try:
        stack_script("kill9", "mongo")
    finally:
        stack_script("restart", "mongo")

    outbox = mongo.client()[mongo.name].get_collection("outbox", write_concern=DURABLE)
    assert sorted(d["_id"] for d in outbox.find()) == ["A", "B", "C"]
    with outbox.watch(resume_after=token, max_await_time_ms=200) as stream:
        seen = _read_stream(stream, lambda got: len(got) >= 2, extra_s=1.0)
        assert seen == ["B", "C"]  # after A, none lost, none repeated, in order
        outbox.insert_one({"_id": "D"})  # and the resumed stream is live
        assert _read_stream(stream, lambda got: len(got) >= 1) == ["D"]


# --- unique indexes -------------------------------------------------------------------


def test_unique_indexes_reject_duplicates_from_inserts_updates_and_upserts(mongo):
    keys = mongo.db.idempotency_keys
    keys.create_index("key", unique=True)
    keys.insert_one({"_id": 1, "key": "k1"})
    keys.insert_one({"_id": 2, "key": "k2"})
    with pytest.raises(DuplicateKeyError) as e:
        keys.insert_one({"_id": 3, "key": "k1"})
    assert e.value.code == 11000
    with pytest.raises(DuplicateKeyError) as e:
        keys.insert_one({"_id": 1, "key": "k9"})
    assert e.value.code == 11000
    with pytest.raises(DuplicateKeyError) as e:  # an upsert that would create a duplicate
        keys.find_one_and_update({"_id": 4}, {"$set": {"key": "k1"}}, upsert=True)
    assert e.value.code == 11000
    with pytest.raises(DuplicateKeyError) as e:  # an update that would make one
        keys.find_one_and_update({"_id": 2}, {"$set": {"key": "k1"}})
    assert e.value.code == 11000
    assert sorted((d["_id"], d["key"]) for d in keys.find()) == [(1, "k1"), (2, "k2")]

    # Inside a transaction a duplicate event id fails the whole change.
    db = mongo.db
    db.aggregates.insert_one({"_id": "a1", "version": 1})
    db.outbox.insert_one({"_id": "ev-1"})
    with db.client.start_session() as session:
        with pytest.raises(DuplicateKeyError):
            with session.start_transaction():
                db.aggregates.update_one({"_id": "a1"}, {"$set": {"version": 2}}, session=session)
                db.outbox.insert_one({"_id": "ev-1"}, session=session)
    assert db.aggregates.find_one({"_id": "a1"})["version"] == 1


def test_16_concurrent_inserts_of_one_key_have_exactly_one_success(mongo):
    threads, rounds = 16, 4
    db = mongo.client(maxPoolSize=threads + 4, maxConnecting=threads)[mongo.name]
    coll = db.claims
    coll.create_index("key", unique=True)
    for r in range(rounds):
        for target, field in ((db.claims_by_id, "_id"), (coll, "key")):
            def claim(i, go):
                go()
                try:
                    target.insert_one({field: f"r{r}", "by": i})
                    return "ok"
                except DuplicateKeyError as e:
                    assert e.code == 11000
                    return "dup"

            outcomes = together(threads, claim)
            assert outcomes.count("ok") == 1, f"round {r} on {field}: {outcomes}"
            assert target.count_documents({field: f"r{r}"}) == 1

    # Concurrent upserts of one key (notify's claims): one document, never two.
    def upsert(i, go):
        go()
        try:
            coll.find_one_and_update({"key": "upserted"}, {"$setOnInsert": {"by": i}}, upsert=True)
            return "ok"
        except DuplicateKeyError:
            return "dup"

    outcomes = together(threads, upsert)
    assert outcomes.count("ok") >= 1
    assert coll.count_documents({"key": "upserted"}) == 1


# --- TTL ----------------------------------------------------------------------------------


def test_ttl_index_removes_expired_documents_within_one_monitor_interval(mongo):
    keys = mongo.db.idempotency_keys
    keys.create_index("expires_at", expireAfterSeconds=0)
    now = dt.datetime.now(dt.timezone.utc)
    keys.insert_many([
        {"_id": "expired", "expires_at": now - dt.timedelta(seconds=1)},
        {"_id": "later", "expires_at": now + dt.timedelta(hours=1)},
        {"_id": "no-expiry"},
    ])
    start = time.monotonic()
    wait_until(lambda: keys.find_one({"_id": "expired"}) is None, timeout=TTL_BOUND_S, interval=0.5,
               message=f"the TTL monitor to remove an expired document (bound {TTL_BOUND_S} s)")
    print(f"expired document removed after {time.monotonic() - start:.1f} s")
    assert sorted(d["_id"] for d in keys.find()) == ["later", "no-expiry"]


# --- read-your-write ----------------------------------------------------------------------


def test_an_acknowledged_write_is_seen_at_once_by_other_clients(mongo):
    # Writer and readers are separate clients (separate pools, like separate
    # processes); the readers' pooled connections are reused for every read.
    threads, iterations = 4, 60
    mongo.db.members.create_index("email", unique=True)

    def work(i, go):
        writer = mongo.client(maxPoolSize=2)[mongo.name].members
        reader = mongo.client(maxPoolSize=1)[mongo.name].members
        go()
        stale = []
        for k in range(iterations):
            _id, email = f"t{i}-{k}", f"m{i}-{k}@example.org"
            writer.insert_one({"_id": _id, "email": email, "version": 1})
            if reader.find_one({"_id": _id}) is None:
                stale.append(("find by _id", _id))
            if reader.find_one({"email": email}) is None:
                stale.append(("find by index", _id))
            if reader.count_documents({"_id": {"$regex": f"^t{i}-"}}) != k + 1:
                stale.append(("count", _id))
            writer.update_one({"_id": _id}, {"$set": {"version": 2}})
            if (reader.find_one({"_id": _id}) or {}).get("version") != 2:
                stale.append(("update", _id))
            if k % 2:
                writer.delete_one({"_id": _id})
                if reader.find_one({"_id": _id}) is not None:
                    stale.append(("delete", _id))
                writer.insert_one({"_id": _id, "email": email, "version": 3})
        return stale

    stale = [s for r in together(threads, work) for s in r]
    assert stale == [], f"{len(stale)} stale reads, e.g. {stale[:5]}"


# -- a transaction left open by a killed process ---------------------------------------------
ABANDON_SCRIPT = """
import sys, time, pymongo
client = pymongo.MongoClient(sys.argv[1])
coll = client[sys.argv[2]].agg
session = client.start_session()
session.start_transaction()
coll.update_one({"_id": "a"}, {"$set": {"version": 2}}, session=session)
print("holding", flush=True)
time.sleep(600)
"""
TRANSACTION_LIFETIME_S = 60  # mongod's transactionLifetimeLimitSeconds; SecantusDB's reaper too


def test_a_killed_processs_transaction_stops_blocking_its_document_within_the_lifetime_limit(mongo):
    """A worker killed (-9) mid-transaction leaves its uncommitted write holding the document.
    The server must abort it after its lifetime limit (60 s), or that aggregate could never be
    written again. SecantusDB reaps on its transaction traffic, which hecht's workers keep up;
    the loop below keeps it up too. (Dropping a database that a dead process's write still
    holds hangs SecantusDB 0.7 entirely: see ``abort_abandoned_transactions`` in conftest.)"""
    import sys
    mongo.db.agg.insert_one({"_id": "a", "version": 1})
    proc = subprocess.Popen([sys.executable, "-c", ABANDON_SCRIPT, mongo.uri, mongo.name],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    client = mongo.client()
    coll = client[mongo.name].agg
    killed_at = time.monotonic()

    def guarded_write() -> bool:
        try:
            with client.start_session() as s, s.start_transaction():
                return coll.find_one_and_update({"_id": "a", "version": 1}, {"$set": {"version": 3}},
                                                session=s) is not None
        except OperationFailure as e:
            assert e.has_error_label("TransientTransactionError"), e
            return False
    assert not guarded_write()  # held by the dead process: a write conflict, at once
    wait_until(guarded_write, timeout=TRANSACTION_LIFETIME_S + 30, interval=2,
               message="the dead process's transaction to be aborted")
    held_for = time.monotonic() - killed_at
    assert coll.find_one({"_id": "a"})["version"] == 3  # its uncommitted write is gone
    assert held_for <= TRANSACTION_LIFETIME_S + 30, held_for
