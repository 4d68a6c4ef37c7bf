"""Benchmark 5 — growth: list and filter endpoints as one region grows to 1k, 10k (, 100k) members.

The members service runs as a real process (gunicorn). One region is filled with member
documents written straight through the repository's own mapping
(``MemberRepository._fields`` + the ``AggregateStore`` fields), in bulk, for speed: 80 %
active, 10 % pending, 5 % suspended, 5 % left, three municipalities, capacities, a few board
members and a rare family name. At each size the load generator (its own process) calls
each query back to back (one at a time) and the p50/p99 are taken:

  list, status+municipality, capacity, role (rare), name search (rare), a deep page (cursor)

Target: p99 at the largest size ≤ 1.5 × p99 at 1k, for every query. The baseline of each
row is the same query's p99 at 1k. The MongoDB ``explain`` of each query at the largest
size is included as the server gives it (FerretDB reports its SQLite plan and whether the
filter, sort and limit were pushed down).
"""
from __future__ import annotations

import secrets
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fleet as fl, lib, loadgen  # noqa: E402

SIZES = {"quick": {"sizes": [1000, 10000], "count": 30, "max_s": 6.0},
         "full": {"sizes": [1000, 10000, 100000], "count": 120, "max_s": 20.0}}
REGION = {"id": "bench-growth", "name": "Benchmark growth", "country": "BE", "kind": "eerstelijnszone",
          "municipalities": ["Gent", "Merelbeke", "Melle"]}
TARGET = "ratio <= 1.5"
RARE_NAME = "Vandenbroucke"


def queries(mid_cursor: str | None) -> dict[str, dict]:
    """name → query-string arguments (and the repository filter the endpoint builds)."""
    q = {
        "list (first page)": {},
        "filter status=active, municipality=Melle": {"status": "active", "municipality": "Melle"},
        "filter capacity=closed": {"capacity": "closed"},
        "filter role=board (1 %)": {"role": "board"},
        f"name search q={RARE_NAME[:6]} (1 %)": {"q": RARE_NAME[:6]},
    }
    if mid_cursor:
        q["deep page (cursor at the middle)"] = {"after": mid_cursor}
    return q


def member_docs(start: int, n: int, t0: datetime) -> list[dict]:
    from services.members.domain import Capacity, Member, Registration
    from services.members.repository import MemberRepository
    docs = []
    munis = REGION["municipalities"]
    for i in range(start, start + n):
        r = i % 20
        status = "active" if r < 16 else "pending" if r < 18 else "suspended" if r < 19 else "left"
        capacity = None
        if status == "active":
            c = i % 10
            capacity = Capacity("open" if c < 5 else "limited" if c < 8 else "closed",
                                date(2026, 1, 1) + timedelta(days=i % 300))
        roles = (["member", "board"] if i % 100 == 7 else ["member"]) if status == "active" else []
        family = RARE_NAME if i % 100 == 42 else f"Peeters{i % 997}"
        when = t0 + timedelta(milliseconds=i)
        m = Member(id=f"m_{int(when.timestamp() * 1000):012x}{secrets.token_hex(6)}", region=REGION["id"],
                   status=status, category="practice-owner", given_name=f"An{i}", family_name=family,
                   email=f"gp{i}@bench.example", language="nl",
                   registration=Registration("RIZIV", f"{i:08d}003"),  # unique first 8 digits
                   practice={"name": f"Praktijk {i}", "postcode": "9000", "municipality": munis[i % 3]},
                   capacity=capacity, roles=roles, signed_up_at=when, updated_at=when)
        fields = MemberRepository._fields(m)
        docs.append({"_id": m.id, **{k: v for k, v in fields.items() if v is not None},
                     "version": 1, "_outbox": [], "_pending": False})
    return docs


def seed(db, have: int, want: int, t0: datetime) -> None:
    chunk = 1000
    for start in range(have, want, chunk):
        db.members.insert_many(member_docs(start, min(chunk, want - start), t0), ordered=False)


def explain(db, region_args: dict, mid_cursor: str | None) -> dict:
    from services.members.repository import INTERNAL_FIELDS, MemberRepository
    args = dict(region_args)
    after = args.pop("after", None)
    query = MemberRepository.list_query(REGION["id"], **args)
    if after:
        query = {"$and": [query, {"_id": {"$gt": after}}]}
    try:
        out = db.command("explain", {"find": "members", "filter": query, "sort": {"_id": 1}, "limit": 51,
                                     "projection": INTERNAL_FIELDS}, verbosity="queryPlanner")
    except Exception as e:  # noqa: BLE001 - print what the server says
        return {"error": f"{type(e).__name__}: {e}"}
    out = {k: v for k, v in out.items() if k not in ("serverInfo", "$clusterTime", "operationTime", "ok")}
    out["filter"] = query
    return out


def ferretdb_idle_cpu(seconds: float = 5.0) -> float | None:
    """Share of one core the stack's FerretDB uses over ``seconds`` (HECHT_STACK_DIR), or None."""
    import os
    import time
    try:
        pid = int(Path(os.environ["HECHT_STACK_DIR"], "ferretdb", "pid").read_text().strip())

        def cpu() -> float:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        before = cpu()
        time.sleep(seconds)
        return round((cpu() - before) / seconds, 3)
    except (KeyError, OSError, ValueError, IndexError):
        return None


