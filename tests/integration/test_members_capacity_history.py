"""Capacity over time against the real stack (docs/PORTAL.md, part 2): a snapshot per region and
day, idempotent per day, on demand and by the members worker's daily job; the history's range
rules; the backfill the bench uses."""
from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

from services.members.repository import SNAPSHOTS, regions_without_snapshot, write_snapshot, write_snapshots
from services.members.worker import CapacitySnapshots, components
from tests.conftest import bearer
from tests.integration.test_members_api import (  # noqa: F401 - fixtures
    ADMIN, active, app, client, db, problem, sign_up, url)

HISTORY = "/v1/regions/elz-gent/capacity/history"
SNAPSHOT = "/v1/regions/elz-gent/capacity/snapshots"


def today() -> date:
    return datetime.now(timezone.utc).date()


def row(municipality: str, open_=0, limited=0, closed=0, unknown=0) -> dict:
    return {"municipality": municipality, "open": open_, "limited": limited, "closed": closed, "unknown": unknown}


def set_capacity(client, member: str, status: str) -> None:
    assert client.put(url(member, "/capacity"), json={"status": status}, headers=ADMIN).status_code == 200


def test_a_snapshot_counts_active_members_and_replaces_the_days_counts(client):
    a, b = active(client, 1), active(client, 2, practice={"name": "P", "postcode": "9820", "municipality": "Merelbeke"})
    sign_up(client, 3)   # pending: not counted
    set_capacity(client, a, "closed")

    r = client.post(SNAPSHOT, headers=ADMIN)
    assert r.status_code == 201, r.json
    day = today().isoformat()
    assert r.json == {"region_id": "elz-gent", "day": day, "municipalities": [
        row("Gent", closed=1), row("Merelbeke", unknown=1), row("Melle")]}

    # The same day again: the counts are replaced, no day is added.
    set_capacity(client, b, "open")
    again = client.post(SNAPSHOT, headers=ADMIN)
    assert again.status_code == 200
    assert again.json["municipalities"][1] == row("Merelbeke", open_=1)
    assert db()[SNAPSHOTS].count_documents({"region_id": "elz-gent"}) == 1

    h = client.get(HISTORY, headers=ADMIN)
    assert h.status_code == 200, h.json
    assert h.json == {"region_id": "elz-gent", "from": (today() - timedelta(days=89)).isoformat(), "to": day,
                      "days": [again.json]}


def test_history_is_oldest_first_within_the_range_and_per_region(client):
    d0 = today() - timedelta(days=10)
    for i in (3, 1, 2, 0):   # written out of order
        write_snapshot(db(), "elz-gent", d0 + timedelta(days=i), [row("Gent", open_=i)])
    write_snapshot(db(), "zg-utrecht", d0 + timedelta(days=1), [row("Utrecht", closed=9)])
    write_snapshot(db(), "elz-gent", d0 - timedelta(days=1), [row("Gent", open_=99)])   # before the range

    r = client.get(f"{HISTORY}?from={d0.isoformat()}&to={(d0 + timedelta(days=2)).isoformat()}", headers=ADMIN)
    assert r.status_code == 200, r.json
    assert r.json["from"] == d0.isoformat() and r.json["to"] == (d0 + timedelta(days=2)).isoformat()
    assert [(d["day"], d["municipalities"][0]["open"]) for d in r.json["days"]] == [
        ((d0 + timedelta(days=i)).isoformat(), i) for i in range(3)]
    assert all(d["region_id"] == "elz-gent" for d in r.json["days"])
    # The default (last 90 days) leaves the day before d0 in, and Utrecht's day out.
    days = client.get(HISTORY, headers=ADMIN).json["days"]
    assert [d["day"] for d in days] == [(d0 + timedelta(days=i)).isoformat() for i in range(-1, 4)]


def test_history_range_rules_are_422_problems(client):
    t = today()
    ok = client.get(f"{HISTORY}?from={(t - timedelta(days=399)).isoformat()}&to={t.isoformat()}", headers=ADMIN)
    assert ok.status_code == 200
    p = problem(client.get(f"{HISTORY}?from={(t - timedelta(days=400)).isoformat()}&to={t.isoformat()}",
                           headers=ADMIN), 422)
    assert "to" in p["errors"]
    p = problem(client.get(f"{HISTORY}?from={t.isoformat()}&to={(t - timedelta(days=1)).isoformat()}",
                           headers=ADMIN), 422)
    assert "from" in p["errors"]
    for bad in ("from=yesterday", "to=2026-13-01", "from=2026-02-30"):
        problem(client.get(f"{HISTORY}?{bad}", headers=ADMIN), 422)
    problem(client.get("/v1/regions/elz-nowhere/capacity/history", headers=bearer("platform-admin")), 404)
    problem(client.post("/v1/regions/elz-nowhere/capacity/snapshots", headers=bearer("platform-admin")), 404)
    assert db()[SNAPSHOTS].count_documents({}) == 0


def test_a_region_admin_sees_only_their_regions_history(client):
    write_snapshot(db(), "zg-utrecht", today(), [row("Utrecht", closed=9)])
    problem(client.get("/v1/regions/zg-utrecht/capacity/history", headers=ADMIN), 404)
    problem(client.post("/v1/regions/zg-utrecht/capacity/snapshots", headers=ADMIN), 404)
    problem(client.get(HISTORY, headers=bearer("gp", "elz-gent", "m_x")), 403)
    problem(client.get(HISTORY, headers=bearer("portal")), 403)
    assert db()[SNAPSHOTS].count_documents({}) == 1


