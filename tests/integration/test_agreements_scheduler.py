"""The lifecycle scheduler: dated transitions exactly once, with racing workers and after a kill."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from hecht import events as ev
from services.agreements import domain, handlers
from services.agreements.repository import AgreementRepository
from services.agreements.worker import Scheduler, components
from tests.conftest import abort_abandoned_transactions, wait_until
from tests.integration.test_agreements_support import (  # noqa: F401 - fixtures
    REGION, T0, agreements_db, agreements_relay, event_types, seed_region)

REPO = Path(__file__).resolve().parents[2]
APRIL_1 = datetime(2026, 4, 1, 10, 0, tzinfo=timezone.utc)


def at(day: str, hour: int = 10) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), timezone.utc) + timedelta(hours=hour)


def terms(**overrides) -> domain.Terms:
    base = dict(title="Frail elderly at home", theme="frail-elderly",
                partners=[{"name": "Thuiszorg Gent", "kind": "home-nursing"}],
                commitments=[{"party": "region", "text": "A named GP per patient"}],
                municipalities=["Gent"], effective_from=date(2026, 4, 1), effective_until=None, review_date=None)
    return domain.Terms(**{**base, **overrides})


def run(cmd, now: datetime = T0):
    return handlers.handle(cmd, agreements_db(), now=now)


def draft(**overrides) -> str:
    return run(domain.DraftAgreement(REGION, terms(**overrides))).id


def open_vote(agreement_id: str, now: datetime = T0) -> None:
    run(domain.OpenMandate(REGION, agreement_id), now)


def mandate(agreement_id: str, voters: list[str], now: datetime = T0) -> None:
    open_vote(agreement_id, now)
    for m in voters:
        run(domain.CastVote(REGION, agreement_id, m, "for"), now)


def signed(voters, now: datetime = T0, **overrides) -> str:
    a = draft(**overrides)
    mandate(a, voters, now)
    run(domain.SignAgreement(REGION, a, "admin"), now)
    return a


def status(agreement_id: str) -> str:
    return AgreementRepository(agreements_db()).get(agreement_id).status


def count(agreement_id: str, short: str) -> int:
    return event_types(agreement_id).count(short)


# -- one scheduler ------------------------------------------------------------------------------
def test_a_vote_closes_at_its_deadline_exactly_once(hecht_env):
    voters = seed_region(members=3)
    a = draft()
    open_vote(a)
    run(domain.CastVote(REGION, a, voters[0], "for"), T0 + timedelta(days=1))
    now = [T0 + timedelta(days=14) - timedelta(seconds=1)]
    scheduler = Scheduler(agreements_db(), now=lambda: now[0])
    assert scheduler.run_once() == Counter() and status(a) == "in_consultation"
    now[0] += timedelta(seconds=1)
    assert scheduler.run_once() == Counter({"close_vote": 1})
    assert scheduler.run_once() == Counter()
    got = AgreementRepository(agreements_db()).get(a)
    assert got.status == "rejected" and got.mandate.close_reason == "deadline"  # 1 of 3 < quorum 0.5
    assert count(a, "agreement.mandate_rejected") == 1


def test_activation_review_and_expiry_each_happen_once_on_their_day(hecht_env):
    voters = seed_region(members=1)
    a = signed(voters, review_date=date(2026, 10, 1), effective_until=date(2027, 3, 31))
    now = [at("2026-03-31", 23)]
    scheduler = Scheduler(agreements_db(), now=lambda: now[0])
    timeline = [("2026-03-31", "mandated", Counter()),
                ("2026-04-01", "active", Counter({"activate": 1})),
                ("2026-09-30", "active", Counter()),
                ("2026-10-01", "active", Counter({"review": 1})),
                ("2027-03-31", "active", Counter()),
                ("2027-04-01", "expired", Counter({"expire": 1}))]
    for day, expected_status, expected_done in timeline:
        now[0] = at(day, 0)
        assert scheduler.run_once() == expected_done, day
        assert scheduler.run_once() == Counter(), day
        assert status(a) == expected_status, day
    assert event_types(a)[-4:] == ["agreement.signed", "agreement.activated", "agreement.review_due",
                                   "agreement.expired"]
    got = AgreementRepository(agreements_db()).get(a)
    assert (got.activated_on, got.ended_on) == (date(2026, 4, 1), date(2027, 4, 1))
    for e in AgreementRepository(agreements_db()).history(a):
        ev.validate(e)


# -- racing schedulers ---------------------------------------------------------------------------
def _due_on_april_1(voters) -> dict[str, list[str]]:
    """Agreements whose every kind of dated transition falls due by 1 April 2026."""
    items = {"close_vote": [], "activate": [], "expire": [], "review": [], "supersede": []}
    for _ in range(6):
        a = draft()
        open_vote(a)  # nobody votes; deadline 16 March
        items["close_vote"].append(a)
    for _ in range(6):
        items["activate"].append(signed(voters))  # starts 1 April
    for _ in range(4):
        items["expire"].append(signed(voters, effective_from=date(2026, 3, 1), effective_until=date(2026, 3, 31)))
    for _ in range(4):
        items["review"].append(signed(voters, effective_from=date(2026, 3, 1), review_date=date(2026, 3, 20)))
    for _ in range(3):
        v1 = signed(voters, effective_from=date(2026, 3, 1))
        v2 = run(domain.AmendAgreement(REGION, v1, {"summary": "v2", "effective_from": date(2026, 4, 1)})).id
        mandate(v2, voters)
        run(domain.SignAgreement(REGION, v2, "admin"))  # v2 starts 1 April: activation, then supersede v1
        items["activate"].append(v2)
        items["supersede"].append(v1)
    assert all(status(a) == "active" for a in items["expire"] + items["review"] + items["supersede"])
    return items


EXPECTED_EVENT = {"close_vote": "agreement.mandate_rejected", "activate": "agreement.activated",
                  "expire": "agreement.expired", "review": "agreement.review_due",
                  "supersede": "agreement.superseded"}


def _assert_each_once(items: dict[str, list[str]]) -> None:
    for rule, ids in items.items():
        for a in ids:
            assert count(a, EXPECTED_EVENT[rule]) == 1, (rule, a, event_types(a))
    assert all(status(a) == "rejected" for a in items["close_vote"])
    assert all(status(a) == "active" for a in items["activate"] + items["review"])
    assert all(status(a) == "expired" for a in items["expire"])
    assert all(status(a) == "superseded" for a in items["supersede"])


def test_two_schedulers_racing_apply_each_transition_once(hecht_env):
    items = _due_on_april_1(seed_region(members=1))
    db = agreements_db()
    start = threading.Barrier(2)
    results: list[Counter] = []
    errors: list[BaseException] = []

    def worker():
        try:
            scheduler = Scheduler(db, now=lambda: APRIL_1)
            start.wait()
            results.append(scheduler.run_once())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = results[0] + results[1]
    # Activating an amendment supersedes its predecessor in the same pass (handler), so the
    # "supersede" rule only picks up leftovers: the two counts together are what was due.
    assert total["close_vote"] == 6 and total["activate"] == 9 and total["expire"] == 4 and total["review"] == 4
    assert total["supersede"] == 0
    _assert_each_once(items)
    assert Scheduler(db, now=lambda: APRIL_1).run_once() == Counter()


# -- killed workers ------------------------------------------------------------------------------
SCHEDULER_SCRIPT = """
import sys, time
from datetime import datetime
from hecht import mongo
from hecht.config import settings
from services.agreements.worker import Scheduler
s = settings("agreements")
db = mongo.database(s.mongo_uri, s.database_name)
now = datetime.fromisoformat(sys.argv[1])
print("started", flush=True)
done = Scheduler(db, now=lambda: now, on_item=lambda rule, a: time.sleep(0.1)).run_once()
print("finished", dict(done), flush=True)
"""


def test_a_scheduler_killed_mid_run_loses_and_repeats_nothing(hecht_env):
    voters = seed_region(members=1)
    due = [signed(voters) for _ in range(16)]
    proc = subprocess.Popen([sys.executable, "-c", SCHEDULER_SCRIPT, APRIL_1.isoformat()], cwd=REPO,
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: sum(status(a) == "active" for a in due) >= 3, timeout=60,
                   message="the scheduler subprocess to activate a few agreements")
    finally:
        proc.kill()  # SIGKILL: no clean-up, no finally blocks
    out = proc.communicate(timeout=10)[0]
    assert proc.returncode == -9 and "finished" not in out, out
    # Killed mid-transaction, it holds that agreement until the server aborts the transaction
    # (after 60 s); abort it now instead of waiting.
    abort_abandoned_transactions(agreements_db().client)
    activated_before = sum(status(a) == "active" for a in due)
    assert 3 <= activated_before < len(due)

    assert Scheduler(agreements_db(), now=lambda: APRIL_1).run_once()["activate"] == len(due) - activated_before
    for a in due:
        assert status(a) == "active" and count(a, "agreement.activated") == 1


def test_a_worker_dying_before_its_commit_leaves_nothing_and_the_next_pass_finishes(hecht_env, monkeypatch):
    """A transition is one transaction: a worker dying before the commit leaves neither state nor event."""
    from hecht import outbox
    voters = seed_region(members=1)
    a = signed(voters)

    class Died(BaseException):
        pass

    def die(session):
        raise Died()
    with monkeypatch.context() as patch, pytest.raises(Died):
        patch.setattr(outbox, "_commit", die)
        Scheduler(agreements_db(), now=lambda: APRIL_1).run_once()
    assert status(a) == "mandated" and count(a, "agreement.activated") == 0
    assert Scheduler(agreements_db(), now=lambda: APRIL_1).run_once() == Counter({"activate": 1})
    assert Scheduler(agreements_db(), now=lambda: APRIL_1).run_once() == Counter()
    assert status(a) == "active" and count(a, "agreement.activated") == 1


def test_a_crash_between_activation_and_supersede_is_finished_once(hecht_env, monkeypatch):
    voters = seed_region(members=1)
    v1 = signed(voters, effective_from=date(2026, 3, 1))
    v2 = run(domain.AmendAgreement(REGION, v1, {"title": "Frail elderly at home, v2",
                                                 "effective_from": date(2026, 4, 1)})).id
    mandate(v2, voters)
    run(domain.SignAgreement(REGION, v2, "admin"))

    def crash(*args, **kwargs):
        raise RuntimeError("worker lost its database connection")
    with monkeypatch.context() as patch, pytest.raises(RuntimeError):
        patch.setattr(handlers, "_supersede_previous", crash)
        Scheduler(agreements_db(), now=lambda: APRIL_1).run_once()
    assert (status(v2), status(v1)) == ("active", "active")  # half done: both in force for a moment
    assert Scheduler(agreements_db(), now=lambda: APRIL_1).run_once() == Counter({"supersede": 1})
    assert Scheduler(agreements_db(), now=lambda: APRIL_1).run_once() == Counter()
    assert (status(v2), status(v1)) == ("active", "superseded")
    assert count(v1, "agreement.superseded") == 1 and count(v2, "agreement.activated") == 1


# -- one transaction per change -------------------------------------------------------------------
def test_a_vote_whose_event_cannot_be_stored_changes_nothing(hecht_env, monkeypatch):
    """The agreement, its ballot box and its events are written together or not at all."""
    from pymongo.collection import Collection
    from pymongo.errors import OperationFailure
    voters = seed_region(members=2)
    db = agreements_db()
    a = draft()
    open_vote(a)
    before = (db.agreements.find_one({"_id": a}), db.ballot_boxes.find_one({"_id": a}),
              sorted(e["_id"] for e in db.outbox.find()))
    real_insert_many = Collection.insert_many

    def outbox_fails(self, documents, *args, **kwargs):
        if self.name == "outbox":  # after the agreement and the box were written in this transaction
            raise OperationFailure("simulated failure while storing the events")
        return real_insert_many(self, documents, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(Collection, "insert_many", outbox_fails)
        with pytest.raises(OperationFailure):
            run(domain.CastVote(REGION, a, voters[0], "against"))
    after = (db.agreements.find_one({"_id": a}), db.ballot_boxes.find_one({"_id": a}),
             sorted(e["_id"] for e in db.outbox.find()))
    assert after == before
    repo = AgreementRepository(db)
    assert repo.get(a, ballots=True).vote_of(voters[0]) is None
    run(domain.CastVote(REGION, a, voters[0], "against"))  # sent again: recorded once
    got = repo.get(a, ballots=True)
    assert got.vote_of(voters[0]) == "against" and got.mandate.against == 1
    assert [e["sequence"] for e in repo.history(a)] == [1, 2, 3]


def test_the_worker_runs_relay_consumer_and_scheduler(hecht_env):
    from hecht.config import settings
    names = [name for name, _ in components(settings("agreements"), agreements_db())]
    assert names == ["relay", "consumer", "scheduler"]
    stop = threading.Event()
    stop.set()
    scheduler_run = dict(components(settings("agreements"), agreements_db()))["scheduler"]
    scheduler_run(stop)  # returns at once when asked to stop