def run(fleet: fl.Fleet, profile: str) -> tuple[list[dict], list[str], dict]:
    import pymongo
    import requests
    size = SIZES[profile]
    if "members" not in fleet.urls:
        return [], ["not available: the members service is missing"], {"unavailable": ["members"]}
    base = fleet.urls["members"]
    admin = {"Authorization": f"Bearer {fleet.token('platform-admin')}"}
    r = requests.post(f"{base}/v1/regions", json=REGION, headers=admin, timeout=30)
    if r.status_code not in (201, 409):
        raise RuntimeError(f"creating the region: {r.status_code} {r.text[:300]}")
    token = {"Authorization": f"Bearer {fleet.token('region-admin', REGION['id'])}"}
    # Our own client: long timeouts, as seeding 100k documents into a busy FerretDB takes a while.
    client = pymongo.MongoClient(fleet.mongo_uri("members"), socketTimeoutMS=600_000, tz_aware=True)
    db = client[fleet.dbs["members"]]
    # Indexes as the service makes them (on its first request; made sure of here).
    from services.members.repository import ensure_indexes
    ensure_indexes(db)
    t0 = datetime.now(timezone.utc) - timedelta(days=30)
    have = 0
    table: dict[str, dict[int, dict]] = {}
    for n in size["sizes"]:
        lib.log(f"growth: {n} members in one region (seeding {n - have})")
        t = lib.Timer()
        seed(db, have, n, t0)
        have = n
        seed_s = t.elapsed()
        mid = db.members.find({"region": REGION["id"]}, {"_id": 1}).sort("_id", 1).skip(n // 2).limit(1)
        mid_cursor = next(iter(mid))["_id"]  # the cursor is the last id seen
        for name, args in queries(mid_cursor).items():
            url = f"{base}/v1/regions/{REGION['id']}/members?{urlencode(dict(args, limit=50))}"
            loadgen.run({"mode": "closed", "url": url, "headers": token, "count": 1, "concurrency": 1})  # warm-up
            res = loadgen.run({"mode": "closed", "url": url, "headers": token, "count": size["count"],
                               "concurrency": 1, "max_s": size["max_s"], "timeout_s": 60}, timeout=900)
            s = loadgen.summarize(res)
            s["seed_s"] = round(seed_s, 1)
            table.setdefault(name, {})[n] = s
            if s["ok"] < s["requests"]:
                lib.log(f"  {name}: errors {s['statuses']}")
            lib.log(f"  {name}: p50 {lib._round(s['p50_ms'], 1)} ms, p99 {lib._round(s['p99_ms'], 1)} ms "
                    f"({s['requests']} requests)")
    largest, smallest = size["sizes"][-1], size["sizes"][0]
    results = []
    for name, by_size in table.items():
        lo, hi = by_size.get(smallest, {}), by_size.get(largest, {})
        if hi.get("p99_ms") is None or lo.get("p99_ms") is None:
            # Every request failed at a size (e.g. gunicorn's 30 s worker timeout): a miss, not a gap.
            results.append(lib.entry(f"growth: {name}", f"p99 ms @{largest // 1000}k vs @{smallest // 1000}k",
                                     hi.get("p99_ms"), lo.get("p99_ms"), TARGET,
                                     note=f"no successful request: @{smallest}: {lo.get('statuses')}, "
                                          f"@{largest}: {hi.get('statuses')}"))
            results[-1]["met"] = False
            continue
        results.append(lib.entry(f"growth: {name}", f"p99 ms @{largest // 1000}k vs @{smallest // 1000}k",
                                 hi["p99_ms"], lo["p99_ms"], TARGET,
                                 note=" · ".join(f"{k // 1000}k p50 {v['p50_ms']:.0f}/p99 {v['p99_ms']:.0f} ms"
                                                 for k, v in sorted(by_size.items()))))
    mid = db.members.find({"region": REGION["id"]}, {"_id": 1}).sort("_id", 1).skip(largest // 2).limit(1)
    mid_cursor = next(iter(mid))["_id"]  # the cursor is the last id seen
    plans = {name: explain(db, args, mid_cursor) for name, args in queries(mid_cursor).items()}
    extra = {"sizes": size["sizes"],
             "table": {name: {str(k): {kk: v[kk] for kk in ("p50_ms", "p99_ms", "requests", "ok")}
                              for k, v in by.items()} for name, by in table.items()},
             "explain": plans}
    notes = []
    idle = ferretdb_idle_cpu()
    if idle is not None:
        notes.append(f"with {largest} members stored and no requests, FerretDB used {idle * 100:.0f} % of a core "
                     "over 5 s (the workers' idle polling; it was 86 % on 2026-11-23, before relays polled "
                     "signals instead of scanning every aggregate)")
        extra["ferretdb_idle_cpu_with_largest"] = idle
    # Leave the members collection as we found it: the next benchmark must not pay our 10k scans.
    db.members.delete_many({"region": REGION["id"]})
    client.close()
    push = {name: {k: p.get(k) for k in ("filterPushdown", "sortPushdown", "limitPushdown") if k in p}
            for name, p in plans.items()}
    if any(push.values()):
        notes.append("explain pushdown at the largest size: " + "; ".join(
            f"{name}: {', '.join(f'{k}={v}' for k, v in d.items())}" for name, d in push.items()))
    return results, notes, extra


def main() -> None:
    profile = lib.profile_arg()
    lib.quiet_logs()
    with fl.own_fleet(("members",)) as fleet:
        results, notes, extra = run(fleet, profile)
    lib.emit(results, notes, extra)


if __name__ == "__main__":
    main()