def test_the_daily_job_snapshots_every_region_once_a_day(client):
    active(client, 1)
    now = datetime.now(timezone.utc)
    job = CapacitySnapshots(db(), now=lambda: now)
    assert sorted(job.run_once()) == ["elz-gent", "zg-utrecht"]
    assert job.run_once() == []   # cheap when today's exist: nothing taken again
    assert regions_without_snapshot(db(), now.date()) == []
    tomorrow = CapacitySnapshots(db(), now=lambda: now + timedelta(days=1))
    assert sorted(tomorrow.run_once()) == ["elz-gent", "zg-utrecht"]
    assert db()[SNAPSHOTS].count_documents({"region_id": "elz-gent"}) == 2
    gent = db()[SNAPSHOTS].find_one({"_id": f"elz-gent:{now.date().isoformat()}"})
    assert gent["municipalities"][0] == row("Gent", unknown=1)
    # The members worker runs it.
    from hecht.config import settings
    assert "capacity-snapshots" in [name for name, _ in components(settings("members"), db())]


def test_a_backfilled_year_is_served_quickly(client):
    start = today() - timedelta(days=364)
    rows = [row(m, open_=3, limited=2, closed=1, unknown=1) for m in ("Gent", "Merelbeke", "Melle")]
    t0 = time.monotonic()
    assert write_snapshots(db(), "elz-gent", [(start + timedelta(days=i), rows) for i in range(365)]) == 365
    assert write_snapshots(db(), "elz-gent", [(start, [row("Gent", closed=5)])]) == 1   # replaces that day
    backfill_s = time.monotonic() - t0
    t0 = time.monotonic()
    r = client.get(f"{HISTORY}?from={start.isoformat()}", headers=ADMIN)
    read_s = time.monotonic() - t0
    assert r.status_code == 200 and len(r.json["days"]) == 365
    assert r.json["days"][0]["municipalities"] == [row("Gent", closed=5)]
    assert r.json["days"][-1]["day"] == today().isoformat()
    assert db()[SNAPSHOTS].count_documents({"region_id": "elz-gent"}) == 365
    assert read_s < 2.0 and backfill_s < 10.0, (read_s, backfill_s)


def test_the_job_runs_in_the_worker_loop_until_stopped(client):
    import threading
    from tests.conftest import wait_until
    stop = threading.Event()
    t = threading.Thread(target=CapacitySnapshots(db(), poll_s=0.05).run, args=(stop,), daemon=True)
    t.start()
    try:
        wait_until(lambda: db()[SNAPSHOTS].count_documents({}) == 2, timeout=10, message="both regions' snapshots")
        write_snapshot(db(), "elz-gent", today(), [row("Gent", open_=7)])   # a later pass leaves today's alone
        time.sleep(0.3)
        assert db()[SNAPSHOTS].find_one({"_id": f"elz-gent:{today().isoformat()}"})["municipalities"] == [
            row("Gent", open_=7)]
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive()


def test_todays_snapshot_follows_the_days_changes_and_agrees_with_the_overview(client):
    """Issue 28 item 9: the day's snapshot was taken before the day's approvals ("0 reported")
    while the dashboard said 3. Once taken, today's snapshot is counted again after every
    command that can change the counts, so today's point equals the live overview."""
    yesterday = today() - timedelta(days=1)
    write_snapshot(db(), "elz-gent", yesterday, [row("Gent", open_=9)])
    morning = client.post(SNAPSHOT, headers=ADMIN)
    assert morning.status_code == 201 and morning.json["municipalities"][0] == row("Gent")

    def todays() -> list[dict]:
        days = client.get(HISTORY, headers=ADMIN).json["days"]
        assert days[-1]["day"] == today().isoformat(), days
        return days[-1]["municipalities"]

    def overview() -> list[dict]:
        r = client.get("/v1/regions/elz-gent/capacity", headers=ADMIN)
        assert r.status_code == 200, r.json
        return [{k: m[k] for k in ("municipality", "open", "limited", "closed", "unknown")}
                for m in r.json["municipalities"]]

    a, b, c = active(client, 1), active(client, 2), active(client, 3)   # the day's approvals
    assert todays() == overview() and todays()[0] == row("Gent", unknown=3)
    set_capacity(client, a, "open")
    set_capacity(client, b, "closed")
    assert todays() == overview() and todays()[0] == row("Gent", open_=1, closed=1, unknown=1)
    assert client.post(url(c, "/suspend"), json={"reason": "x"}, headers=ADMIN).status_code == 200
    assert todays()[0] == row("Gent", open_=1, closed=1)
    r = client.patch(url(b), json={"practice": {"municipality": "Melle"}}, headers=ADMIN)
    assert r.status_code == 200, r.json
    assert todays() == overview() == [row("Gent", open_=1), row("Merelbeke"), row("Melle", closed=1)]
    assert client.post(url(a, "/leave"), json={"reason": "retired"}, headers=ADMIN).status_code == 200
    assert todays() == overview() and todays()[0] == row("Gent")
    # A past day is the record of that day: never counted again.
    assert db()[SNAPSHOTS].find_one({"_id": f"elz-gent:{yesterday.isoformat()}"})["municipalities"] == [
        row("Gent", open_=9)]
    assert db()[SNAPSHOTS].count_documents({"region_id": "elz-gent"}) == 2


def test_a_day_not_yet_snapshotted_is_left_to_the_daily_job(client):
    active(client, 1)   # a change before the day's snapshot: nothing is taken early
    assert db()[SNAPSHOTS].count_documents({}) == 0
    assert client.post(SNAPSHOT, headers=ADMIN).status_code == 201
